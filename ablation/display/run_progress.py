"""A rich progress bar fed by the training hooks: iteration, loss, it/s, ETA."""
from __future__ import annotations

from pathlib import Path

from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn, TimeRemainingColumn

from detector.engine.hooks import TrainHooks


def make_progress(transient: bool = False) -> Progress:
    return Progress(
        TextColumn("[bold]{task.description}"), BarColumn(), MofNCompleteColumn(),
        TextColumn("{task.fields[status]}"), TextColumn("{task.fields[rate]}"),
        TimeElapsedColumn(), TimeRemainingColumn(), transient=transient,
    )


class RichProgressHooks(TrainHooks):
    """Shows one task for training and one for the final evaluation."""

    def __init__(self, progress: Progress, total: int, label: str = "train"):
        self.progress, self.total, self.label = progress, total, label
        self.task = self.eval_task = None

    def on_start(self, config: dict, workdir: Path, start_iteration: int) -> None:
        self.task = self.progress.add_task(self.label, total=self.total, completed=start_iteration, status="", rate="")

    def on_iteration(self, iteration: int, scalars: dict[str, float]) -> None:
        if self.task is None or "loss" not in scalars:
            return
        speed = self.progress.tasks[self.task].speed
        self.progress.update(
            self.task, completed=iteration, status=f"loss {scalars['loss']:.3f}",
            rate=f"{speed:.2f} it/s" if speed else "",
        )

    def on_eval_progress(self, done: int, total: int) -> None:
        if self.eval_task is None:
            self.eval_task = self.progress.add_task("eval", total=total, status="", rate="")
        self.progress.update(self.eval_task, completed=done)

    def on_end(self, status: str, reason: str = "") -> None:
        if self.task is not None:
            self.progress.update(self.task, status=status if not reason else f"{status}: {reason}")
