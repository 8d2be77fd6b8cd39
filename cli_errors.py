"""How every anchorlab command reports a user's mistake: one `error: ...` line on stderr and exit code 2.

Shared by `cli.py` and the command groups split out of it (`cli_viz.py`), which cannot import `cli` (it
imports them to register them).
"""
from __future__ import annotations

import contextlib

import typer


def fail(message: str, code: int = 2) -> None:
    typer.secho(f"error: {message}", fg=typer.colors.RED, err=True)
    raise typer.Exit(code)


@contextlib.contextmanager
def user_errors():
    """Turn the errors a user can cause (bad config, bad data, missing files) into one line, no traceback."""
    import errno

    from detector.config import ConfigError
    from detector.data.errors import DataError
    from detector.engine.checkpoint_errors import CheckpointError

    try:
        yield
    except (ConfigError, DataError, FileNotFoundError, CheckpointError) as exc:
        fail(str(exc).splitlines()[0] if str(exc) else type(exc).__name__)
    except OSError as exc:  # a folder we cannot write: read-only filesystem, permissions, a file in the path
        if exc.filename is None:  # a message of ours, e.g. `workspace_dir`'s, already names the path
            fail(str(exc).splitlines()[0] if str(exc) else type(exc).__name__)
        unwritable = exc.errno in (errno.EROFS, errno.EACCES, errno.EPERM)
        fail(f"{exc.filename}: {exc.strerror or type(exc).__name__}"
             + ("; choose a writable folder" if unwritable else ""))
