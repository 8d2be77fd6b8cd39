"""Files written whole or not at all: a reader sees the previous file or the new one, even after a crash."""
from __future__ import annotations

import contextlib
import functools
import os
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import IO


@functools.cache
def _file_mode() -> int:
    umask = os.umask(0)
    os.umask(umask)
    return 0o666 & ~umask


@contextlib.contextmanager
def atomic_write(path: str | Path, binary: bool = False) -> Iterator[IO]:
    """Open a temporary file of a unique name beside `path` for writing; on a clean exit fsync it, rename it
    over `path` and fsync the folder. On any error (Ctrl-C included) the temporary is removed and `path` is
    left as it was. Unique names: two writers never share a temporary; same folder: the rename is atomic."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        os.fchmod(fd, _file_mode())  # mkstemp's 0600 would hide the file from a team sharing the workspace
        with os.fdopen(fd, "wb" if binary else "w") as fh:
            yield fh
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        raise
    with contextlib.suppress(OSError):  # makes the rename durable; some filesystems cannot fsync a folder
        dir_fd = os.open(path.parent, os.O_RDONLY)
        try:
            os.fsync(dir_fd)
        finally:
            os.close(dir_fd)


__all__ = ["atomic_write"]
