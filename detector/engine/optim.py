"""The optimizer (SGD, as the papers, or AdamW) with the linear learning-rate rule, linear warm-up and a
step or cosine decay."""
from __future__ import annotations

import bisect
import math

import torch
from torch import nn

from detector.config import TrainConfig


def base_lr(cfg: TrainConfig) -> float:
    """Linear scaling rule: `base_lr` is quoted per 16 images."""
    return cfg.base_lr * cfg.batch_size / 16


def build_optimizer(model: nn.Module, cfg: TrainConfig) -> torch.optim.Optimizer:
    params = [p for p in model.parameters() if p.requires_grad]
    if cfg.optimizer == "adamw":
        return torch.optim.AdamW(params, lr=base_lr(cfg), betas=(cfg.momentum, 0.999), weight_decay=cfg.weight_decay)
    return torch.optim.SGD(params, lr=base_lr(cfg), momentum=cfg.momentum, weight_decay=cfg.weight_decay)


def lr_at(iteration: int, cfg: TrainConfig) -> float:
    """Learning rate for 0-based `iteration`: linear warm-up from `warmup_factor`, then x`gamma` at each step
    (`schedule: step`) or a half cosine from the base rate to 0 over the iterations after warm-up."""
    if cfg.schedule == "cosine":
        span = max(cfg.iterations - cfg.warmup_iters, 1)
        progress = min(max(iteration - cfg.warmup_iters, 0) / span, 1.0)
        lr = base_lr(cfg) * 0.5 * (1 + math.cos(math.pi * progress))
    else:
        milestones = [int(round(f * cfg.iterations)) for f in cfg.steps]
        lr = base_lr(cfg) * cfg.gamma ** bisect.bisect_right(milestones, iteration)
    if iteration < cfg.warmup_iters:
        alpha = iteration / cfg.warmup_iters
        lr *= cfg.warmup_factor * (1 - alpha) + alpha
    return lr


def set_lr(optimizer: torch.optim.Optimizer, lr: float) -> None:
    for group in optimizer.param_groups:
        group["lr"] = lr
