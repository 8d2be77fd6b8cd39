"""One trainer per run key in a workspace: an exclusive `flock` on `<workspace>/locks/<key>.lock`.

Two studies (or a study and `anchorlab train`) that need the same key would otherwise train it twice;
the second one waits here, then finds the first one's FINISHED run and reuses it. The kernel drops the
lock when its process dies, even by SIGKILL, so a crashed worker never leaves a stale lock. Machines
that share a workspace need a filesystem with working `flock` (local disks, NFSv4).
"""
from __future__ import annotations

import fcntl
import os
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

POLL_S = 1.0


@contextmanager
def key_lock(workspace: Path, key: str, on_wait: Callable[[], None] | None = None,
             poll_s: float = POLL_S) -> Iterator[None]:
    """Hold the lock of `key` for the body; while another process holds it, call `on_wait` once and poll."""
    path = Path(workspace) / "locks" / f"{key}.lock"
    path.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
    try:
        waited = False
        while True:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                break
            except BlockingIOError:
                if not waited and on_wait is not None:
                    on_wait()
                waited = True
                time.sleep(poll_s)
        os.ftruncate(fd, 0)
        os.write(fd, f"{os.getpid()}\n".encode())  # who holds it, for a curious reader
        yield
    finally:
        os.close(fd)  # closing releases the lock


__all__ = ["key_lock"]
