"""Which machine and process we are: used to tell a dead local worker from a live remote one."""
from __future__ import annotations

import os
import socket
from pathlib import Path


def pid_alive(pid: int) -> bool:
    """True unless process `pid` surely does not exist on this machine."""
    try:
        os.kill(int(pid), 0)
    except ProcessLookupError:
        return False
    except (PermissionError, OverflowError, ValueError):
        return True
    return True


def _host_id() -> str:
    """This machine: hostname plus kernel boot id, so a pid check never crosses machines or reboots."""
    try:
        boot = Path("/proc/sys/kernel/random/boot_id").read_text().strip()
    except OSError:
        boot = ""
    return f"{socket.gethostname()}/{boot}"


HOST = _host_id()

__all__ = ["pid_alive", "HOST"]
