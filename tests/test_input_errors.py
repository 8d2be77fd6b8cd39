"""Bad input the user can give, as the user meets it (issue 10, cases 5-7): one line, the key or file named.

Case 5: a workspace that cannot be written (a read-only mount, a file in the path), numbers outside their
range (`model.head.width=-16`, a learning rate <= 0, ...), a dataset without categories, `data stats` on a
broken file or an annotation without `bbox` (counted and skipped as training does), `data synth` nonsense.
Case 6: bad image files found before training (a corrupt val image must not fail a run at its end), and
temporaries of a killed `data synth` removed by the next one, never those of a live one.
Case 7: `data synth --out` never deletes a folder it did not write unless `--force`; `--out .` is refused.
"""
from __future__ import annotations

import fcntl
import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import yaml
from typer.testing import CliRunner

from cli import app
from detector.config import ConfigError, SynthConfig
from detector.data.coco import CocoDetection, DataError
from detector.data.staging import LOCK_NAME, STALE_UNLOCKED_S
from detector.data.stats import dataset_stats
from tests.conftest import TINY, tiny_config
from tests.test_data import ann, small_cfg, write_coco

REPO = Path(__file__).resolve().parents[1]
runner = CliRunner()
SYNTH_SMALL = ["--train", "2", "--val", "1", "--size", "64", "--workers", "1"]


def one_error_line(result) -> str:
    """The CLI's whole output, asserted to be one `error: ...` line with exit code 2 (MLflow's own INFO lines
    about creating a new store aside)."""
    lines = [line for line in result.output.splitlines() if line.strip() and " INFO mlflow." not in line]
    assert result.exit_code == 2 and len(lines) == 1 and lines[0].startswith("error: "), result.output
    return lines[0]


def _write_cfg(tmp_path: Path, data: dict = TINY) -> Path:
    path = tmp_path / "tiny.yaml"
    path.write_text(yaml.safe_dump(data))
    return path


def _coco_cfg(tmp_path: Path, root: Path, train_json: Path | None = None) -> Path:
    """A TINY config reading the dataset at `root` as a COCO-format set."""
    data = {**TINY["data"], "dataset": "coco", "train_images": str(root / "images/train"),
            "train_json": str(train_json or root / "instances_train.json"),
            "val_images": str(root / "images/val"), "val_json": str(root / "instances_val.json")}
    return _write_cfg(tmp_path, {**TINY, "data": data})


# ---------------------------------------------------------------- case 5: workspace that cannot be written


@pytest.fixture
def read_only_dir(tmp_path):
    """A folder on a read-only tmpfs (root cannot be kept out by permissions; a read-only mount stops root too)."""
    path = tmp_path / "ro"
    path.mkdir()
    if subprocess.run(["mount", "-t", "tmpfs", "-o", "ro", "tmpfs", str(path)], capture_output=True).returncode:
        pytest.skip("cannot mount a read-only tmpfs here")
    try:
        yield path
    finally:
        subprocess.run(["umount", str(path)], check=True)


@pytest.mark.parametrize("where", ["the folder itself", "a folder inside it"])
def test_read_only_workspace_is_one_line(tmp_path, read_only_dir, where):
    ws = read_only_dir if where == "the folder itself" else read_only_dir / "ws"
    cfg = _write_cfg(tmp_path)
    for args in (["train", "-c", str(cfg)], ["study", "status", str(REPO / "studies/paa_table2_methods.yaml")]):
        line = one_error_line(runner.invoke(app, [*args, "--workspace", str(ws)]))
        assert str(ws) in line and "choose a writable --workspace" in line


def test_workspace_under_a_file_is_one_line(tmp_path):
    cfg = _write_cfg(tmp_path)
    ws = cfg / "ws"  # its parent is a regular file: NotADirectoryError deep in the run before
    line = one_error_line(runner.invoke(app, ["train", "-c", str(cfg), "--workspace", str(ws)]))
    assert str(ws) in line and "choose a writable --workspace" in line


# ---------------------------------------------------------------- case 5: numbers outside their range


@pytest.mark.parametrize("override,message", [
    ("model.head.width=-16", "model.head.width: must be >= 1, got -16"),
    ("train.base_lr=-0.1", "train.base_lr: must be > 0, got -0.1"),
    ("train.base_lr=0", "train.base_lr: must be > 0, got 0.0"),
])
def test_out_of_range_override_is_one_line_naming_the_key(tmp_path, override, message):
    cfg = _write_cfg(tmp_path)
    line = one_error_line(runner.invoke(app, ["train", "-c", str(cfg), "--set", override,
                                              "--workspace", str(tmp_path / "ws")]))
    assert line == f"error: {message}"
    assert not (tmp_path / "ws" / "mlflow.db").exists()  # refused at the edge: no run was opened


