"""The learning-rate schedule and optimizer choice, against torch's own schedulers and optimizers."""
from __future__ import annotations

import math

import pytest
import torch

from detector.config import ConfigError, TrainConfig, load_config
from detector.engine.optim import build_optimizer, lr_at


def test_step_schedule_warms_up_then_decays_at_the_milestones():
    cfg = TrainConfig(iterations=100, batch_size=16, base_lr=0.01, warmup_iters=10, warmup_factor=0.001,
                      steps=[0.5, 0.8], gamma=0.1)
    assert lr_at(0, cfg) == pytest.approx(0.01 * 0.001)
    assert lr_at(5, cfg) == pytest.approx(0.01 * (0.001 * 0.5 + 0.5))
    assert lr_at(49, cfg) == pytest.approx(0.01)
    assert lr_at(50, cfg) == pytest.approx(0.001)
    assert lr_at(80, cfg) == pytest.approx(0.0001)


def test_cosine_schedule_equals_torch_cosine_annealing_after_warmup():
    cfg = TrainConfig(iterations=60, batch_size=8, base_lr=0.02, warmup_iters=10, schedule="cosine")
    param = torch.nn.Parameter(torch.zeros(1))
    opt = torch.optim.SGD([param], lr=0.01)  # base_lr per 16 images at batch 8
    sched = torch.optim.lr_scheduler.CosineAnnealingLR(opt, T_max=50, eta_min=0.0)
    for it in range(10, 60):
        assert lr_at(it, cfg) == pytest.approx(sched.get_last_lr()[0], abs=1e-12)
        opt.step()
        sched.step()
    assert lr_at(0, cfg) == pytest.approx(0.01 * cfg.warmup_factor)
    assert lr_at(10_000, cfg) == 0.0


def test_optimizer_choice():
    model = torch.nn.Linear(2, 2)
    sgd = build_optimizer(model, TrainConfig())
    adamw = build_optimizer(model, TrainConfig(optimizer="adamw", momentum=0.8))
    assert isinstance(sgd, torch.optim.SGD) and isinstance(adamw, torch.optim.AdamW)
    assert adamw.param_groups[0]["betas"] == (0.8, 0.999)
    assert not math.isnan(adamw.param_groups[0]["lr"])


def test_unknown_optimizer_names_the_key():
    with pytest.raises(ConfigError, match="train.optimizer"):
        load_config(None, ["train.optimizer=adam"])
    with pytest.raises(ConfigError, match="train.schedule"):
        load_config(None, ["train.schedule=poly"])
