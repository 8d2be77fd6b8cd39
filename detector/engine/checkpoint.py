"""Checkpoints: one training per folder, saves that are atomic and durable, loads that are safe and checked.

Keys: "model", "iteration", "config" (the resolved config as a dict) and "run_key" of the run that wrote it,
and when given "optimizer", "scaler" and "ema" (`ModelEma.state_dict()`: the averaged weights under
"module.*" and "n_averaged"; a run with `train.ema_decay` 0 has none). Checkpoints written before "config"
was stored load with a logged warning.

Every failure to use a checkpoint is a `CheckpointError` whose message is one line naming the file.
"""
from __future__ import annotations

import contextlib
import fcntl
import logging
import os
import pickle
import re
import warnings
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import torch

from detector.config import Config, config_to_dict, flatten
from detector.engine.checkpoint_errors import CheckpointError  # public here too
from detector.files import atomic_write
from detector.run_key import run_key

LAST = "last.pt"
log = logging.getLogger("anchorlab")


@contextlib.contextmanager
def claim_workdir(workdir: Path) -> Iterator[Path]:
    """Hold `workdir` for one training; while another process holds it, raise `CheckpointError` at once.

    An exclusive `flock` on the folder itself, so no lock file is left behind, and the kernel drops it when
    the process dies, even by SIGKILL. Once held, temporaries of a save that was killed are removed: no
    other writer can be using them.
    """
    workdir = Path(workdir)
    workdir.mkdir(parents=True, exist_ok=True)
    fd = os.open(workdir, os.O_RDONLY)
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            raise CheckpointError(f"{workdir} is in use by another training: give this one a workdir of its own, "
                                  "or wait for that one to end") from None
        for stale in workdir.glob(f".{LAST}.*.tmp"):
            stale.unlink(missing_ok=True)
        yield workdir
    finally:
        os.close(fd)  # closing releases the lock


def provenance(cfg: Config) -> dict[str, Any]:
    """What a checkpoint records about the run that wrote it: its resolved config and run key."""
    return {"config": config_to_dict(cfg), "run_key": run_key(cfg)}


def save_checkpoint(path: Path, model, optimizer=None, scaler=None, iteration: int = 0, ema=None,
                    meta: dict[str, Any] | None = None) -> Path:
    """Write the state (module doc; `meta`: `provenance(cfg)`) to `path` atomically and durably.

    Through `files.atomic_write`: a reader sees the previous file or the new one, whole, even after a crash
    or power cut; on any error `path` is left as it was.
    """
    path = Path(path)
    state = {"model": model.state_dict(), "iteration": iteration, **(meta or {})}
    if optimizer is not None:
        state["optimizer"] = optimizer.state_dict()
    if scaler is not None:
        state["scaler"] = scaler.state_dict()
    if ema is not None:
        state["ema"] = ema.state_dict()
    with atomic_write(path, binary=True) as fh:
        torch.save(state, fh)
    return path


def load_checkpoint(path: Path, map_location="cpu") -> dict:
    """The state saved at `path`, read with `torch.load(weights_only=True)`: tensors and plain data only, so
    a file holding other Python objects is refused before anything in it runs.

    Raises `CheckpointError` (one line naming the file) when the file is missing, empty, damaged, refused,
    or not an anchorlab checkpoint.
    """
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"checkpoint not found: {path}")
    if path.stat().st_size == 0:
        raise CheckpointError(f"checkpoint {path} is empty (0 bytes): its save never completed")
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # torch warns on stderr about the pickle protocol of foreign files
            state = torch.load(path, map_location=map_location, weights_only=True)
    except pickle.UnpicklingError as exc:
        found = re.search(r"GLOBAL (\S+)", str(exc))
        if found:
            raise CheckpointError(f"checkpoint {path} was refused and nothing in it was run: it holds a Python "
                                  f"object ({found.group(1)}), and only tensors and plain data are loaded") from None
        raise CheckpointError(f"checkpoint {path} is damaged or not a checkpoint: it is no torch file of tensors "
                              "and plain data") from None
    except Exception as exc:  # torch reports a damaged file with assorted types (RuntimeError, EOFError, ...)
        detail = str(exc).strip().splitlines()[0].split(". ")[0] if str(exc).strip() else type(exc).__name__
        raise CheckpointError(f"checkpoint {path} is damaged (truncated or not a torch file): {detail}") from None
    if not isinstance(state, dict) or "model" not in state or "iteration" not in state:
        raise CheckpointError(f"checkpoint {path} is not an anchorlab checkpoint: it has no model weights "
                              "and iteration")
    return state


