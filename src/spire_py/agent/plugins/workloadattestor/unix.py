"""WorkloadAttestor "unix": selectors from the caller's process credentials, as SPIRE's.

Selectors (type "unix"): ``uid:<n>``, ``user:<name>``, ``gid:<n>``, ``group:<name>``,
``supplementary_gid:<n>`` / ``supplementary_group:<name>`` for each entry of the
``Groups:`` line, and with ``discover_workload_path``: ``path:<exe>`` and
``sha256:<hex>`` of the binary. Like SPIRE (gopsutil) the uid and gid are the
*effective* ones from ``/proc/<pid>/status``; names appear only when resolvable.
``HOST_PROC`` relocates ``/proc`` as in SPIRE.
"""

from __future__ import annotations

import asyncio
import grp
import hashlib
import os
import pwd
import time
from dataclasses import dataclass
from typing import Optional

from ....common.errors import SpireError
from ....common.plugin import BOOL, INT, Field, PluginContext, Schema, register
from ....common.registration import Selector
from .base import WorkloadAttestationError, WorkloadAttestor


@dataclass
class UnixConfig:
    discover_workload_path: bool = False
    # 0: no limit; negative: never hash (path selector only).
    workload_size_limit: int = 0


def proc_root() -> str:
    return os.environ.get("HOST_PROC") or "/proc"


def _user_name(uid: str) -> Optional[str]:
    try:
        return pwd.getpwuid(int(uid)).pw_name
    except (KeyError, ValueError, OverflowError):
        return None


def _group_name(gid: str) -> Optional[str]:
    try:
        return grp.getgrgid(int(gid)).gr_name
    except (KeyError, ValueError, OverflowError):
        return None


# NSS answers (user and group names) are kept this long: a lookup may block (LDAP, sssd) and
# must run in a thread, a remembered one lets the whole attestation run on the loop.
NAME_TTL = 5.0


class _NameMiss(SpireError):
    """A name is not remembered (or is stale): attest in a thread instead."""


class _Names:
    def __init__(self) -> None:
        self._known: dict[tuple[str, str], tuple[Optional[str], float]] = {}

    def lookup(self, kind: str, num: str, *, may_block: bool) -> Optional[str]:
        hit = self._known.get((kind, num))
        now = time.monotonic()
        if hit is not None and now < hit[1]:
            return hit[0]
        if not may_block:
            raise _NameMiss(kind)
        name = _user_name(num) if kind == "user" else _group_name(num)
        if len(self._known) > 4096:
            self._known.clear()
        self._known[(kind, num)] = (name, now + NAME_TTL)
        return name


def read_status(pid: int) -> dict[str, str]:
    """``/proc/<pid>/status`` as lower-cased key -> raw value."""
    path = os.path.join(proc_root(), str(pid), "status")
    try:
        with open(path) as f:
            text = f.read()
    except FileNotFoundError:
        raise WorkloadAttestationError(f"failed to get process: process {pid} does not exist") from None
    except OSError as exc:
        raise WorkloadAttestationError(f"failed to get process: {path}: {exc.strerror}") from None
    out: dict[str, str] = {}
    for line in text.splitlines():
        key, sep, value = line.partition(":")
        if sep:
            out[key.strip().lower()] = value.strip()
    return out


def _effective(status: dict[str, str], key: str, what: str) -> str:
    ids = status.get(key, "").split()
    if not ids:
        raise WorkloadAttestationError(f"{what} lookup: no {what} for process")
    # real, effective, saved, filesystem: SPIRE takes the effective one.
    return ids[1] if len(ids) > 1 else ids[0]


def sha256_digest(path: str, limit: int) -> str:
    """Hex SHA-256 of ``path``; refuses files larger than ``limit`` when ``limit`` > 0."""
    try:
        with open(path, "rb") as f:
            if limit > 0:
                size = os.fstat(f.fileno()).st_size
                if size > limit:
                    raise WorkloadAttestationError(
                        f"SHA256 digest: workload {path} exceeds size limit ({size} > {limit})"
                    )
            h = hashlib.sha256()
            for chunk in iter(lambda: f.read(1 << 20), b""):
                h.update(chunk)
            return h.hexdigest()
    except OSError as exc:
        raise WorkloadAttestationError(f"SHA256 digest: {path}: {exc.strerror}") from None


@register("agent")
class UnixWorkloadAttestor(WorkloadAttestor):
    NAME = "unix"
    CONFIG = Schema([
        Field("discover_workload_path", BOOL, default=False),
        Field("workload_size_limit", INT, default=0),
    ])
    CONFIG_TYPE = UnixConfig

    def __init__(self, discover_workload_path: bool = False, workload_size_limit: int = 0) -> None:
        self.discover_workload_path = discover_workload_path
        self.workload_size_limit = workload_size_limit
        self._names = _Names()

    @classmethod
    def from_config(cls, config: UnixConfig, ctx: PluginContext) -> "UnixWorkloadAttestor":
        return cls(config.discover_workload_path, config.workload_size_limit)

    async def attest(self, pid: int, uid: int, gid: int) -> list[Selector]:
        # NSS lookups and hashing may block: they run in a thread. Reading /proc does not (a
        # pseudo-file), so with the names remembered and no hashing the call stays on the loop.
        if not self.discover_workload_path:
            try:
                return self._attest(pid, may_block=False)
            except _NameMiss:
                pass
        return await asyncio.to_thread(self._attest, pid)

    def _attest(self, pid: int, *, may_block: bool = True) -> list[Selector]:
        status = read_status(pid)
        names = self._names
        values: list[str] = []
        uid = _effective(status, "uid", "UIDs")
        values.append(f"uid:{uid}")
        if (user := names.lookup("user", uid, may_block=may_block)) is not None:
            values.append(f"user:{user}")
        gid = _effective(status, "gid", "GIDs")
        values.append(f"gid:{gid}")
        if (group := names.lookup("group", gid, may_block=may_block)) is not None:
            values.append(f"group:{group}")
        for sgid in status.get("groups", "").split():
            values.append(f"supplementary_gid:{sgid}")
            if (sgroup := names.lookup("group", sgid, may_block=may_block)) is not None:
                values.append(f"supplementary_group:{sgroup}")

        if self.discover_workload_path:
            exe = os.path.join(proc_root(), str(pid), "exe")
            try:
                path = os.readlink(exe)
            except OSError as exc:
                raise WorkloadAttestationError(f"path lookup: {exe}: {exc.strerror}") from None
            values.append(f"path:{path}")
            if self.workload_size_limit >= 0:
                # Hash through /proc/<pid>/exe: it names the binary even inside another mount namespace.
                values.append(f"sha256:{sha256_digest(exe, self.workload_size_limit)}")
        return [Selector("unix", v) for v in values]
