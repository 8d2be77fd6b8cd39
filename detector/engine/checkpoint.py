"""Checkpoints: written atomically, read back with `torch.load(weights_only=True)`.

Keys: "model", "iteration", and when given "optimizer", "scaler" and "ema" (`ModelEma.state_dict()`: the
averaged weights under "module.*" and "n_averaged"; a run with `train.ema_decay` 0 has none)."""
from __future__ import annotations

import os
from pathlib import Path

import torch

LAST = "last.pt"


def save_checkpoint(path: Path, model, optimizer=None, scaler=None, iteration: int = 0, ema=None) -> Path:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    state = {"model": model.state_dict(), "iteration": iteration}
    if optimizer is not None:
        state["optimizer"] = optimizer.state_dict()
    if scaler is not None:
        state["scaler"] = scaler.state_dict()
    if ema is not None:
        state["ema"] = ema.state_dict()
    tmp = path.with_suffix(".tmp")
    torch.save(state, tmp)
    os.replace(tmp, path)  # a crash mid-write never leaves a truncated checkpoint behind
    return path


def load_checkpoint(path: Path, map_location="cpu") -> dict:
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"checkpoint not found: {path}")
    return torch.load(path, map_location=map_location, weights_only=True)
