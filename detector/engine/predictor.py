"""Load a trained detector from a checkpoint for evaluation or inference."""
from __future__ import annotations

from pathlib import Path

from detector.config import Config
from detector.data.build import build_datasets
from detector.engine.checkpoint import load_checkpoint
from detector.engine.ema import ema_model_state
from detector.engine.train import resolve_device
from detector.model.detector import DenseDetector


def load_detector(cfg: Config, checkpoint: Path, workspace: Path, ema: bool = True):
    """Returns (model in eval mode, val dataset, device).

    The model holds the checkpoint's EMA weights when it has them (a run with `train.ema_decay` > 0, whose
    evaluations are of those), so evaluating it reproduces the run's metrics; `ema=False` loads the raw
    training weights instead.
    """
    _, val_set = build_datasets(cfg, workspace)
    device = resolve_device(cfg.train.device)
    model = DenseDetector(cfg.model, cfg.model.num_classes or val_set.num_classes).to(device)
    state = load_checkpoint(checkpoint, map_location=device)
    model.load_state_dict(ema_model_state(state["ema"]) if ema and "ema" in state else state["model"])
    return model.eval(), val_set, device
