"""The one error type of bad data: what the user must fix, as one line naming the file."""
from __future__ import annotations


class DataError(ValueError):
    """A data problem the user must fix, as one line naming the file."""


__all__ = ["DataError"]
