"""Samplers and loaders for iteration-based training and for evaluation.

The training stream is a sequence of passes over the dataset; pass p is the permutation drawn from
a `torch.Generator` seeded with `derive_seed(seed, PERM_STREAM, p)`. Position t of the stream is
element t % size of pass t // size, so a run resumed at iteration i with batch size b starts the
stream at t = i * b and sees exactly what the uninterrupted run saw.

Augmentation seeds travel with the indices: `AugSeedSampler` yields `(index, aug_seed)` with
`aug_seed = derive_seed(seed, AUG_STREAM, p, index)`, and the dataset seeds its transform's generator
from it. The seeds are computed in the main process, so the augmentation of a draw is the same for
any `num_workers` and on resume.
"""
from __future__ import annotations

from functools import partial
from typing import Iterator

import torch
from torch.utils.data import DataLoader, Dataset, Sampler, SequentialSampler

from detector.data.transforms import collate, derive_seed

PERM_STREAM = 0  # tags keep the permutation seeds and the augmentation seeds independent
AUG_STREAM = 1


class InfiniteSampler(Sampler[int]):
    """Dataset indices forever: a fresh permutation per pass (identity order when shuffle=False).

    Args:
        size: dataset length (> 0).
        seed: base seed of the permutations.
        shuffle: permute each pass, or go 0..size-1 every pass.
        start: number of stream positions to skip (resume at iteration i, batch b: start = i * b).
    """

    def __init__(self, size: int, seed: int, shuffle: bool = True, start: int = 0):
        if size <= 0:
            raise ValueError(f"InfiniteSampler: dataset is empty (size={size})")
        if start < 0:
            raise ValueError(f"InfiniteSampler: start must be >= 0, got {start}")
        self.size, self.seed, self.shuffle, self.start = size, seed, shuffle, start

    def order(self, pass_index: int) -> torch.Tensor:
        """(size,) long: the dataset indices of pass `pass_index`, in order."""
        if not self.shuffle:
            return torch.arange(self.size)
        g = torch.Generator().manual_seed(derive_seed(self.seed, PERM_STREAM, pass_index))
        return torch.randperm(self.size, generator=g)

    def stream(self) -> Iterator[tuple[int, int]]:
        """(pass, index) pairs from stream position `start` on."""
        p, offset = divmod(self.start, self.size)
        while True:
            for index in self.order(p)[offset:].tolist():
                yield p, index
            p, offset = p + 1, 0

    def __iter__(self) -> Iterator[int]:
        for _, index in self.stream():
            yield index


class AugSeedSampler(Sampler[tuple[int, int]]):
    """Wrap an `InfiniteSampler`: yield `(index, aug_seed)` keys for `CocoDetection.__getitem__`."""

    def __init__(self, base: InfiniteSampler):
        self.base = base

    def __iter__(self) -> Iterator[tuple[int, int]]:
        for p, index in self.base.stream():
            yield index, derive_seed(self.base.seed, AUG_STREAM, p, index)


class RankSlice(Sampler[tuple[int, int]]):
    """Rank `rank`'s part of every global batch of a data-parallel run: keys [rank * b, (rank + 1) * b) of each
    run of `batch_size` keys of the stream (b = batch_size / world). The ranks together see exactly the
    single-process stream, so a run's data do not depend on its number of processes (an iteration-based
    stand-in for `DistributedSampler`, which is epoch-based)."""

    def __init__(self, base: Sampler, batch_size: int, rank: int, world: int):
        if batch_size % world:
            raise ValueError(f"train.batch_size {batch_size} is not divisible by the {world} processes of the run")
        self.base, self.batch_size, self.rank = base, batch_size, rank
        self.per_rank = batch_size // world

    def __iter__(self):
        lo, hi = self.rank * self.per_rank, (self.rank + 1) * self.per_rank
        for i, key in enumerate(self.base):
            if lo <= i % self.batch_size < hi:
                yield key


def _loader_kwargs(dataset: Dataset, num_workers: int, size_divisibility: int | None) -> dict:
    if size_divisibility is None:
        size_divisibility = dataset.cfg.size_divisibility
    return {
        "collate_fn": partial(collate, size_divisibility=size_divisibility),
        "num_workers": num_workers,
        "persistent_workers": num_workers > 0,
    }


def build_train_loader(dataset: Dataset, batch_size: int, seed: int, start_iteration: int = 0,
                       num_workers: int = 0, size_divisibility: int | None = None, rank: int = 0,
                       world: int = 1, pin_memory: bool = False) -> DataLoader:
    """Infinite loader of `Batch`es; batch j holds stream positions (start_iteration + j) * batch_size onwards
    (in a run of `world` processes: rank `rank`'s slice of them, `RankSlice`).

    `dataset` must accept `(index, aug_seed)` keys (as `CocoDetection` does). `size_divisibility`
    defaults to `dataset.cfg.size_divisibility`. The loader gets its own generator, so creating an
    iterator never draws from the global torch RNG (which would shift model initialisation).
    """
    sampler = AugSeedSampler(InfiniteSampler(len(dataset), seed, shuffle=True, start=start_iteration * batch_size))
    if world > 1:
        sampler = RankSlice(sampler, batch_size, rank, world)
        batch_size //= world
    return DataLoader(dataset, batch_size=batch_size, sampler=sampler, drop_last=False, pin_memory=pin_memory,
                      generator=torch.Generator().manual_seed(derive_seed(seed)),
                      **_loader_kwargs(dataset, num_workers, size_divisibility))


def build_eval_loader(dataset: Dataset, batch_size: int, num_workers: int = 0,
                      size_divisibility: int | None = None) -> DataLoader:
    """Finite, sequential loader of `Batch`es over the whole dataset (the last batch may be short)."""
    return DataLoader(dataset, batch_size=batch_size, sampler=SequentialSampler(dataset), drop_last=False,
                      generator=torch.Generator().manual_seed(0),
                      **_loader_kwargs(dataset, num_workers, size_divisibility))


__all__ = ["InfiniteSampler", "AugSeedSampler", "RankSlice", "build_train_loader", "build_eval_loader"]
