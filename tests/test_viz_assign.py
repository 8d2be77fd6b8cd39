"""`anchorlab viz assign -c CONFIG --image ID [--checkpoint PATH]` and the image figures of `dashboards`: the
assignment drawn is the training step's own (a geometric rule with no model; PAA and FreeAnchor with a real tiny
checkpoint), each positive is one marker, the PNGs are valid, and bad input is one error line with exit code 2."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
import yaml
from PIL import Image
from typer.testing import CliRunner

from cli import app
from dashboards.assign_image import assignment_figure, draw_assignment
from dashboards.checkpoint_image import build_trained, image_index, one_image_batch, read_checkpoint, split_dataset
from dashboards.detections_figure import draw_detections
from dashboards.image_assignment import image_assignment
from detector.assigners.base import IGNORE
from detector.config import deep_merge
from detector.engine.step import TrainStep
from detector.model.detector import DenseDetector
from tests.conftest import TINY, data_workspace, tiny_config

runner = CliRunner()
DELTAS = {  # method -> the config delta over TINY
    "atss": {"assign": {"name": "atss"}},
    "pseudo_iou": {"assign": {"name": "pseudo_iou"}},
    "max_iou": {"assign": {"name": "max_iou"}},
    "paa": {"assign": {"name": "paa"}, "model": {"head": {"aux": "iou"}}},
    "free_anchor": {"assign": {"name": "free_anchor"}},
}
# a checkpoint is trained for each: the methods that read predictions, and a geometric rule (the model-forward path)
TRAINED = ("paa", "free_anchor", "atss")


def _cfg(method: str):
    return tiny_config(train={"eval_at_end": False}, **DELTAS[method])


@pytest.fixture(scope="module")
def ws(tmp_path_factory, synth_data) -> Path:
    """A workspace on the session's tiny data, with a 3-iteration checkpoint of each method in TRAINED."""
    from detector.engine.train import train

    ws = data_workspace(tmp_path_factory.mktemp("viz_ws"), synth_data)
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    for method in TRAINED:
        train(_cfg(method), ws, workdir=ws / method)
    torch.set_num_threads(before)
    return ws


def _training_step_assignment(cfg, ws: Path, image_id: int, checkpoint: Path | None) -> np.ndarray:
    """(A,) matched GT of the image through `TrainStep`, the training path: with the checkpoint's raw weights, or
    a randomly initialised model (a geometric rule reads no prediction)."""
    val = split_dataset(cfg, ws, "val")
    batch = one_image_batch(val, image_index(val, image_id), cfg)
    if checkpoint is None:
        torch.manual_seed(0)
        model = DenseDetector(cfg.model, val.num_classes).eval()
    else:
        model = build_trained(cfg, read_checkpoint(cfg, checkpoint), checkpoint, val.num_classes, ema=False).model
    with torch.no_grad():
        _, result, _ = TrainStep(model, cfg)(batch)
    return result.matched_gt[0].numpy()


def _drawn(fig, gid: str) -> int:
    return sum(len(c.get_offsets()) for c in fig.axes[0].collections if c.get_gid() == gid)


def _valid_png(path: Path, min_width: int) -> np.ndarray:
    with Image.open(path) as im:
        im.verify()
    with Image.open(path) as im:
        assert im.format == "PNG" and im.width >= min_width, (im.format, im.size)
        pixels = np.asarray(im.convert("RGB"), dtype=float) / 255
    assert pixels.std() > 0.05, "not a blank canvas"
    return pixels


@pytest.mark.parametrize("method, trained", [("atss", False), ("pseudo_iou", False), ("max_iou", False),
                                             ("paa", True), ("free_anchor", True), ("atss", True)])
def test_drawn_positives_are_the_training_steps(ws, tmp_path, method, trained, one_thread):
    """Counts, per-anchor labels and markers equal the method's own assignment in the training step."""
    cfg = _cfg(method)
    ckpt = ws / method / "last.pt" if trained else None
    drawn = image_assignment(cfg, ws, None, ckpt)
    expected = _training_step_assignment(cfg, ws, drawn.image_id, ckpt)
    np.testing.assert_array_equal(drawn.matched_gt, expected)
    c = drawn.counts
    assert c["positives"] == int((expected >= 0).sum()) > 0
    assert c["ignored"] == int((expected == IGNORE).sum())
    assert c["positives"] + c["ignored"] + c["negatives"] == len(expected) == len(drawn.anchors)
    assert drawn.iteration == (None if ckpt is None else 3) and len(drawn.gt_names) == len(drawn.gt_boxes) >= 3
    assert drawn.positives_per_gt.sum() == c["positives"]
    fig = assignment_figure(drawn, "predicted" if ckpt else "anchors")
    assert _drawn(fig, "positive") == c["positives"] and _drawn(fig, "ignored") == c["ignored"]
    title = fig._suptitle.get_text()
    assert f"{c['positives']} positive, {c['ignored']} ignored" in title and f"image {drawn.image_id}" in title
    assert ("no checkpoint" in title) if ckpt is None else ("checkpoint at iteration 3" in title)
    path = draw_assignment(cfg, drawn.image_id, ckpt, tmp_path / "sub" / "assign.png", workspace=ws)
    _valid_png(path, min_width=1000)  # 150 dpi


