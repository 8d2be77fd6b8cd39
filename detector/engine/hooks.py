"""Callbacks through which a training run reports what it measures, and through which it can be stopped.

`detector/` never talks to a tracking backend; `ablation/tracking/writer.py` subclasses `TrainHooks`
and sends these records to MLflow. Every method is a no-op here so a plain run needs no tracker.
"""
from __future__ import annotations

from pathlib import Path

# Two scalars a run reports once, at its end, through `on_iteration` (names here, in a module without torch,
# because the study tables read them):
# the mean over its logged iterations of "assign/gt_without_pos" (a share in [0, 1]);
GT_WITHOUT_POS_MEAN = "assign/gt_without_pos_mean"
# training + evaluation seconds of a finished run over all its processes, each counted up to its last checkpoint
# (work a kill threw away is not counted): what the run costs uninterrupted.
RUN_SECONDS = "time/run_s"


class TrainHooks:
    def on_start(self, config: dict, workdir: Path, start_iteration: int) -> None:
        """Called once, before the first iteration, with the resolved config as a dict."""

    def on_data(self, counts: dict[str, int]) -> None:
        """Called once, before the first iteration, with what the datasets hold and what was skipped
        ("data/train_images", "data/val_annotations_kept", ...): facts of the run, not curves."""

    def on_iteration(self, iteration: int, scalars: dict[str, float]) -> None:
        """Called every `train.log_every` iterations: losses, lr, assignment diagnostics, timing."""

    def before_checkpoint(self, iteration: int) -> None:
        """Called just before the checkpoint of `iteration` is written: make everything reported so far durable.

        A run resumed from that checkpoint never reports those iterations again, so what is only buffered
        when the checkpoint is published would be a gap in its curves after a kill.
        """

    def on_checkpoint(self, iteration: int, path: Path) -> None:
        """Called after a checkpoint is written."""

    def on_eval_progress(self, done: int, total: int) -> None:
        """Called as evaluation images are processed."""

    def on_eval(self, iteration: int, metrics: dict[str, float], files: dict[str, Path]) -> None:
        """Called after an evaluation (every `train.eval_every` iterations, and at the end): the COCO
        stats and the files written (none during training)."""

    def should_stop(self, iteration: int) -> bool:
        """Asked after each evaluation during training: True ends the run as PRUNED (e.g. a search pruner)."""
        return False

    def on_records(self, iteration: int, kind: str, records: list | dict) -> None:
        """Periodic structured records for figures (kind "positives_per_gt", "gmm_fits", ...)."""

    def on_end(self, status: str, reason: str = "") -> None:
        """Called once: status is 'FINISHED', 'FAILED' or 'PRUNED' (reason says why)."""


class HookList(TrainHooks):
    """Fan one stream of records out to several hooks; any of them may stop the run."""

    def __init__(self, *hooks: TrainHooks | None):
        self.hooks = [h for h in hooks if h is not None]

    def on_start(self, config, workdir, start_iteration):
        for h in self.hooks:
            h.on_start(config, workdir, start_iteration)

    def on_data(self, counts):
        for h in self.hooks:
            h.on_data(counts)

    def on_iteration(self, iteration, scalars):
        for h in self.hooks:
            h.on_iteration(iteration, scalars)

    def before_checkpoint(self, iteration):
        for h in self.hooks:
            h.before_checkpoint(iteration)

    def on_checkpoint(self, iteration, path):
        for h in self.hooks:
            h.on_checkpoint(iteration, path)

    def on_eval_progress(self, done, total):
        for h in self.hooks:
            h.on_eval_progress(done, total)

    def on_eval(self, iteration, metrics, files):
        for h in self.hooks:
            h.on_eval(iteration, metrics, files)

    def should_stop(self, iteration):
        return any([h.should_stop(iteration) for h in self.hooks])  # a list: every hook is asked

    def on_records(self, iteration, kind, records):
        for h in self.hooks:
            h.on_records(iteration, kind, records)

    def on_end(self, status, reason=""):
        for h in self.hooks:
            h.on_end(status, reason)
