"""`--limit newagent`: the agents play must not depend on facts the servers play sets. The crypto
modules' Python on the CA host falls back to that host's spire_py venv when this run did not
visit it, and uses what the install role chose there when it did."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest
import yaml

pytest.importorskip("ansible")

from conftest import ROOT  # noqa: E402
from playbook import ansible_playbook  # noqa: E402


def _run(tmp: Path, server_python: str | None) -> str:
    role = ROOT / "roles"
    inv = {"all": {"vars": {"ansible_connection": "local", "ansible_become": False,
                            "ansible_python_interpreter": sys.executable},
                   "children": {"spire_servers": {"hosts": {"server1": {}}},
                                "spire_agents": {"hosts": {"newagent": {}}}}}}
    (tmp / "inv.yml").write_text(yaml.safe_dump(inv))
    plays = []
    if server_python:
        plays.append({"name": "servers play", "hosts": "spire_servers", "gather_facts": False,
                      "tasks": [{"name": "install role's choice", "ansible.builtin.set_fact": {"spire_module_python": server_python}}]})
    plays.append({"name": "agents play", "hosts": "newagent", "gather_facts": False,
                  "vars_files": [str(role / "install/defaults/main.yml"), str(role / "agent/defaults/main.yml")],
                  "tasks": [{"name": "python", "ansible.builtin.debug": {"msg": "PY={{ spire_ca_module_python }}"}}]})
    (tmp / "play.yml").write_text(yaml.safe_dump(plays))
    return ansible_playbook(str(tmp / "play.yml"), tmp / "inv.yml", cwd=tmp).check().out


def test_ca_python_falls_back_to_the_ca_hosts_venv(tmp_path: Path) -> None:
    assert "PY=/opt/spire/venv/bin/python" in _run(tmp_path, None)


def test_ca_python_is_the_one_the_servers_play_chose(tmp_path: Path) -> None:
    assert "PY=/usr/local/bin/python3.12" in _run(tmp_path, "/usr/local/bin/python3.12")
