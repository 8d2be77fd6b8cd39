"""Load a trained detector from a checkpoint for evaluation or inference."""
from __future__ import annotations

from pathlib import Path

from detector.config import Config
from detector.data.build import build_datasets
from detector.engine.checkpoint import check_trained_with, load_checkpoint, load_weights
from detector.engine.ema import ema_model_state
from detector.engine.train import resolve_device
from detector.model.detector import DenseDetector


def load_detector(cfg: Config, checkpoint: Path, workspace: Path, ema: bool = True):
    """Returns (model in eval mode, val dataset, device).

    The checkpoint must have been trained with `cfg`'s model (`checkpoint.check_trained_with`: the same
    method and model fields; inference and evaluation settings may differ); an unreadable or foreign one
    raises `CheckpointError`, before the data is read. The model holds the checkpoint's EMA weights when it
    has them (a run with `train.ema_decay` > 0, whose evaluations are of those), so evaluating it
    reproduces the run's metrics; `ema=False` loads the raw training weights instead.
    """
    device = resolve_device(cfg.train.device)
    state = load_checkpoint(checkpoint, map_location=device)
    check_trained_with(state, cfg, checkpoint)
    _, val_set = build_datasets(cfg, workspace)
    model = DenseDetector(cfg.model, cfg.model.num_classes or val_set.num_classes).to(device)
    load_weights(model, ema_model_state(state["ema"]) if ema and "ema" in state else state["model"], checkpoint)
    return model.eval(), val_set, device
