"""Defaults a newcomer can live with: which profile runs when `--profile` is not given, and the one warning a
paper-sized run from a random backbone deserves.

A study or search file has profiles (`paper`, `quick`, `smoke`, ...). Without `--profile`:
  * on a machine with a CUDA GPU, `paper` (the papers' setting) when the file has it;
  * on a machine without one, `quick` (the CPU profile) when the file has it: `paper` there would train
    ResNet-50 at 800 px for 135k iterations on a CPU, weeks of work started by accident. A file with `paper`
    but no `quick` is refused with one line asking for `--profile`;
  * otherwise the file's only profile (a study) or its first (a search).
The CLI prints the choice and its reason in one line. `study run`, `study status`, `study table` and
`search run` all choose here, so they agree on the profile they show.

The GPU probe reads what the NVIDIA driver exposes instead of importing torch (1-2 s, more under load):
`study status` and `study table` must answer in about a second.
"""
from __future__ import annotations

import os
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

from ablation.study.source import StudyError
from detector.config import Config

PAPER, QUICK = "paper", "quick"
NVIDIA_GPUS = Path("/proc/driver/nvidia/gpus")  # one folder per GPU the loaded driver sees
DEV = Path("/dev")


def cuda_device_present(gpus: Path = NVIDIA_GPUS, dev: Path = DEV) -> bool:
    """True when an NVIDIA GPU is visible to this process: the driver lists one (or a /dev/nvidiaN node exists,
    as in containers without /proc/driver) and CUDA_VISIBLE_DEVICES does not hide them all ("" or "-1")."""
    visible = os.environ.get("CUDA_VISIBLE_DEVICES")
    if visible is not None and visible.strip() in ("", "-1"):
        return False
    try:
        if gpus.is_dir() and any(gpus.iterdir()):
            return True
        return any(p.name[len("nvidia"):].isdigit() for p in dev.glob("nvidia[0-9]*"))
    except OSError:
        return False


@dataclass(frozen=True)
class ProfileChoice:
    name: str
    note: str  # one line saying which profile runs and why; "" when the user named it


def choose_profile(profiles: Iterable[str], given: str | None, source: str | Path, single_only: bool = True,
                   gpu: bool | None = None) -> ProfileChoice:
    """The profile to use (module doc). `source` names the file in messages; `single_only`: without `paper`, a
    study takes its profile only when it has one (else an error), a search takes its first. `gpu`: the probe's
    answer (None: ask `cuda_device_present`). Raises `StudyError` (one line) when it cannot choose."""
    names = list(profiles)
    if given is not None:
        return ProfileChoice(given, "")
    if PAPER in names:
        has_gpu = cuda_device_present() if gpu is None else gpu
        if has_gpu:
            return ProfileChoice(PAPER, f"profile {PAPER} (the default with a CUDA GPU; --profile {QUICK} "
                                        "runs the CPU profile)")
        if QUICK in names:
            return ProfileChoice(QUICK, f"profile {QUICK}: no CUDA GPU here, and the default '{PAPER}' profile "
                                        f"trains the papers' setting (days on a CPU); --profile {PAPER} runs it anyway")
        raise StudyError(f"{source}: no CUDA GPU here and no '{QUICK}' profile; choose one with --profile "
                          f"({', '.join(names)})")
    if len(names) == 1 or (names and not single_only):
        return ProfileChoice(names[0], f"profile {names[0]} ({'the only one' if len(names) == 1 else 'the first'} "
                                       f"in {Path(source).name})")
    raise StudyError(f"{source}: choose a profile with --profile: {', '.join(names)}")


def random_backbone_warning(configs: Iterable[Config], profile: str | None = None) -> str | None:
    """One line when a run trains a ResNet backbone from random weights (`model.backbone.weights` empty: nothing
    is downloaded), None otherwise. The papers start from ImageNet weights; without them a paper-sized run
    costs as much and lands far below the papers' AP, which a table beside theirs would not say."""
    names = sorted({c.model.backbone.name for c in configs
                    if c.model.backbone.name != "tiny" and not c.model.backbone.weights})
    if not names:
        return None
    where = f"profile '{profile}' trains" if profile else "this run trains"
    return (f"{where} {', '.join(names)} from random weights (model.backbone.weights is empty; nothing is "
            "downloaded): the papers start from ImageNet weights, so expect AP far below theirs; set "
            "model.backbone.weights to a local state-dict file")


__all__ = ["ProfileChoice", "choose_profile", "cuda_device_present", "random_backbone_warning", "PAPER", "QUICK"]
