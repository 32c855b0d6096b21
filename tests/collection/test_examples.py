"""examples/: every inventory parses, `ansible-inventory --list` reads it with its group_vars, and
site.yml (and the day-2 playbooks) pass --syntax-check with it; no example sets a batch size in
the inventory (site.yml refuses that) or writes a literal password into server.conf."""

from __future__ import annotations

import json
import os
import re
import subprocess
from pathlib import Path

import pytest
import yaml

pytest.importorskip("ansible")

from conftest import COLLECTIONS_PARENT, ROOT  # noqa: E402
from playbook import BIN  # noqa: E402

EXAMPLES = sorted(p.parent for p in (ROOT / "examples").glob("*/inventory.yml"))
PLAYBOOKS = ["site", "upgrade", "rollback", "rotate", "reattest", "decommission", "entries"]


class _Loader(yaml.SafeLoader):
    pass


_Loader.add_constructor("!unsafe", lambda loader, node: loader.construct_scalar(node))
_Loader.add_constructor("!vault", lambda loader, node: loader.construct_scalar(node))


def _env() -> dict[str, str]:
    return dict(os.environ, ANSIBLE_COLLECTIONS_PATH=str(COLLECTIONS_PARENT), ANSIBLE_NOCOLOR="1")


def test_the_four_examples_are_there() -> None:
    assert {p.name for p in EXAMPLES} == {"single-server", "ha-postgres", "x509pop", "sshpop"}


@pytest.mark.parametrize("example", EXAMPLES, ids=lambda p: p.name)
def test_example_inventory_lists_servers_and_agents(example: Path, tmp_path: Path) -> None:
    for path in example.rglob("*.yml"):
        yaml.load(path.read_text(), Loader=_Loader)  # noqa: S506 (a SafeLoader subclass)
    proc = subprocess.run([str(BIN / "ansible-inventory"), "-i", str(example / "inventory.yml"), "--list"],
                          env=_env(), capture_output=True, text=True, timeout=120, cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr
    data = json.loads(proc.stdout)
    assert data["spire_servers"]["hosts"] and data["spire_agents"]["hosts"]
    hostvars = data["_meta"]["hostvars"]
    for host, values in hostvars.items():
        assert "spire_agent_serial" not in values and "spire_agent_max_fail_percentage" not in values, host
        assert values["spire_trust_domain"] == "example.org", host
        datastore = json.dumps(values.get("spire_server_datastore", {}))
        assert not re.search(r"password=(?!\$)\S", datastore), host


@pytest.mark.parametrize("example", EXAMPLES, ids=lambda p: p.name)
def test_playbooks_pass_syntax_check_with_example(example: Path, tmp_path: Path) -> None:
    # One ansible-playbook run checks them all (it takes several playbooks).
    proc = subprocess.run([str(BIN / "ansible-playbook"), "-i", str(example / "inventory.yml"),
                           *(f"spire_py.spire.{name}" for name in PLAYBOOKS), "--syntax-check"],
                          env=_env(), capture_output=True, text=True, timeout=120, cwd=tmp_path)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert proc.stdout.count("playbook: ") == len(PLAYBOOKS), proc.stdout
