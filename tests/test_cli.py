"""The CLI through typer's CliRunner: data, train, eval (parity with pycocotools), bad input."""
from __future__ import annotations

import json

import numpy as np
import yaml
from typer.testing import CliRunner

from cli import app
from tests.conftest import TINY

runner = CliRunner()


def _write_cfg(tmp_path, data=TINY):
    path = tmp_path / "tiny.yaml"
    path.write_text(yaml.safe_dump(data))
    return path


def test_data_synth_and_stats(tmp_path):
    out = tmp_path / "shapes"
    r = runner.invoke(app, ["data", "synth", "--out", str(out), "--train", "3", "--val", "2", "--size", "64",
                            "--seed", "1", "--workers", "1"])
    assert r.exit_code == 0, r.output
    assert (out / "instances_train.json").is_file() and (out / "instances_val.json").is_file()
    assert len(json.loads((out / "instances_val.json").read_text())["images"]) == 2
    r = runner.invoke(app, ["data", "stats", str(out)])
    assert r.exit_code == 0, r.output
    assert "train" in r.output and "val" in r.output


def test_train_then_eval_matches_pycocotools(tmp_path, workspace):
    from pycocotools.coco import COCO
    from pycocotools.cocoeval import COCOeval

    cfg = _write_cfg(tmp_path)
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    r = runner.invoke(app, ["train", "-c", str(cfg), "--set", "train.iterations=2", "--workspace", str(workspace),
                            "--tracking-uri", uri])
    assert r.exit_code == 0, r.output
    assert "finished" in r.output and "anchorlab ui" in r.output
    ckpt = next((workspace / "checkpoints").glob("*/*/last.pt"))  # checkpoints/<run key>/<run id>/

    out = tmp_path / "eval"
    r = runner.invoke(app, ["eval", "-c", str(cfg), "--set", "train.iterations=2", "--checkpoint", str(ckpt),
                            "--out", str(out), "--workspace", str(workspace),
                            "--set", "inference.score_thresh=0.0"])
    assert r.exit_code == 0, r.output
    metrics = json.loads((out / "metrics.json").read_text())
    dets = json.loads((out / "detections.json").read_text())
    assert len(metrics) == 12 and dets, "an untrained tiny model still emits low-score boxes at threshold 0"

    gt = COCO(str(next((workspace / "data").resolve().glob("shapes-*")) / "instances_val.json"))
    ev = COCOeval(gt, gt.loadRes(str(out / "detections.json")), "bbox")
    ev.evaluate(); ev.accumulate(); ev.summarize()
    np.testing.assert_allclose(list(metrics.values()), ev.stats, atol=1e-9)


def test_unknown_key_is_one_line_error(tmp_path):
    cfg = _write_cfg(tmp_path, {"train": {"iteratons": 3}})
    r = runner.invoke(app, ["train", "-c", str(cfg), "--workspace", str(tmp_path)])
    assert r.exit_code == 2
    assert "train.iteratons" in r.output and "Traceback" not in r.output


def test_bad_override_and_missing_config(tmp_path):
    r = runner.invoke(app, ["train", "-c", str(tmp_path / "nope.yaml"), "--workspace", str(tmp_path)])
    assert r.exit_code == 2 and "not found" in r.output
    cfg = _write_cfg(tmp_path)
    r = runner.invoke(app, ["train", "-c", str(cfg), "--set", "train.batch_size=two", "--workspace", str(tmp_path)])
    assert r.exit_code == 2 and "train.batch_size" in r.output


def test_missing_image_aborts_with_its_path(tmp_path, synth_data):
    import shutil

    src = next(synth_data.glob("shapes-*"))
    data = tmp_path / "coco"
    shutil.copytree(src, data)
    victim = sorted((data / "images" / "train").iterdir())[0]
    victim.unlink()
    cfg = _write_cfg(tmp_path, {**TINY, "data": {**TINY["data"], "dataset": "coco",
                                                "train_images": str(data / "images/train"),
                                                "train_json": str(data / "instances_train.json"),
                                                "val_images": str(data / "images/val"),
                                                "val_json": str(data / "instances_val.json")}})
    r = runner.invoke(app, ["train", "-c", str(cfg), "--workspace", str(tmp_path),
                            "--tracking-uri", f"sqlite:///{tmp_path / 'm.db'}"])
    assert r.exit_code == 2, r.output
    assert str(victim.name) in r.output and "Traceback" not in r.output
