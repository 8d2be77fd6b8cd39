"""A study row trained over K processes (`study run --gpus-per-run K`): the worker is rank 0, K - 1 helpers the rest.

The worker holding a row keeps doing what it does for one process (run key lock, MLflow run, resume,
`execute`), as rank 0 of a torch.distributed group of K (`detector.distributed`: the environment torchrun
would set, a free loopback port, NCCL on GPUs, gloo on the CPU). The other ranks are spawned processes that
only train (`detector.engine.train.train`, which takes the checkpoint folder and resume decision from rank 0).
They are started before `execute` and stopped after it: when `execute` trains nothing (a reused run) they are
still waiting to join the group and are simply terminated. With GPUs the worker's CUDA_VISIBLE_DEVICES holds
its K GPUs and rank r uses the r-th.
"""
from __future__ import annotations

import contextlib
import multiprocessing
import os
import signal
import socket
from dataclasses import replace
from pathlib import Path

from detector import distributed
from detector.config import Config, config_to_dict

JOIN_S = 60.0  # after rank 0's run ended, how long the others may take to leave the group
ENV = ("RANK", "WORLD_SIZE", "LOCAL_RANK", "MASTER_ADDR", "MASTER_PORT")


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _env(rank: int, world: int, port: int) -> dict[str, str]:
    return {"RANK": str(rank), "WORLD_SIZE": str(world), "LOCAL_RANK": str(rank), "MASTER_ADDR": "127.0.0.1",
            "MASTER_PORT": str(port)}


def _other_rank(rank: int, world: int, port: int, config: dict, workspace: str, threads: int) -> None:
    """Entry point of rank `rank` >= 1: train beside rank 0; die with the worker."""
    os.environ.update(_env(rank, world, port))
    os.environ["OMP_NUM_THREADS"] = str(threads)
    try:
        import ctypes

        ctypes.CDLL("libc.so.6", use_errno=True).prctl(1, signal.SIGTERM)  # PR_SET_PDEATHSIG: go with the worker
    except (OSError, AttributeError):
        pass
    import torch

    from detector.config import build_config
    from detector.engine.train import train

    torch.set_num_threads(threads)
    train(build_config(config), Path(workspace))


@contextlib.contextmanager
def rank_group(config: Config, workspace: str, world: int, threads: int = 1):
    """Yield `config` with `train.nproc = world`, this process set up as rank 0 of a group whose other ranks
    run meanwhile; with `world` 1, `config` as it is and nothing else."""
    if world <= 1:
        yield config
        return
    config = replace(config, train=replace(config.train, nproc=world))
    port = _free_port()
    saved = {k: os.environ.get(k) for k in ENV}
    os.environ.update(_env(0, world, port))
    ctx = multiprocessing.get_context("spawn")
    procs = [ctx.Process(target=_other_rank, args=(r, world, port, config_to_dict(config), str(workspace), threads),
                         name=f"anchorlab-rank-{r}", daemon=True) for r in range(1, world)]
    for p in procs:
        p.start()
    joined = distributed.GROUPS_JOINED
    try:
        yield config
    finally:
        trained = distributed.GROUPS_JOINED > joined  # else they wait for a group that never formed: a reused run
        for p in procs:
            p.join(JOIN_S if trained else 0)
            if p.is_alive():
                p.terminate()
                p.join(JOIN_S)
        for k, v in saved.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v


__all__ = ["rank_group"]
