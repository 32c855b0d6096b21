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
from typing import Any, Optional

from ....common.config import BOOL, INT, Field, Schema, parse_plugin_data
from ....common.plugin import PluginContext, register
from ....server.datastore.models import Selector
from .base import WorkloadAttestationError, WorkloadAttestor

SCHEMA = Schema([
    Field("discover_workload_path", BOOL, default=False),
    # 0: no limit; negative: never hash (path selector only).
    Field("workload_size_limit", INT, default=0),
])


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

    def __init__(self, discover_workload_path: bool = False, workload_size_limit: int = 0) -> None:
        self.discover_workload_path = discover_workload_path
        self.workload_size_limit = workload_size_limit

    @classmethod
    def _check(cls, data: dict[str, Any]) -> tuple[bool, int]:
        values = parse_plugin_data(SCHEMA, data)
        return values["discover_workload_path"], values["workload_size_limit"]

    @classmethod
    def check_config(cls, data: dict[str, Any], ctx: PluginContext) -> None:
        cls._check(data)

    @classmethod
    def configure(cls, data: dict[str, Any], ctx: PluginContext) -> "UnixWorkloadAttestor":
        discover, limit = cls._check(data)
        return cls(discover, limit)

    async def attest(self, pid: int, uid: int, gid: int) -> list[Selector]:
        # /proc reads, NSS lookups and hashing all block: keep them off the loop.
        return await asyncio.to_thread(self._attest, pid)

    def _attest(self, pid: int) -> list[Selector]:
        status = read_status(pid)
        values: list[str] = []
        uid = _effective(status, "uid", "UIDs")
        values.append(f"uid:{uid}")
        if (user := _user_name(uid)) is not None:
            values.append(f"user:{user}")
        gid = _effective(status, "gid", "GIDs")
        values.append(f"gid:{gid}")
        if (group := _group_name(gid)) is not None:
            values.append(f"group:{group}")
        for sgid in status.get("groups", "").split():
            values.append(f"supplementary_gid:{sgid}")
            if (sgroup := _group_name(sgid)) is not None:
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
