"""An exponential moving average (EMA) of a model's weights, BatchNorm running statistics included.

Built on torch's `AveragedModel` (the copy, the `n_averaged` count, buffers with `use_buffers=True`); only the
averaging rule is ours, because torch's `get_ema_multi_avg_fn` has a fixed decay. Ours warms up as
TensorFlow's `ExponentialMovingAverage(num_updates=...)`: update n (1-based) uses

    decay_n = min(ema_decay, (1 + n) / (10 + n)),    ema <- decay_n * ema + (1 - decay_n) * model

so the first updates are not pulled toward the random init. The EMA starts as a copy of the model (torch's
first `update_parameters`, `n_averaged` 0 -> 1), so at update n `n_averaged` is n. The decay is computed on
the device from `n_averaged`: no host sync per step. Integer buffers (BatchNorm's `num_batches_tracked`) are
copied, not averaged. The copy keeps the model's parameter strides, so a channels-last model stays so.
"""
from __future__ import annotations

import torch
from torch import Tensor, nn
from torch.optim.swa_utils import AveragedModel

MODULE_PREFIX = "module."  # AveragedModel keeps the averaged copy as `.module`


def warmup_decay(ema_decay: float, n: int) -> float:
    """The decay of update n (1-based), as a Python number (the device computes the same in float32)."""
    return min(ema_decay, (1 + n) / (10 + n))


def warmup_ema_multi_avg_fn(ema_decay: float):
    """A `multi_avg_fn` for `AveragedModel`: EMA with the warm-up decay of the module doc."""
    if not 0.0 <= ema_decay < 1.0:
        raise ValueError(f"ema_decay must be in [0, 1), got {ema_decay}")

    @torch.no_grad()
    def ema_update(ema_params: list[Tensor], model_params: list[Tensor], n_averaged: Tensor) -> None:
        if not (torch.is_floating_point(ema_params[0]) or torch.is_complex(ema_params[0])):
            for p_ema, p_model in zip(ema_params, model_params, strict=True):  # counters: take the model's
                p_ema.copy_(p_model)
            return
        n = n_averaged.to(torch.float32)
        weight = (1 - torch.clamp((1 + n) / (10 + n), max=ema_decay)).to(ema_params[0].dtype)
        torch._foreach_lerp_(ema_params, model_params, [weight] * len(ema_params))  # ema += w * (model - ema)

    return ema_update


class ModelEma:
    """The EMA of `model`'s weights. `module` is the averaged copy to evaluate; call `update(model)` after
    every optimizer step. `state_dict` / `load_state_dict` are `AveragedModel`'s (`n_averaged` included)."""

    def __init__(self, model: nn.Module, ema_decay: float):
        self.decay = ema_decay
        self.averaged = AveragedModel(model, multi_avg_fn=warmup_ema_multi_avg_fn(ema_decay), use_buffers=True)
        self.averaged.requires_grad_(False)
        self.averaged.eval()
        self.averaged.update_parameters(model)  # n_averaged 0 -> 1: the EMA starts at the model's weights

    @property
    def module(self) -> nn.Module:
        return self.averaged.module

    @property
    def updates(self) -> int:
        """Optimizer steps averaged in since the EMA started (`n_averaged` counts the first copy)."""
        return int(self.averaged.n_averaged) - 1

    def update(self, model: nn.Module) -> None:
        self.averaged.update_parameters(model)

    def state_dict(self) -> dict[str, Tensor]:
        return self.averaged.state_dict()

    def load_state_dict(self, state: dict[str, Tensor]) -> None:
        self.averaged.load_state_dict(state)


def ema_model_state(ema_state: dict[str, Tensor]) -> dict[str, Tensor]:
    """The averaged model's own state dict out of a saved `ModelEma.state_dict()` (for a plain model)."""
    return {k[len(MODULE_PREFIX):]: v for k, v in ema_state.items() if k.startswith(MODULE_PREFIX)}