@pytest.mark.parametrize("delta,key", [
    ({"train": {"iterations": 0}}, "train.iterations"),
    ({"train": {"batch_size": 0}}, "train.batch_size"),
    ({"train": {"base_lr": float("nan")}}, "train.base_lr"),
    ({"model": {"head": {"fpn_width": 0}}}, "model.head.fpn_width"),
    ({"model": {"backbone": {"tiny_width": -8}}}, "model.backbone.tiny_width"),
    ({"model": {"anchors": {"strides": [8, 0]}}}, r"model.anchors.strides\[1\]"),
    ({"data": {"min_size": [96, -1]}}, r"data.min_size\[1\]"),
    ({"data": {"synth": {"size": 0}}}, "data.synth.size"),
    ({"data": {"synth": {"crowding": 1.5}}}, "data.synth.crowding"),
    ({"inference": {"nms_thresh": 2.0}}, "inference.nms_thresh"),
])
def test_out_of_range_values_name_the_key(delta, key):
    with pytest.raises(ConfigError, match="^" + key.replace(".", r"\.") + ": must be") as info:
        tiny_config(**delta)
    assert "\n" not in str(info.value)


# ---------------------------------------------------------------- case 5: bad datasets


@pytest.fixture
def coco_copy(tmp_path, synth_data) -> Path:
    """A private copy of the session's tiny synthetic set, to damage."""
    root = tmp_path / "coco"
    shutil.copytree(next(synth_data.glob("shapes-*")), root)
    return root


def test_dataset_without_categories_is_one_line(tmp_path, coco_copy):
    data = json.loads((coco_copy / "instances_train.json").read_text())
    data["categories"] = []
    bad = tmp_path / "no_categories.json"
    bad.write_text(json.dumps(data))
    with pytest.raises(DataError, match="no categories in .*no_categories.json"):
        CocoDetection(str(coco_copy / "images/train"), str(bad), small_cfg(), train=True)
    cfg = _coco_cfg(tmp_path, coco_copy, train_json=bad)
    line = one_error_line(runner.invoke(app, ["train", "-c", str(cfg), "--workspace", str(tmp_path / "ws"),
                                              "--tracking-uri", f"sqlite:///{tmp_path / 'm.db'}"]))
    assert "no categories in" in line and str(bad) in line


def test_stats_of_invalid_json_is_one_line(tmp_path):
    bad = tmp_path / "instances_x.json"
    bad.write_text("{not json")
    line = one_error_line(runner.invoke(app, ["data", "stats", str(bad)]))
    assert "malformed annotation file" in line and str(bad) in line
    line = one_error_line(runner.invoke(app, ["data", "stats", str(tmp_path)]))  # the folder holding it
    assert str(bad) in line


def test_stats_counts_and_skips_what_training_skips(tmp_path):
    anns = [ann(1, [5, 5, 10, 10]), {"image_id": 1, "category_id": 3, "iscrowd": 0},  # no bbox
            ann(2, [1, 2, 3]), ann(2, [5, 5, 10, 10], cat=99), ann(9, [5, 5, 10, 10])]  # malformed, unknown cat/image
    img_dir, js = write_coco(tmp_path, anns, name="instances_x.json")
    report = CocoDetection(img_dir, js, small_cfg(), train=False).report
    r = runner.invoke(app, ["data", "stats", js])
    assert r.exit_code == 0, r.output
    assert "skipped as training does: 1 unknown image, 2 malformed, 1 unknown category" in r.output
    split = dataset_stats(js)["splits"]["x"]
    assert split["skipped"] == {"unknown_image": report.dropped_unknown_image, "malformed": report.dropped_malformed,
                                "unknown_category": report.dropped_unknown_category} == \
        {"unknown_image": 1, "malformed": 2, "unknown_category": 1}
    assert split["objects"] == report.annotations_kept == 1


