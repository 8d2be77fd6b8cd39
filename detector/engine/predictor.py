"""Load a trained detector from a checkpoint for evaluation or inference."""
from __future__ import annotations

from pathlib import Path

from detector.config import Config
from detector.data.build import build_datasets
from detector.engine.checkpoint import load_checkpoint
from detector.engine.train import resolve_device
from detector.model.detector import DenseDetector


def load_detector(cfg: Config, checkpoint: Path, workspace: Path):
    """Returns (model in eval mode, val dataset, device)."""
    _, val_set = build_datasets(cfg, workspace)
    device = resolve_device(cfg.train.device)
    model = DenseDetector(cfg.model, cfg.model.num_classes or val_set.num_classes).to(device)
    state = load_checkpoint(checkpoint, map_location=device)
    model.load_state_dict(state["model"])
    return model.eval(), val_set, device