def test_train_split_and_a_named_image(ws):
    cfg = _cfg("atss")
    train = split_dataset(cfg, ws, "train")
    image_id = train.image_ids[-1]
    drawn = image_assignment(cfg, ws, image_id, split="train")
    assert drawn.image_id == image_id and drawn.split == "train"
    np.testing.assert_allclose(drawn.gt_boxes, train.boxes[train.image_ids.index(image_id)], atol=1e-4)
    assert drawn.gt_names == [train.categories[k]["name"] for k in train.labels[train.image_ids.index(image_id)]]


def test_detections_figure_is_a_valid_png(ws, tmp_path):
    cfg = _cfg("paa")
    path = draw_detections(cfg, ws / "paa" / "last.pt", [1, 2], tmp_path / "dets.png", score_thresh=0.0, workspace=ws)
    pixels = _valid_png(path, min_width=1000)
    assert pixels.shape[1] > pixels.shape[0], "two panels side by side"
    default = draw_detections(cfg, ws / "paa" / "last.pt", None, tmp_path / "dets_default.png", workspace=ws)
    _valid_png(default, min_width=1000)


def _config_file(tmp_path: Path, method: str) -> Path:
    path = tmp_path / f"{method}.yaml"
    path.write_text(yaml.safe_dump(deep_merge(deep_merge(TINY, {"train": {"eval_at_end": False}}), DELTAS[method])))
    return path


def test_cli_draws_and_prints_the_counts(ws, tmp_path):
    out = tmp_path / "figs" / "paa.png"
    r = runner.invoke(app, ["viz", "assign", "-c", str(_config_file(tmp_path, "paa")), "--workspace", str(ws),
                            "--image", "2", "--checkpoint", str(ws / "paa" / "last.pt"), "--boxes", "predicted",
                            "--out", str(out)])
    assert r.exit_code == 0, r.output
    drawn = image_assignment(_cfg("paa"), ws, 2, ws / "paa" / "last.pt")
    c = drawn.counts
    lines = r.output.strip().splitlines()
    assert lines[0].startswith(f"paa on val image 2 (checkpoint at iteration 3): {c['positives']} positive, "
                               f"{c['ignored']} ignored"), r.output
    assert lines[-1] == f"wrote {out}"
    _valid_png(out, min_width=1000)


@pytest.mark.parametrize("args, message", [
    (["-c", "{atss}", "--image", "987654"], "error: image id 987654 is not among the 4 val images"),
    (["-c", "{paa}", "--checkpoint", "{ws}/missing.pt"], "error: checkpoint not found: "),
    (["-c", "{paa}"], "error: method 'paa' needs --checkpoint: PAA scores candidates"),
    (["-c", "{free_anchor}"], "error: method 'free_anchor' needs --checkpoint"),
    (["-c", "{atss}", "--checkpoint", "{ws}/paa/last.pt"], "error: checkpoint {ws}/paa/last.pt was trained with "
                                                           "method paa"),
    (["-c", "{atss}", "--boxes", "predicted"], "error: --boxes predicted needs --checkpoint"),
    (["-c", "{atss}", "--split", "test"], "error: --split 'test' is not one of val, train"),
    (["-c", "{atss}", "--set", "assign.atss.tpok=3"], "error: unknown key 'assign.atss.tpok'"),
    (["-c", "{atss}", "--out", "a.jpg"], "error: --out a.jpg: expected a .png file"),
    (["run123", "-c", "{atss}"], "error: give either RUN_ID (run123) or -c CONFIG, not both"),
    ([], "error: give RUN_ID (a run's records) or -c CONFIG --image ID"),
])
def test_cli_bad_input_is_one_line_and_exit_2(ws, tmp_path, args, message):
    files = {m: str(_config_file(tmp_path, m)) for m in DELTAS}
    fill = {**files, "ws": str(ws)}
    r = runner.invoke(app, ["viz", "assign", *[a.format(**fill) for a in args], "--workspace", str(ws)])
    assert r.exit_code == 2, r.output
    lines = [line for line in r.output.splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].startswith(message.format(**fill)), r.output


def test_cli_run_id_still_draws_a_runs_records(tmp_path):
    """Without -c, `viz assign RUN_ID` is the records figure as before: an unknown run is the reader's error line
    (after MLflow's own lines when it creates the store, which are not this command's)."""
    r = runner.invoke(app, ["viz", "assign", "0123456789abcdef", "--workspace", str(tmp_path / "ws"),
                            "--out", str(tmp_path / "figs")])
    assert r.exit_code == 2, r.output
    errors = [line for line in r.output.splitlines() if line.startswith("error: ")]
    assert errors == [line for line in r.output.splitlines() if line.strip()][-1:], r.output
    assert errors[0].startswith("error: no run 0123456789abcdef in "), r.output
