"""Writing a dataset folder so that nothing is half-written, lost or left behind.

A dataset is built in a private temporary folder beside its destination (`.<name>.<random>.tmp`) and
published by renaming it into place, so a reader sees the whole dataset or none. Three rules around that:
  - a destination that is not empty and was not written by us (`is_ours`) is replaced only when forced,
    and the current folder, or one holding it, never: a typo in `--out` must not delete someone's files;
  - the writer holds an exclusive `flock` on a lock file inside its temporary folder while it writes. The
    kernel drops it when the writer dies, even by SIGKILL, so the next writer can tell a dead writer's
    temporary folder (lock free: removed) from a live one in another process (lock held: kept);
  - a temporary folder without a lock file (a writer killed before taking it, or from before this rule)
    and `.old` folders (a writer killed while publishing) of the same destination are removed once no
    folder inside them has changed for `STALE_UNLOCKED_S`.
Machines that share the folder need a filesystem with working `flock` (local disks, NFSv4).
"""
from __future__ import annotations

import fcntl
import logging
import os
import shutil
import tempfile
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

from detector.data.errors import DataError

log = logging.getLogger("anchorlab")
LOCK_NAME = ".writing.lock"
# A writer takes its lock right after creating its folder and adds files all the time; an unlocked
# temporary folder untouched this long belongs to nobody.
STALE_UNLOCKED_S = 600.0


def check_destination(out_dir: str | Path, force: bool, is_ours: Callable[[Path], bool]) -> Path:
    """`out_dir` as an absolute path (symlinks kept), or a one-line DataError if it may not be replaced."""
    out = Path(os.path.abspath(Path(out_dir).expanduser()))
    real, cwd = Path(os.path.realpath(out)), Path(os.getcwd()).resolve()
    if real == cwd or real in cwd.parents:
        raise DataError(f"{out_dir}: is the current folder or holds it; write the dataset into a new folder, "
                        "e.g. shapes/")
    if out.is_symlink() and not out.exists():
        raise DataError(f"{out}: a broken symbolic link; remove it or choose another folder")
    existing = next(p for p in out.parents if p.exists())  # where the temporary folder's path starts
    if not existing.is_dir():
        raise DataError(f"{out}: {existing} is a file, not a folder; choose another folder")
    if not os.access(existing, os.W_OK | os.X_OK):  # EROFS counts here too, even for root
        raise DataError(f"{out}: cannot write into {existing} (read-only or no permission); choose a writable folder")
    if out.exists():
        if not out.is_dir():
            raise DataError(f"{out}: exists and is not a folder; choose another folder")
        if not force and not is_ours(out) and any(out.iterdir()):
            raise DataError(f"{out}: not empty and not a dataset written by anchorlab; choose another folder, "
                            "or pass --force to replace it (what it holds is deleted)")
    return out


@contextmanager
def staged_folder(out: Path, force: bool, is_ours: Callable[[Path], bool]) -> Iterator[Path]:
    """Yield a new locked temporary folder beside `out`; publish it as `out` when the body returns.

    `out` comes from `check_destination`, checked again just before publishing (another process may
    have written there meanwhile). On any error or interruption the temporary folder is removed.
    """
    out.parent.mkdir(parents=True, exist_ok=True)
    remove_stale(out)
    tmp = Path(tempfile.mkdtemp(prefix=f".{out.name}.", suffix=".tmp", dir=out.parent))
    fd = -1
    try:
        fd = os.open(tmp / LOCK_NAME, os.O_RDWR | os.O_CREAT, 0o644)
        fcntl.flock(fd, fcntl.LOCK_EX)
        yield tmp
        os.unlink(tmp / LOCK_NAME)  # still held through `fd` until published; not part of the dataset
        check_destination(out, force, is_ours)
        _publish(tmp, out)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    finally:
        if fd >= 0:
            os.close(fd)


def _publish(tmp: Path, out: Path) -> None:
    """Rename `tmp` to `out`, moving an existing `out` aside first and deleting it after."""
    if not (out.exists() or out.is_symlink()):
        tmp.rename(out)
        return
    old = Path(tempfile.mkdtemp(prefix=f".{out.name}.", suffix=".old", dir=out.parent))
    try:
        out.rename(old / out.name)
        try:
            tmp.rename(out)
        except BaseException:
            (old / out.name).rename(out)  # put the previous dataset back rather than leave nothing
            raise
    finally:
        shutil.rmtree(old, ignore_errors=True)


def _lock_is_free(lock: Path) -> bool:
    try:
        fd = os.open(lock, os.O_RDWR)
    except FileNotFoundError:  # its writer unlinked it to publish: alive
        return False
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        return True
    except BlockingIOError:
        return False
    finally:
        os.close(fd)  # releases the lock if we took it


def _last_change(folder: Path) -> float:
    """Newest mtime of `folder` and the folders inside it (adding a file touches its folder)."""
    newest = folder.stat().st_mtime
    for root, dirs, _ in os.walk(folder):
        for d in dirs:
            newest = max(newest, os.stat(os.path.join(root, d)).st_mtime)
    return newest


def remove_stale(out: Path) -> int:
    """Remove what killed writers left beside `out` (module doc); returns how many folders went."""
    removed = 0
    now = time.time()
    for path in sorted(out.parent.glob(".*.tmp")) + sorted(out.parent.glob(f".{out.name}.*.old")):
        try:
            if not path.is_dir() or path.is_symlink():
                continue
            lock = path / LOCK_NAME
            if lock.exists():
                stale = _lock_is_free(lock)
            else:
                stale = path.name.startswith(f".{out.name}.") and now - _last_change(path) > STALE_UNLOCKED_S
        except OSError:  # gone meanwhile (its writer published or cleaned it)
            continue
        if stale:
            shutil.rmtree(path, ignore_errors=True)
            removed += 1
    if removed:
        log.info("removed %d temporary folder(s) of killed dataset writers beside %s", removed, out)
    return removed


__all__ = ["LOCK_NAME", "STALE_UNLOCKED_S", "check_destination", "staged_folder", "remove_stale"]
