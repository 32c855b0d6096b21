"""Running ansible-playbook against the collection under test, with connection=local."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

from conftest import COLLECTIONS_PARENT

BIN = Path(sys.executable).parent
RECAP = re.compile(r"^(\S+)\s+:\s+ok=(\d+)\s+changed=(\d+)\s+unreachable=(\d+)\s+failed=(\d+)", re.M)


@dataclass
class Run:
    rc: int
    out: str

    def recap(self) -> dict[str, dict[str, int]]:
        return {m.group(1): {"ok": int(m.group(2)), "changed": int(m.group(3)), "failed": int(m.group(5))}
                for m in RECAP.finditer(self.out)}

    def changed(self) -> int:
        return sum(h["changed"] for h in self.recap().values())

    def check(self) -> "Run":
        assert self.rc == 0, self.out[-6000:]
        return self


def ansible_playbook(playbook: str, inventory: Path, *args: str, cwd: Path, timeout: float = 300) -> Run:
    env = dict(os.environ)
    env.update(
        ANSIBLE_COLLECTIONS_PATH=str(COLLECTIONS_PARENT),
        ANSIBLE_HOST_KEY_CHECKING="False",
        ANSIBLE_RETRY_FILES_ENABLED="False",
        ANSIBLE_NOCOLOR="1",
        ANSIBLE_FORCE_COLOR="0",
        ANSIBLE_LOCAL_TEMP=str(cwd / ".ansible-tmp"),
        ANSIBLE_REMOTE_TEMP=str(cwd / ".ansible-tmp"),
        PATH=str(BIN) + os.pathsep + env.get("PATH", ""),
    )
    proc = subprocess.run([str(BIN / "ansible-playbook"), "-i", str(inventory), playbook, *args],
                          cwd=cwd, env=env, capture_output=True, text=True, timeout=timeout)
    return Run(proc.returncode, proc.stdout + proc.stderr)
