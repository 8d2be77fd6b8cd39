"""One training step's forward pass: the model, then the run's method for (losses, assignment result)."""
from __future__ import annotations

import torch

from detector.assigners.base import AssignResult
from detector.config import Config
from detector.data.batch import Batch
from detector.methods import METHODS, LossInputs, build_box_coder
from detector.model.detector import DenseDetector


class TrainStep:
    """Forward, then the method's loss function (by default: assignment, then the dense losses) for one batch;
    shared by training, benchmarks and tests."""

    def __init__(self, model: DenseDetector, cfg: Config):
        self.model, self.cfg = model, cfg
        self.method = METHODS[cfg.assign.name]
        self.coder = build_box_coder(cfg)
        self.assign_seconds = 0.0  # wall time of the last assignment (CPU-accurate; async on CUDA)

    def __call__(self, batch: Batch) -> tuple[dict[str, torch.Tensor], AssignResult, list[int]]:
        """Returns the scalar losses ("loss" is their sum), the assignment result and the anchors per level."""
        out, anchors, counts = self.model(batch.images)
        output = self.method.loss(self.method, LossInputs(out, anchors, counts, batch, self.coder, self.cfg))
        self.assign_seconds = output.assign_seconds
        return output.losses, output.result, counts
