"""Which container a process runs in, read from ``/proc/<pid>/cgroup`` (SPIRE's container locator).

The kernel writes ``/proc/<pid>/cgroup`` and a workload cannot forge it, so it is read first;
``/proc/<pid>/mountinfo`` (the roots of the cgroup mounts the process sees) is consulted only
when no cgroup names a container, as SPIRE does: a workload can bind-mount another container's
cgroup into its own namespace, so mountinfo must never win over the cgroup file.

A container ID is the last path segment, counting from the end, that holds 64 hex digits as a
word: ``/docker/<id>`` (cgroupfs driver, v1), ``/system.slice/docker-<id>.scope`` (systemd
driver, v1 or v2), ``/machine.slice/libpod-<id>.scope/container`` (podman),
``/kubepods.slice/.../cri-containerd-<id>.scope``. Every cgroup that names a container must name
the same one, or the process is refused (the safe answer is none).

SPIRE's legacy locator (``container_id_cgroup_matchers`` with ``use_new_container_locator =
false``) is :class:`CgroupMatchers`: slash-delimited patterns where ``*`` is one segment and
``<id>`` captures the container ID.
"""

from __future__ import annotations

import os
import re
from dataclasses import dataclass
from typing import Optional

from .base import WorkloadAttestationError

_CONTAINER_ID = re.compile(r"\b([0-9a-fA-F]{64})\b", re.ASCII)
_PODMAN_CGROUP = re.compile(r"(?:libpod-|/libpod/)")
_USER_SLICE_UID = re.compile(r"/user-(\d+)\.slice/")


class ContainerLocatorError(WorkloadAttestationError):
    """The cgroups are unreadable or name more than one container."""


@dataclass(frozen=True)
class Cgroup:
    hierarchy_id: str
    controllers: str
    path: str


def parse_cgroups(text: str) -> list[Cgroup]:
    """``hierarchy-ID:controller-list:cgroup-path`` lines (v1 and the v2 ``0::`` line)."""
    out = []
    for line in text.splitlines():
        if not line:
            continue
        parts = line.split(":", 2)
        if len(parts) < 3:
            raise ContainerLocatorError(
                f"invalid cgroup entry, contains {len(parts)} colon separated fields but expected at least 3: {line!r}")
        out.append(Cgroup(*parts))
    return out


def read_cgroups(pid: int, proc: str) -> Optional[list[Cgroup]]:
    """The process's cgroups, or None when the file does not exist."""
    try:
        with open(os.path.join(proc, str(pid), "cgroup")) as f:
            return parse_cgroups(f.read())
    except FileNotFoundError:
        return None
    except OSError as exc:
        raise ContainerLocatorError(f"unable to obtain cgroups: {exc.strerror}") from None


def parse_mount_roots(text: str) -> list[str]:
    """Roots of the cgroup/cgroup2 mounts in a mountinfo file, but ``/`` (the host's own)."""
    roots = []
    for line in text.splitlines():
        if not line:
            continue
        fields = line.split(" ")
        try:
            sep = fields.index("-")
        except ValueError:
            raise ContainerLocatorError(f"missing separator in mountinfo line: {line}") from None
        if sep < 6:
            raise ContainerLocatorError(f"expected at least 6 fields before separator in mountinfo line: {line}")
        if sep + 1 >= len(fields) or not fields[sep + 1]:
            raise ContainerLocatorError(f"missing filesystem type in mountinfo line: {line}")
        if fields[sep + 1] in ("cgroup", "cgroup2") and fields[3] != "/":
            roots.append(fields[3])
    return roots


def container_id_in(path: str) -> str:
    """The container ID a cgroup path (or mount root) names, or ``""``."""
    for segment in reversed(path.split("/")):
        if m := _CONTAINER_ID.search(segment):
            return m.group(1)
    return ""


def _one_container(paths: list[str]) -> str:
    found = ""
    for path in paths:
        cid = container_id_in(path)
        # A path that names no container says nothing about which one (hybrid hosts show the
        # container in some hierarchies only); two different IDs refuse the process.
        if cid and found and cid != found:
            raise ContainerLocatorError(f'multiple container IDs found ("{found}", "{cid}")')
        found = found or cid
    return found


