"""Data-parallel training over processes: torch.distributed, started by torchrun (`anchorlab train --nproc N`).

One run = `train.nproc` processes (ranks), one per GPU (or CPU processes with the gloo backend, as the tests do).
`train.batch_size` stays the global batch: rank r trains on its slice r of every global batch
(`data.sampler.build_train_loader`), DistributedDataParallel averages the gradients, and the dense losses'
normalisers (number of positives, PAA's IoU-target sum) are averaged over the ranks as the official codes do
(FCOS / ATSS / PAA: `reduce_sum(num_pos) / num_gpus`). With those, the ranks' mean loss and gradient equal a
single process's on the same global batch (given frozen or synchronised BatchNorm: `tests/test_distributed.py`).
FreeAnchor normalises per process, as its official code does.

Every helper here is the identity (and costs nothing) in a single process, so single-process runs are unchanged.
"""
from __future__ import annotations

import datetime
import os
from dataclasses import dataclass

import torch
import torch.distributed as dist

TIMEOUT = datetime.timedelta(minutes=30)  # a rank that waits longer for the others (a dead peer) gives up


GROUPS_JOINED = 0  # process groups this process has trained in (a caller can tell whether a run trained at all)


class DistributedError(RuntimeError):
    """A multi-process setting that cannot work (one line)."""


@dataclass(frozen=True)
class Group:
    rank: int = 0
    world: int = 1
    local_rank: int = 0

    @property
    def main(self) -> bool:
        return self.rank == 0


def launched_world() -> int:
    """Processes torchrun started for this run (its WORLD_SIZE), 1 outside torchrun."""
    return int(os.environ.get("WORLD_SIZE", "1"))


def setup(nproc: int, device_type: str, batch_size: int = 0) -> Group:
    """Join (or, in one process, skip) the process group of a run of `nproc` processes.

    The group is torchrun's (RANK, WORLD_SIZE, LOCAL_RANK, MASTER_ADDR/PORT in the environment); NCCL on GPUs,
    gloo on the CPU. A config asking for several processes outside torchrun, or a torchrun of another size,
    is one line.
    """
    world = launched_world()
    if nproc == 1 and world == 1:
        return Group()
    if batch_size % nproc:
        raise DistributedError(f"train.batch_size {batch_size} must be divisible by train.nproc {nproc}: "
                               "it is the global batch, split evenly over the processes")
    if world != nproc:
        raise DistributedError(
            f"train.nproc is {nproc} but {world} process(es) were started: use 'anchorlab train --nproc {nproc}' "
            f"(or torchrun with {nproc} processes in all)")
    if not dist.is_initialized():
        backend = "nccl" if device_type == "cuda" else "gloo"
        dist.init_process_group(backend, timeout=TIMEOUT)
    global GROUPS_JOINED
    GROUPS_JOINED += 1
    return group()


def group() -> Group:
    """This process's place in the current run (a single process outside torchrun)."""
    if not (dist.is_available() and dist.is_initialized()):
        return Group()
    return Group(dist.get_rank(), dist.get_world_size(), int(os.environ.get("LOCAL_RANK", "0")))


def active() -> bool:
    return dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1


def reduce_mean(t: torch.Tensor) -> torch.Tensor:
    """The mean of `t` over the ranks (differentiable callers pass detached normalisers)."""
    if not active():
        return t
    t = t.detach().clone()
    dist.all_reduce(t, op=dist.ReduceOp.SUM)
    return t / dist.get_world_size()


def any_rank(flags: torch.Tensor) -> list[bool]:
    """Per flag, whether it holds on any rank (so that every rank takes the same branch: stop, fail)."""
    if active():
        flags = flags.to(torch.int32)
        dist.all_reduce(flags, op=dist.ReduceOp.MAX)
    return [bool(v) for v in flags.tolist()]


def mean_scalars(scalars: dict[str, float]) -> dict[str, float]:
    """Each named scalar averaged over the ranks that have it (a rank without positives has no positive IoU)."""
    if not active():
        return scalars
    gathered: list[dict[str, float]] = [{} for _ in range(dist.get_world_size())]
    dist.all_gather_object(gathered, scalars)
    names = dict.fromkeys(k for part in gathered for k in part)
    return {k: sum(p[k] for p in gathered if k in p) / sum(k in p for p in gathered) for k in names}


def gather(obj) -> list:
    """Every rank's `obj`, in rank order (a list of one in a single process)."""
    if not active():
        return [obj]
    out: list = [None] * dist.get_world_size()
    dist.all_gather_object(out, obj)
    return out


def broadcast(obj, src: int = 0):
    """Rank `src`'s `obj` on every rank."""
    if not active():
        return obj
    box = [obj]
    dist.broadcast_object_list(box, src=src)
    return box[0]


def barrier() -> None:
    if active():
        dist.barrier()


def teardown() -> None:
    if dist.is_available() and dist.is_initialized():
        dist.destroy_process_group()
