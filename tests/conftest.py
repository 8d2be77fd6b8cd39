"""Shared fixtures: one tiny synthetic workspace per session and a tiny CPU config."""
from __future__ import annotations

from pathlib import Path

import pytest

from detector.config import build_config, deep_merge

TINY = {
    "name": "tiny",
    "data": {
        "dataset": "synth",
        "synth": {"train": 8, "val": 4, "size": 96, "seed": 3, "max_objects": 6},
        "min_size": [96], "max_size": 96, "test_min_size": 96,
    },
    "model": {
        "backbone": {"name": "tiny", "tiny_width": 8},
        "head": {"fpn_width": 16, "width": 16, "num_convs": 1, "gn_groups": 8},
    },
    "train": {"iterations": 3, "batch_size": 2, "warmup_iters": 1, "checkpoint_every": 2, "num_threads": 1},
}


def tiny_config(**delta):
    return build_config(deep_merge(TINY, delta))


@pytest.fixture
def one_thread():
    """One torch thread for the test: tiny tensors on a busy 2-core machine pay milliseconds per OpenMP hand-off."""
    import torch

    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@pytest.fixture(scope="session")
def synth_data(tmp_path_factory) -> Path:
    """The tiny synthetic benchmark, generated once per session (a workspace's data/ folder)."""
    from detector.config import SynthConfig
    from detector.data.synth import ensure_dataset

    data = tmp_path_factory.mktemp("data")
    ensure_dataset(data, SynthConfig(**TINY["data"]["synth"]), workers=1)
    return data


def data_workspace(ws: Path, synth_data: Path) -> Path:
    """Make the workspace folder `ws` (parents too) with the session's synthetic data as its data/ folder."""
    ws.mkdir(parents=True, exist_ok=True)
    (ws / "data").symlink_to(synth_data, target_is_directory=True)
    return ws


@pytest.fixture
def workspace(tmp_path, synth_data) -> Path:
    """A fresh workspace per test (own checkpoints and MLflow store) sharing the session's data."""
    return data_workspace(tmp_path / "ws", synth_data)