@pytest.mark.parametrize("args,message", [
    (["--size", "0"], "--size: must be >= 32, got 0"),
    (["--train", "-3"], "--train: must be >= 0, got -3"),
    (["--val", "-1"], "--val: must be >= 0, got -1"),
    (["--crowding", "1.5"], "--crowding: must be in [0, 1], got 1.5"),
    (["--clutter", "-0.1"], "--clutter: must be in [0, 1], got -0.1"),
    (["--slender-share", "0.8", "--acentric-share", "0.5"], "--slender-share + --acentric-share: "),
    (["--min-object-size", "0"], "--min-object-size: must be > 0, got 0.0"),
])
def test_synth_nonsense_is_one_line_naming_the_option(tmp_path, args, message):
    out = tmp_path / "ds"
    line = one_error_line(runner.invoke(app, ["data", "synth", "--out", str(out), *args]))
    assert line.startswith(f"error: {message}")
    assert list(tmp_path.iterdir()) == []


# ---------------------------------------------------------------- case 6: bad image files, found first


def _damage(path: Path, kind: str) -> None:
    data = path.read_bytes()
    path.write_bytes({"truncated": data[: len(data) // 2], "empty": b"", "random": os.urandom(len(data))}[kind])


@pytest.mark.parametrize("kind", ["truncated", "empty", "random"])
def test_bad_images_are_skipped_and_counted_before_training(coco_copy, kind):
    victim = sorted((coco_copy / "images/val").iterdir())[1]
    _damage(victim, kind)
    val = CocoDetection(str(coco_copy / "images/val"), str(coco_copy / "instances_val.json"), small_cfg(), train=False)
    assert len(val) == 3 and val.report.images == 3 and val.report.images_unreadable == 1
    assert val.skipped == [(str(victim), "unreadable")]
    assert val.report.dropped_skipped_image == sum(
        a["image_id"] == 2 for a in json.loads((coco_copy / "instances_val.json").read_text())["annotations"])
    assert "skipped 1 unreadable" in val.report.summary()
    for i in range(len(val)):  # every image left decodes
        val.load(i)


def test_image_of_another_size_is_skipped(coco_copy):
    from PIL import Image

    victim = sorted((coco_copy / "images/train").iterdir())[0]
    Image.new("RGB", (50, 40)).save(victim)
    train = CocoDetection(str(coco_copy / "images/train"), str(coco_copy / "instances_train.json"), small_cfg(),
                          train=True)
    assert train.report.images_wrong_size == 1 and len(train) == 7 and train.image_ids[0] == 2


def test_a_corrupt_val_image_does_not_fail_the_run(tmp_path, coco_copy):
    from mlflow import MlflowClient

    _damage(sorted((coco_copy / "images/val").iterdir())[0], "truncated")
    _damage(sorted((coco_copy / "images/train").iterdir())[3], "random")
    cfg = _coco_cfg(tmp_path, coco_copy)
    uri = f"sqlite:///{tmp_path / 'm.db'}"
    r = runner.invoke(app, ["train", "-c", str(cfg), "--set", "train.iterations=2", "--workspace",
                            str(tmp_path / "ws"), "--tracking-uri", uri])
    assert r.exit_code == 0, r.output
    (run,) = MlflowClient(uri).search_runs([MlflowClient(uri).get_experiment_by_name("anchorlab").experiment_id])
    assert run.info.status == "FINISHED"
    assert run.data.params["data/val_images_unreadable"] == "1" and run.data.params["data/val_images"] == "3"
    assert run.data.params["data/train_images_unreadable"] == "1" and run.data.params["data/train_images"] == "7"


# ---------------------------------------------------------------- case 6: temporaries of killed generations


def _synth_cli(*args: str, cwd: Path) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, "-m", "cli", "data", "synth", *args], cwd=cwd,
                            env={**os.environ, "PYTHONPATH": str(REPO)}, stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT, text=True)


def _wait_for(predicate, timeout_s: float = 120.0) -> None:
    deadline = time.monotonic() + timeout_s
    while not predicate():
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.05)


_HOLD_LOCK = """
import fcntl, os, sys, time
fd = os.open(sys.argv[1], os.O_RDWR)
fcntl.flock(fd, fcntl.LOCK_EX)
print("held", flush=True)
time.sleep(600)
"""


