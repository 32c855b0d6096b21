"""Who is calling: SO_PEERCRED of the connection plus a handle on the caller's /proc entry.

The Workload API attests a caller by pid, and a pid can be reused. As SPIRE's
peertracker does, a directory handle on ``/proc/<pid>`` is opened when the
connection is accepted and the process start time is noted; after attestation
the handle must still read, the start time must match and the owner must still
be the connecting uid/gid, or the selectors may describe some other process.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from typing import Any, Optional

from ...common.errors import SpireError
from ...common.tls import peer_ucred


class CallerGone(SpireError):
    """The original caller exited (or its pid now names another process)."""


def _proc() -> str:
    return os.environ.get("HOST_PROC") or "/proc"


def start_time(pid: int) -> str:
    """Field 22 of /proc/<pid>/stat: the process start time in clock ticks since boot."""
    with open(os.path.join(_proc(), str(pid), "stat")) as f:
        stat = f.read()
    # comm (field 2) may hold spaces and parentheses; the fields after it follow the last ")".
    rest = stat[stat.rindex(")") + 2:].split()
    return rest[19]


@dataclass
class Caller:
    pid: int
    uid: int
    gid: int
    procfd: int = -1
    starttime: str = ""
    error: str = ""
    closed: bool = field(default=False, repr=False)

    @classmethod
    def track(cls, pid: int, uid: int, gid: int) -> "Caller":
        c = cls(pid, uid, gid)
        if pid <= 0:
            c.error = "caller pid is not visible in this pid namespace"
            return c
        try:
            c.procfd = os.open(os.path.join(_proc(), str(pid)), os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
            c.starttime = start_time(pid)
        except (OSError, ValueError, IndexError) as exc:
            c.close()
            c.error = f"could not watch caller {pid}: {getattr(exc, 'strerror', None) or exc}"
        return c

    @classmethod
    def of_transport(cls, transport: Any) -> "Caller":
        return cls.track(*peer_ucred(transport))

    def is_alive(self) -> None:
        """Raise :class:`CallerGone` unless the process we first saw is still there."""
        if self.procfd < 0:
            raise CallerGone(self.error or "caller is no longer being watched")
        try:
            # A reaped process's /proc directory reads empty through an old handle.
            with os.scandir(self.procfd) as it:
                alive = next(it, None) is not None
        except OSError:
            alive = False
        if not alive:
            raise CallerGone("caller exit suspected due to failed readdirent")
        try:
            now = start_time(self.pid)
        except (OSError, ValueError, IndexError) as exc:
            raise CallerGone(f"caller exit suspected due to failure to get starttime: {exc}") from None
        if now != self.starttime:
            raise CallerGone(
                f"new process detected: process starttime {now} does not match original caller {self.starttime}"
            )
        try:
            st = os.stat(os.path.join(_proc(), str(self.pid)))
        except OSError:
            raise CallerGone("caller exit suspected due to failed proc stat") from None
        if st.st_uid != self.uid:
            raise CallerGone(f"new process detected: process uid {st.st_uid} does not match original caller {self.uid}")
        if st.st_gid != self.gid:
            raise CallerGone(f"new process detected: process gid {st.st_gid} does not match original caller {self.gid}")

    def close(self) -> None:
        if self.procfd >= 0:
            try:
                os.close(self.procfd)
            except OSError:
                pass
            self.procfd = -1
        self.closed = True


class CallerRegistry:
    """Callers by connection: filled on accept, emptied on disconnect (see server.py)."""

    def __init__(self) -> None:
        self._by_conn: dict[int, Caller] = {}

    def connection_made(self, transport: Any) -> None:
        try:
            caller = Caller.of_transport(transport)
        except OSError as exc:  # not a Unix socket, or already gone
            caller = Caller(0, -1, -1, error=f"could not read caller credentials: {exc}")
        old = self._by_conn.pop(id(transport), None)
        if old is not None:
            old.close()
        self._by_conn[id(transport)] = caller

    def connection_lost(self, transport: Any) -> None:
        caller = self._by_conn.pop(id(transport), None)
        if caller is not None:
            caller.close()

    def lookup(self, transport: Any) -> Optional[Caller]:
        return self._by_conn.get(id(transport))

    def close(self) -> None:
        for caller in self._by_conn.values():
            caller.close()
        self._by_conn.clear()
