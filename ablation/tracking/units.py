"""The unit of the metrics anchorlab keeps in MLflow: AP-type values in percent, as papers and tables print them.

`detector/` measures AP, AR, NMS recall and VOC mAP as fractions in [0, 1] and says "no data" with COCO's -1
(e.g. APl on a set without large objects). What MLflow holds is what a user reads in its UI and compares
with the papers, so the writer logs these in percent (val/AP 11.2) and never logs the -1. Runs logged
before that hold fractions and may hold -1: they carry no `metric_unit` tag, and every reader turns their
values into percent (and drops the -1) through `in_percent`, so old and new runs read alike.

Which names are AP-type: the val metric's name (after "val/") starts with AP, AR or NR, or is VOC mAP: the
12 COCO stats, the bucket APs (AP_slender...), NMS recall (NR, NR50...) and VOC07_mAP(_area). Not
iou_pred_error (an IoU difference) nor anything outside val/. No mlflow import here: the writer, the reader
and the code that hands metrics to a search use it alike.
"""
from __future__ import annotations

UNIT_TAG = "metric_unit"  # on every run anchorlab creates; absent on runs from before (fractions)
PERCENT = "percent"
NO_DATA = -1.0  # COCO's "no GT in this range": not a value
VAL_PREFIX = "val/"
PERCENT_PREFIXES = ("AP", "AR", "NR", "VOC07_mAP")


def is_percent_name(name: str) -> bool:
    """True for an AP-type evaluation metric name without its prefix ("AP50", "NR", "VOC07_mAP")."""
    return name.startswith(PERCENT_PREFIXES)


def is_percent_metric(key: str) -> bool:
    """True for an AP-type metric as MLflow names it ("val/AP"): the ones that are logged in percent."""
    return key.startswith(VAL_PREFIX) and is_percent_name(key[len(VAL_PREFIX):])


def eval_in_percent(metrics: dict[str, float]) -> tuple[dict[str, float], list[str]]:
    """An evaluation's metrics (names without prefix, as `detector` reports them) with the AP-type ones in
    percent; their "no data" values (-1) are left out and their names returned second, in order."""
    out, no_data = {}, []
    for name, value in metrics.items():
        if is_percent_name(name):
            if value == NO_DATA:
                no_data.append(name)
                continue
            value = 100.0 * value
        out[name] = value
    return out, no_data


def in_percent(metrics: dict[str, float], tags: dict[str, str]) -> dict[str, float]:
    """A stored run's metrics as readers use them: AP-type ones in percent, whenever the run was logged.

    A run tagged `metric_unit=percent` is returned as it is; one without the tag logged fractions: its AP-type
    values are scaled x100 and its "no data" values (-1) left out. Other metrics are never touched.
    """
    if tags.get(UNIT_TAG) == PERCENT:
        return dict(metrics)
    out = {}
    for key, value in metrics.items():
        if is_percent_metric(key):
            if value == NO_DATA:
                continue
            value = 100.0 * value
        out[key] = value
    return out


__all__ = ["UNIT_TAG", "PERCENT", "NO_DATA", "is_percent_name", "is_percent_metric", "eval_in_percent", "in_percent"]
