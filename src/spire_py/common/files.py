"""Writing files so a crash never leaves half of one: every file spire_py persists (keys,
agent state, CLI -write output) goes through :func:`atomic_write`."""

from __future__ import annotations

import os
import tempfile


def _make_private_dirs(directory: str) -> None:
    """Create ``directory`` and any missing parent, each with mode 0700 (makedirs applies the
    mode to the last one only)."""
    missing: list[str] = []
    d = directory
    while not os.path.isdir(d):
        missing.append(d)
        parent = os.path.dirname(d)
        if parent == d:
            break
        d = parent
    for d in reversed(missing):
        try:
            os.mkdir(d, 0o700)
        except FileExistsError:
            if not os.path.isdir(d):
                raise
            continue
        os.chmod(d, 0o700)


def atomic_write(path: str | os.PathLike[str], data: bytes, mode: int = 0o600) -> None:
    """Replace ``path`` with ``data`` so a crash leaves the old or the new file, never a mix.

    Temp file in the same directory, fsync, rename, fsync of the directory.
    Missing parent directories are created with mode 0700.
    """
    target = os.fspath(path)
    directory = os.path.dirname(os.path.abspath(target))
    _make_private_dirs(directory)
    fd, tmp = tempfile.mkstemp(prefix="." + os.path.basename(target) + ".", suffix=".tmp", dir=directory)
    try:
        with os.fdopen(fd, "wb") as f:
            os.fchmod(f.fileno(), mode)
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, target)
    except BaseException:
        try:
            os.unlink(tmp)
        except FileNotFoundError:
            pass
        raise
    dir_fd = os.open(directory, os.O_RDONLY)
    try:
        os.fsync(dir_fd)
    finally:
        os.close(dir_fd)
