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


def with_names(records, image_ids, class_names: list[str]):
    """Per-GT records (dicts with "image", a batch index, and "label") given "image_id" (the dataset's) and
    "class_name": a figure drawn after training cannot recover either from the batch index and label number.

    Args:
        records: a method's records of one batch (a list of dicts; anything else is returned as is).
        image_ids: (B,) long, the dataset image id of each batch image (`Batch.image_ids`).
        class_names: label -> category name (the training set's categories in label order).
    """
    if not isinstance(records, list):
        return records
    ids = image_ids.tolist()
    out = []
    for rec in records:
        if isinstance(rec, dict) and "image" in rec and "label" in rec:
            label = int(rec["label"])
            rec = {**rec, "image_id": int(ids[int(rec["image"])]),
                   "class_name": class_names[label] if 0 <= label < len(class_names) else str(label)}
        out.append(rec)
    return out
