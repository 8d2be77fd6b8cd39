"""Data-parallel training on the CPU (gloo): two real processes train one run and match a single process.

`train.batch_size` is the global batch; each of the 2 ranks trains on its half (`data.sampler.RankSlice`),
DDP averages the gradients and the dense losses' normalisers are averaged over the ranks, so the ranks' mean
losses equal a single process's on the same global batch (up to float summation order). BatchNorm is frozen:
per-rank batch statistics would differ from the whole batch's (SyncBatchNorm needs CUDA).
"""
from __future__ import annotations

import multiprocessing
import os
import socket
import subprocess
import sys
from pathlib import Path

import pytest

from detector.config import build_config, config_to_dict, deep_merge
from detector.engine.hooks import TrainHooks
from tests.conftest import TINY
from tests.test_study import empty_store  # noqa: F401 (fixture)
from tests.test_study_reliability import setup  # noqa: F401 (fixture)

REPO = Path(__file__).resolve().parents[1]
DDP = {"model": {"backbone": {"frozen_bn": True}},
       "train": {"iterations": 4, "batch_size": 4, "warmup_iters": 1, "checkpoint_every": 2, "log_every": 1,
                 "record_every": 0, "num_threads": 1, "base_lr": 0.005}}
LOSSES = ("loss", "loss_cls", "loss_reg")


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class _Record(TrainHooks):
    def __init__(self):
        self.scalars, self.metrics = {}, {}

    def on_iteration(self, iteration, scalars):
        if "loss" in scalars:
            self.scalars[iteration] = {k: scalars[k] for k in (*LOSSES, "assign/pos_per_gt_mean") if k in scalars}

    def on_eval(self, iteration, metrics, files):
        self.metrics = dict(metrics)


def _train_rank(rank: int, world: int, port: int, cfg_dict: dict, ws: str, out) -> None:
    os.environ.update({"RANK": str(rank), "WORLD_SIZE": str(world), "LOCAL_RANK": str(rank),
                       "MASTER_ADDR": "127.0.0.1", "MASTER_PORT": str(port)})
    from detector.engine.train import train

    hooks = _Record()
    result = train(build_config(cfg_dict), Path(ws), hooks=hooks)
    out.put((rank, result.status, hooks.scalars, hooks.metrics, str(result.checkpoint)))


def _run(world: int, cfg_dict: dict, ws: Path) -> dict[int, tuple]:
    """Train `cfg_dict` in `world` fresh processes (a single process too, for a like-for-like comparison)."""
    ctx = multiprocessing.get_context("spawn")
    out, port = ctx.Queue(), _free_port()
    procs = [ctx.Process(target=_train_rank, args=(r, world, port, cfg_dict, str(ws), out)) for r in range(world)]
    for p in procs:
        p.start()
    try:
        results = {}
        for _ in procs:
            rank, *rest = out.get(timeout=300)
            results[rank] = tuple(rest)
    finally:
        for p in procs:
            p.join(60)
            if p.is_alive():
                p.kill()
    assert all(p.exitcode == 0 for p in procs), [p.exitcode for p in procs]
    return results


@pytest.mark.parametrize("method", ["atss", "paa"])
def test_two_gloo_processes_train_like_one_process_on_the_same_global_batch(workspace, method):
    base = deep_merge(TINY, DDP)
    base = deep_merge(base, {"assign": {"name": method}, "name": f"ddp-{method}"})
    one = _run(1, config_to_dict(build_config(base)), workspace)[0]
    two = _run(2, config_to_dict(build_config(deep_merge(base, {"train": {"nproc": 2}}))), workspace)
    assert one[0] == two[0][0] == two[1][0] == "FINISHED"
    single, ranked = one[1], two[0][1]
    assert sorted(single) == sorted(ranked) == [1, 2, 3, 4]
    for it in single:
        for name in LOSSES:
            assert ranked[it][name] == pytest.approx(single[it][name], rel=2e-3, abs=1e-5), (it, name)
    assert two[1][1] == {} or all(two[1][1][it]["loss"] == pytest.approx(ranked[it]["loss"]) for it in ranked)
    # evaluation gathers both ranks' detections: the main rank evaluates every val image once, like one process
    assert set(two[0][2]) == set(one[2]) and "AP" in one[2]
    assert two[0][2]["AP"] == pytest.approx(one[2]["AP"], abs=0.02)
    assert two[1][3] == two[0][3] and Path(two[0][3]).is_file()  # one checkpoint, written by rank 0


METHODS = ("retinanet_iou", "atss", "paa", "free_anchor", "fcos_inside", "pseudo_iou", "scaled_box",
           "centerness_threshold")


def _every_method_rank(rank: int, port: int, ws: str, out) -> None:
    """Rank `rank` of a 2-process group that trains each method's config (tiny model) for 2 iterations."""
    import torch.distributed as dist

    from detector.config import load_yaml
    from detector.engine.train import train

    os.environ.update({"RANK": str(rank), "WORLD_SIZE": "2", "LOCAL_RANK": str(rank),
                       "MASTER_ADDR": "127.0.0.1", "MASTER_PORT": str(port)})
    dist.init_process_group("gloo")
    done = {}
    for name in METHODS:
        cfg = deep_merge(deep_merge(load_yaml(REPO / f"studies/configs/{name}.yaml"), TINY), DDP)
        cfg = deep_merge(cfg, {"name": f"ddp-{name}", "train": {"iterations": 2, "nproc": 2, "grad_clip": 10.0}})
        result = train(build_config(cfg), Path(ws))
        done[name] = result.status
    dist.destroy_process_group()
    out.put((rank, done))


