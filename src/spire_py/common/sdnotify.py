"""systemd readiness notification (sd_notify) without a C library.

A no-op when the process was not started by systemd with Type=notify.
"""

from __future__ import annotations

import os
import socket


def notify(state: str) -> bool:
    addr = os.environ.get("NOTIFY_SOCKET")
    if not addr:
        return False
    if addr.startswith("@"):
        addr = "\0" + addr[1:]
    try:
        with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as s:
            s.connect(addr)
            s.sendall(state.encode())
        return True
    except OSError:
        return False


def ready(status: str = "") -> bool:
    msg = "READY=1"
    if status:
        msg += f"\nSTATUS={status}"
    return notify(msg)


def stopping() -> bool:
    return notify("STOPPING=1")


def watchdog_interval() -> float:
    """Half the WATCHDOG_USEC interval in seconds, or 0 when no watchdog applies to us."""
    usec = os.environ.get("WATCHDOG_USEC")
    pid = os.environ.get("WATCHDOG_PID")
    if not usec or (pid and int(pid) != os.getpid()):
        return 0.0
    return int(usec) / 2_000_000
