"""Periodic records of what an assignment did, for figures: positives-per-GT counts (every method) and,
through the method record, method-specific ones (`Method.records`: PAA's GMM fits).

Built from `AssignResult` (never by re-running the model) as plain lists/dicts, handed to
`TrainHooks.on_records`; the tracker decides how to store and draw them.
"""
from __future__ import annotations

from detector.assigners.base import AssignResult
from detector.engine.diagnostics import positives_per_gt


def positives_histogram(result: AssignResult, gt_valid) -> dict:
    """{"counts": positives of every valid GT of the batch} (a histogram's raw data)."""
    return {"counts": positives_per_gt(result, gt_valid)[gt_valid].tolist()}