def test_killed_generation_temporaries_are_removed_by_the_next(tmp_path):
    out = tmp_path / "ds"
    proc = _synth_cli("--out", str(out), "--train", "400", "--val", "0", "--size", "160", "--workers", "1",
                      cwd=REPO)
    try:
        _wait_for(lambda: any(tmp_path.glob(".ds.*.tmp/images/train/*.png")) or proc.poll() is not None)
    finally:
        proc.send_signal(signal.SIGKILL)
        proc.wait()
    (killed,) = tmp_path.glob(".ds.*.tmp")  # what the kill leaves behind
    assert not out.exists()

    live = tmp_path / ".other.abcd1234.tmp"  # a generation running in another process: kept
    live.mkdir()
    (live / LOCK_NAME).touch()
    holder = subprocess.Popen([sys.executable, "-c", _HOLD_LOCK, str(live / LOCK_NAME)], stdout=subprocess.PIPE,
                              text=True)
    old_unlocked = tmp_path / ".ds.old12345.tmp"  # from a writer without locks, untouched for long: removed
    young_unlocked = tmp_path / ".ds.new12345.tmp"  # just created, lock not taken yet: kept
    for folder in (old_unlocked, young_unlocked):
        (folder / "images").mkdir(parents=True)
    long_ago = time.time() - 2 * STALE_UNLOCKED_S
    for folder in (old_unlocked, old_unlocked / "images"):
        os.utime(folder, (long_ago, long_ago))
    try:
        assert holder.stdout.readline().strip() == "held"
        r = runner.invoke(app, ["data", "synth", "--out", str(out), *SYNTH_SMALL])
        assert r.exit_code == 0, r.output
        assert sorted(p.name for p in tmp_path.iterdir()) == sorted(["ds", live.name, young_unlocked.name])
        assert sorted(p.name for p in out.iterdir()) == ["images", "instances_train.json", "instances_val.json",
                                                         "meta.json"]
    finally:
        holder.kill()
        holder.wait()


def test_lock_of_a_running_generation_is_held(tmp_path):
    """While `generate` writes, its temporary folder's lock is taken (what the next run relies on)."""
    from detector.data.synth import generate

    seen = []

    def probe(done, total):
        if seen:
            return
        (tmp,) = tmp_path.glob(".ds.*.tmp")
        fd = os.open(tmp / LOCK_NAME, os.O_RDWR)
        try:
            with pytest.raises(BlockingIOError):
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        finally:
            os.close(fd)
        seen.append(tmp)

    generate(tmp_path / "ds", SynthConfig(train=2, val=1, size=64), workers=1, progress=probe)
    assert seen and not seen[0].exists() and [p.name for p in tmp_path.iterdir()] == ["ds"]


# ---------------------------------------------------------------- case 7: a typo in --out loses nothing


def test_synth_refuses_a_folder_it_did_not_write(tmp_path):
    out = tmp_path / "mine"
    out.mkdir()
    (out / "thesis.tex").write_text("years of work")
    line = one_error_line(runner.invoke(app, ["data", "synth", "--out", str(out), *SYNTH_SMALL]))
    assert str(out) in line and "--force" in line
    assert [p.name for p in out.iterdir()] == ["thesis.tex"] and [p.name for p in tmp_path.iterdir()] == ["mine"]
    r = runner.invoke(app, ["data", "synth", "--out", str(out), "--force", *SYNTH_SMALL])
    assert r.exit_code == 0, r.output
    assert (out / "meta.json").is_file() and not (out / "thesis.tex").exists()


def test_synth_replaces_its_own_dataset_and_fills_an_empty_folder(tmp_path):
    out = tmp_path / "ds"
    out.mkdir()
    for train in ("2", "3"):  # empty first, then a dataset written here before: no --force needed
        r = runner.invoke(app, ["data", "synth", "--out", str(out), *SYNTH_SMALL, "--train", train])
        assert r.exit_code == 0, r.output
    assert len(list((out / "images/train").iterdir())) == 3 and [p.name for p in tmp_path.iterdir()] == ["ds"]


@pytest.mark.parametrize("out", [".", "..", "../.."])
def test_synth_out_current_folder_is_one_line_and_leaves_nothing(tmp_path, monkeypatch, out):
    cwd = tmp_path / "a" / "b"
    cwd.mkdir(parents=True)
    (cwd / "notes.txt").write_text("keep")
    monkeypatch.chdir(cwd)
    for force in ([], ["--force"]):
        line = one_error_line(runner.invoke(app, ["data", "synth", "--out", out, *force, *SYNTH_SMALL]))
        assert "current folder" in line
    assert sorted(str(p.relative_to(tmp_path)) for p in tmp_path.rglob("*")) == ["a", "a/b", "a/b/notes.txt"]


def test_synth_out_read_only_is_one_line(read_only_dir):
    line = one_error_line(runner.invoke(app, ["data", "synth", "--out", str(read_only_dir / "ds"), *SYNTH_SMALL]))
    assert str(read_only_dir) in line and "writable" in line
