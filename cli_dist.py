"""`anchorlab train --nproc N`: one run over N processes (one per GPU), started by torchrun.

`anchorlab train --nproc N ...` outside torchrun replaces itself with `python -m torch.distributed.run
--standalone --nproc-per-node N -m cli train ...` (the same arguments): torchrun starts N copies of the command
with RANK / WORLD_SIZE / LOCAL_RANK set, restarts none (a failed rank stops the others) and forwards Ctrl-C.
Rank 0 is the tracked run (MLflow, checkpoints, progress, evaluation files); the other ranks train with it and
report nothing (`detector.distributed`). Across machines, start torchrun yourself on each, e.g.

    torchrun --nnodes 2 --node-rank R --nproc-per-node 8 --rdzv-backend c10d --rdzv-endpoint HOST:29500 \\
        -m cli train -c CONFIG --set train.nproc=16

(`train.nproc` is the processes of the whole run, torchrun's world size; `--set` rather than `--nproc`, which
torchrun's own parser would take for its `--nproc-per-node`).
"""
from __future__ import annotations

import os
import sys
from pathlib import Path

from cli_errors import fail


def world() -> int:
    return int(os.environ.get("WORLD_SIZE", "1"))


def relaunch_if_needed(nproc: int) -> None:
    """Outside torchrun with `nproc` > 1: become torchrun over this same command (never returns)."""
    if nproc <= 1 or "WORLD_SIZE" in os.environ:
        return
    args = [sys.executable, "-m", "torch.distributed.run", "--standalone", f"--nproc-per-node={nproc}",
            "-m", "cli", *torchrun_safe(sys.argv[1:], nproc)]
    sys.stdout.flush()
    os.execv(sys.executable, args)


def torchrun_safe(argv: list[str], nproc: int) -> list[str]:
    """`argv` with `--nproc N` written as `--set train.nproc=N`: torchrun's argument parser would take `--nproc`
    for an abbreviation of its own `--nproc-per-node` even after the script's name."""
    out, skip = [], False
    for i, arg in enumerate(argv):
        if skip:
            skip = False
        elif arg == "--nproc":
            skip = True
        elif not arg.startswith("--nproc="):
            out.append(arg)
    return [*out, "--set", f"train.nproc={nproc}"]


def check_world(nproc: int) -> None:
    """Under torchrun, the run's `train.nproc` must be torchrun's world size (one line otherwise)."""
    if world() != nproc:
        fail(f"train.nproc is {nproc} but torchrun started {world()} process(es): pass --nproc {world()}")


def secondary() -> bool:
    """A rank other than 0 of a torchrun-started run."""
    return int(os.environ.get("RANK", "0")) > 0


def train_secondary(cfg, workspace: Path | None) -> int:
    """A rank > 0: train beside rank 0 (which owns tracking and files); exit status 0 unless the run failed."""
    from ablation.tracking.store import workspace_dir
    from detector.engine.train import train

    result = train(cfg, workspace_dir(workspace))
    return 1 if result.status == "FAILED" else 0
