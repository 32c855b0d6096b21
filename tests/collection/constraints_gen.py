"""Writes roles/install/files/constraints.txt: spire_py's runtime dependency closure (with the
postgres and mysql extras) pinned to the versions installed in the venv that ran the tests.

    .venv/bin/python tests/collection/constraints_gen.py

The install role passes the file to pip (-c), so every host of a fleet installs the versions
that were tested, and scripts/fleet.sh builds its wheelhouse with it.
"""

from __future__ import annotations

import importlib.metadata as md
import re
import sys
from pathlib import Path

from packaging.requirements import Requirement

ROOT = Path(__file__).resolve().parents[2]
OUT = ROOT / "roles" / "install" / "files" / "constraints.txt"
EXTRAS = ("postgres", "mysql")


def canonical(name: str) -> str:
    return re.sub(r"[-_.]+", "-", name).lower()


def closure(root: str, extras: tuple[str, ...]) -> dict[str, str]:
    pinned: dict[str, str] = {}
    todo = [(root, extras)]
    done: set[tuple[str, tuple[str, ...]]] = set()
    while todo:
        name, wanted = todo.pop()
        if (canonical(name), wanted) in done:
            continue
        done.add((canonical(name), wanted))
        try:
            dist = md.distribution(name)
        except md.PackageNotFoundError:
            continue
        if canonical(name) != canonical(root):
            pinned[canonical(name)] = dist.version
        for text in dist.requires or []:
            req = Requirement(text)
            if req.marker is None or any(req.marker.evaluate({"extra": e}) for e in ("",) + wanted):
                todo.append((req.name, tuple(sorted(req.extras))))
    return pinned


def render() -> str:
    pinned = closure("spire_py", EXTRAS)
    lines = ["# spire_py's runtime dependencies as tested (tests/collection/constraints_gen.py writes this file;",
             "# Python %d.%d). The install role installs with pip -c this file." % sys.version_info[:2]]
    lines += ["%s==%s" % item for item in sorted(pinned.items())]
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    OUT.write_text(render())
    print("wrote %s" % OUT.relative_to(ROOT))