def locate_container(pid: int, proc: str, cgroups: Optional[list[Cgroup]] = None) -> str:
    """The caller's container ID, ``""`` for a process outside containers."""
    if cgroups is None:
        cgroups = read_cgroups(pid, proc)
    found = _one_container([c.path for c in cgroups or []])
    if found:
        return found
    mountinfo = os.path.join(proc, str(pid), "mountinfo")
    try:
        with open(mountinfo) as f:
            text = f.read()
    except FileNotFoundError:
        return ""
    except OSError as exc:
        raise ContainerLocatorError(f"failed to parse mount info at {mountinfo!r}: {exc.strerror}") from None
    return _one_container(parse_mount_roots(text))


# ------------------------------------------------------------------ legacy: cgroup matchers
_ID_TOKEN = "<id>"
_WILDCARD = "*"


class CgroupMatchers:
    """``container_id_cgroup_matchers``: not regular expressions, one pattern per cgroup layout."""

    def __init__(self, patterns: list[str]) -> None:
        if not patterns:
            raise ValueError("at least 1 pattern must be supplied")
        ambiguous = sorted({p for i, p in enumerate(patterns) for q in patterns[i + 1:] if _equivalent(p, q)}
                           | {q for i, p in enumerate(patterns) for q in patterns[i + 1:] if _equivalent(p, q)})
        if ambiguous:
            raise ValueError(f"patterns must not be ambiguous: {', '.join(ambiguous)}")
        self._res = [_compile(p) for p in patterns]

    def find(self, path: str) -> Optional[str]:
        for r in self._res:
            if m := r.fullmatch(path):
                return m.group(1)
        return None

    def locate(self, cgroups: list[Cgroup]) -> str:
        """SPIRE's legacy rule: every matching cgroup must give the same, non-blank ID."""
        matched = False
        found = ""
        for c in cgroups:
            cid = self.find(c.path)
            if cid is None:
                continue
            matched = True
            if not found:
                found = cid
            elif cid != found:
                raise ContainerLocatorError(f"multiple container IDs found in cgroups ({found}, {cid})")
        if matched and not found:
            raise ContainerLocatorError("a pattern matched, but no container id was found")
        return found


def _compile(pattern: str) -> re.Pattern[str]:
    elems = pattern.split("/")
    if elems.count(_ID_TOKEN) != 1:
        raise ValueError(f'pattern "{pattern}" must contain the container id token "{_ID_TOKEN}" exactly once')
    parts = ["[^/]*" if e == _WILDCARD else "([^/]*)" if e == _ID_TOKEN else re.escape(e) for e in elems]
    return re.compile("/".join(parts))


def _equivalent(a: str, b: str) -> bool:
    if a == b:
        return True
    ea, eb = a.split("/"), b.split("/")
    if len(ea) != len(eb):
        return False
    return all(x == y or _WILDCARD in (x, y) or _ID_TOKEN in (x, y) for x, y in zip(ea, eb))


# ------------------------------------------------------------------ podman sockets
def podman_socket(cgroups: list[Cgroup], rootful: str, rootless_template: str) -> Optional[str]:
    """The podman API for a podman container (rootless: its owner's, from the user slice), else None."""
    for c in cgroups:
        if not _PODMAN_CGROUP.search(c.path):
            continue
        if m := _USER_SLICE_UID.search(c.path):
            uid = int(m.group(1))
            if uid < 2**32:
                return re.sub(r"%([%d])", lambda f: "%" if f.group(1) == "%" else str(uid), rootless_template)
        return rootful
    return None


def check_socket_template(template: str) -> Optional[str]:
    """Why a rootless socket template is invalid (exactly one ``%d``; ``%%`` escapes), or None."""
    placeholders = 0
    i = 0
    while i < len(template):
        if template[i] == "%":
            nxt = template[i + 1:i + 2]
            if not nxt:
                return "trailing % at end of template"
            if nxt == "d":
                placeholders += 1
            elif nxt != "%":
                return "template only supports escaped %% or the %d UID placeholder"
            i += 2
            continue
        i += 1
    if placeholders != 1:
        return "template must contain exactly one %d UID placeholder"
    return None
