"""The one error type of unusable checkpoints, apart from `checkpoint.py` so that the CLI's error handling
(`cli_errors.user_errors`) catches it without importing torch."""
from __future__ import annotations


class CheckpointError(Exception):
    """A checkpoint that cannot be used (missing, empty, damaged, refused, of another config) or a checkpoint
    folder in use by another training; the message is one line naming the file or folder."""


__all__ = ["CheckpointError"]