def test_every_method_trains_under_two_processes(workspace):
    ctx = multiprocessing.get_context("spawn")
    out, port = ctx.Queue(), _free_port()
    procs = [ctx.Process(target=_every_method_rank, args=(r, port, str(workspace), out)) for r in range(2)]
    for p in procs:
        p.start()
    try:
        results = dict(out.get(timeout=600) for _ in procs)
    finally:
        for p in procs:
            p.join(60)
            if p.is_alive():
                p.kill()
    assert results[0] == results[1] == {name: "FINISHED" for name in METHODS}


def test_a_run_of_two_processes_needs_torchrun_and_an_even_batch(workspace):
    from detector.distributed import DistributedError
    from detector.engine.train import train

    with pytest.raises(DistributedError, match="train.nproc is 2 but 1 process"):
        train(build_config(deep_merge(TINY, {"train": {"nproc": 2, "batch_size": 4}})), workspace)
    with pytest.raises(DistributedError, match="batch_size 3 must be divisible by train.nproc 2"):
        train(build_config(deep_merge(TINY, {"train": {"nproc": 2, "batch_size": 3}})), workspace)


def test_rank_slices_cover_the_single_process_stream():
    from detector.data.sampler import AugSeedSampler, InfiniteSampler, RankSlice

    def first(sampler, n):
        it = iter(sampler)
        return [next(it) for _ in range(n)]

    whole = first(AugSeedSampler(InfiniteSampler(10, 7, start=8)), 24)
    parts = [first(RankSlice(AugSeedSampler(InfiniteSampler(10, 7, start=8)), 4, r, 2), 12) for r in range(2)]
    merged = [key for b in range(6) for r in range(2) for key in parts[r][2 * b:2 * b + 2]]
    assert merged == whole


def test_anchorlab_train_nproc_2_is_one_tracked_run(tmp_path, workspace):
    """The real user path: `anchorlab train --nproc 2` becomes torchrun; rank 0 alone tracks the run."""
    from mlflow import MlflowClient

    cfg = tmp_path / "ddp.yaml"
    import yaml

    cfg.write_text(yaml.safe_dump(deep_merge(TINY, deep_merge(DDP, {"name": "ddp-cli"}))))
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    env.pop("MLFLOW_TRACKING_URI", None)
    proc = subprocess.run([sys.executable, "-m", "cli", "train", "-c", str(cfg), "--nproc", "2", "--workspace",
                           str(workspace), "--experiment", "ddp"], cwd=REPO, env=env, capture_output=True,
                          text=True, timeout=600)
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-3000:]
    client = MlflowClient(f"sqlite:///{workspace / 'mlflow.db'}")
    runs = client.search_runs([client.get_experiment_by_name("ddp").experiment_id])
    assert len(runs) == 1 and runs[0].info.status == "FINISHED"
    assert runs[0].data.params["train.nproc"] == "2"
    assert [m.step for m in client.get_metric_history(runs[0].info.run_id, "loss")] == [1, 2, 3, 4]
    assert "val/AP" in runs[0].data.metrics


# ---------------------------------------------------------------- a study's rows over 2 processes each
def test_study_rows_train_over_two_processes_each_and_keep_their_keys(setup):
    from tests.test_study_reliability import _finish, _records, _start, count_runs

    rows = [{"label": "ATSS", "overrides": {"assign.name": "atss", "model.backbone.frozen_bn": True}},
            {"label": "PAA", "overrides": {"assign.name": "paa", "model.backbone.frozen_bn": True}}]
    ws, study = setup(rows)
    _finish(_start(ws, study.path, "--procs-per-run", "2"))
    uri = f"sqlite:///{ws / 'mlflow.db'}"
    from ablation.study.expand import expand

    specs = expand(study, "smoke")
    assert count_runs(uri, study.name) == {s.key: 1 for s in specs}
    from mlflow import MlflowClient

    client = MlflowClient(uri)
    for spec in specs:
        rec = _records(ws, study)[spec.key]
        run = client.get_run(rec.run_id)
        assert rec.status == "FINISHED" and run.data.params["train.nproc"] == "2"
        assert [m.step for m in client.get_metric_history(rec.run_id, "loss")] == list(range(1, 101))
    # train.nproc is not in the key: the same study on one process per row reuses every run
    out = _finish(_start(ws, study.path))
    assert count_runs(uri, study.name) == {s.key: 1 for s in specs}, out


def test_bfloat16_autocast_trains_on_the_cpu_in_two_processes(workspace):
    """`train.amp_dtype: bfloat16` turns CPU autocast on (as on Hopper GPUs: no scaler): the first loss moves off
    float32's by bfloat16's rounding only; the 2-process gloo run trains under it too."""
    from detector.engine.train import train

    runs = {}
    for dtype in ("float16", "bfloat16"):  # float16 on the CPU: autocast stays off, the float32 reference
        cfg = build_config(deep_merge(deep_merge(TINY, DDP), {"name": f"amp-{dtype}", "train": {"amp_dtype": dtype}}))
        hooks = _Record()
        assert train(cfg, workspace, hooks=hooks).status == "FINISHED"
        runs[dtype] = hooks.scalars[1]["loss"]
    assert runs["bfloat16"] != runs["float16"] and runs["bfloat16"] == pytest.approx(runs["float16"], rel=0.05)
    two = _run(2, config_to_dict(build_config(deep_merge(config_to_dict(cfg), {"train": {"nproc": 2}}))), workspace)
    assert two[0][0] == two[1][0] == "FINISHED"