# Fields that say what the weights mean, compared between a checkpoint and a config: the network with its
# anchors and box coding (`model`), the method that defined every output's target (`assign`: its name, its
# own section, the crowd rule), the losses (`loss`, e.g. PAA's IoU-weighted regression) and the input
# normalisation. How long or how fast it trained, and how it is evaluated (`inference`, test size, eval
# cadence), may differ: evaluating one model several ways is a use.
MODEL_PREFIXES = ("model.", "loss.")
MODEL_FIELDS = ("assign.name", "assign.ignore_iof", "data.mean", "data.std")
# model fields that do not change what the weights mean: memory layout, the initial weights' file (replaced
# by the checkpoint's), and the class count (the tensor shapes check it, and 0 means "from the dataset")
NOT_MODEL = frozenset({"model.channels_last", "model.backbone.weights", "model.num_classes"})
SHOWN_DIFFERENCES = 3


def model_fields(config: dict) -> dict[str, Any]:
    """{dotted.key: value} of a config dict's fields that define the model (see `MODEL_PREFIXES`)."""
    method_prefix = f"assign.{config.get('assign', {}).get('name')}."
    return {k: v for k, v in flatten(config).items()
            if k not in NOT_MODEL and (k.startswith((*MODEL_PREFIXES, method_prefix)) or k in MODEL_FIELDS)}


def check_trained_with(state: dict, cfg: Config, path: Path) -> None:
    """Raise `CheckpointError` unless the checkpoint `state` (read from `path`) was trained with `cfg`'s model
    (`model_fields`), even when its tensor shapes would fit. A checkpoint without a stored config passes
    with a logged warning. Fields present on one side only (added or removed since) are not compared."""
    stored = state.get("config")
    if not isinstance(stored, dict):
        log.warning("checkpoint %s has no config stored (written by an older anchorlab): it cannot be checked "
                    "against the config", path)
        return
    theirs, ours = model_fields(stored), model_fields(config_to_dict(cfg))
    differ = [k for k in theirs if k in ours and theirs[k] != ours[k]]
    if not differ:
        return
    their_key, our_key = state.get("run_key", "unknown"), run_key(cfg)
    if "assign.name" in differ:
        what = (f"was trained with method {theirs['assign.name']} (run key {their_key}), the config says "
                f"{ours['assign.name']} (run key {our_key})")
    else:
        shown = "; ".join(f"{k} {theirs[k]!r} there, {ours[k]!r} in the config" for k in differ[:SHOWN_DIFFERENCES])
        more = f" and {len(differ) - SHOWN_DIFFERENCES} more" if len(differ) > SHOWN_DIFFERENCES else ""
        what = (f"was trained with another {ours['assign.name']} model (run key {their_key}, the config's is "
                f"{our_key}): {shown}{more}")
    raise CheckpointError(f"checkpoint {path} {what}: pass the config it was trained with")


def load_weights(module: torch.nn.Module, weights: dict, path: Path) -> None:
    """`module.load_state_dict(weights)`, a mismatch raised as one line naming the checkpoint `path`."""
    try:
        module.load_state_dict(weights)
    except RuntimeError as exc:  # "Error(s) in loading state_dict ...:" then one indented line per problem
        lines = [line.strip() for line in str(exc).splitlines() if line.strip()]
        detail = (lines[1] if len(lines) > 1 else lines[0] if lines else "")[:200]
        raise CheckpointError(f"checkpoint {path} does not fit the config's model ({detail}): pass the config "
                              "it was trained with") from None


__all__ = ["LAST", "CheckpointError", "claim_workdir", "provenance", "save_checkpoint", "load_checkpoint",
           "model_fields", "check_trained_with", "load_weights"]
