"""site.yml's agent batches: what the operator sets is what Ansible does, or the play refuses to start.

Ansible forms a play's batches (serial, max_fail_percentage) before it reads inventory
variables, so spire_agent_serial in group_vars used to be ignored silently (4 batches of 2 on
8 agents for ``spire_agent_serial: 1``). Only the batch check runs here (``--tags always``):
the roles' tasks are skipped, the real play header and pre_task are exercised.
"""

from __future__ import annotations

import re
import sys
from pathlib import Path

import pytest
import yaml

pytest.importorskip("ansible")

from playbook import ansible_playbook  # noqa: E402

AGENTS = [f"agent{i}" for i in range(1, 9)]
BANNER = re.compile(r"^PLAY \[SPIRE agents \(batches: (.*?), max fail: (.*?)%\)\]", re.M)


def _inventory(tmp: Path, group_vars: dict) -> Path:
    inv = {"all": {"vars": {"ansible_connection": "local", "ansible_become": False, "ansible_python_interpreter": sys.executable, **group_vars}, "children": {
        "spire_servers": {"hosts": {"server1": {}}},
        "spire_agents": {"hosts": {a: {} for a in AGENTS}},
    }}}
    path = tmp / "inventory.yml"
    path.write_text(yaml.safe_dump(inv))
    return path


def _run(tmp: Path, group_vars: dict, *args: str):  # type: ignore[no-untyped-def]
    return ansible_playbook("spire_py.spire.site", _inventory(tmp, group_vars), "--tags", "always", *args, cwd=tmp)


def test_inventory_batch_size_is_refused_not_ignored(tmp_path: Path) -> None:
    run = _run(tmp_path, {"spire_agent_serial": 1})
    assert run.rc != 0
    assert "Pass them with -e" in run.out and "spire_agent_serial=1" in run.out
    assert all(h["changed"] == 0 for h in run.recap().values())


def test_inventory_max_fail_percentage_is_refused_not_ignored(tmp_path: Path) -> None:
    run = _run(tmp_path, {"spire_agent_max_fail_percentage": 50})
    assert run.rc != 0 and "Pass them with -e" in run.out


def test_extra_vars_batch_size_forms_the_batches(tmp_path: Path) -> None:
    run = _run(tmp_path, {}, "-e", "spire_agent_serial=1").check()
    banners = BANNER.findall(run.out)
    assert banners == [("1", "0")] * 8, banners


def test_same_value_in_inventory_and_extra_vars_is_accepted(tmp_path: Path) -> None:
    run = _run(tmp_path, {"spire_agent_serial": 2}, "-e", "spire_agent_serial=2").check()
    assert BANNER.findall(run.out) == [("2", "0")] * 4


def test_default_batches_are_a_quarter(tmp_path: Path) -> None:
    run = _run(tmp_path, {}).check()
    assert BANNER.findall(run.out) == [("25%", "0")] * 4


def test_import_playbook_vars_reach_the_batches(tmp_path: Path) -> None:
    play = tmp_path / "deploy.yml"
    play.write_text(yaml.safe_dump([{"name": "Deploy", "ansible.builtin.import_playbook": "spire_py.spire.site",
                                     "vars": {"spire_agent_serial": 4}}]))
    run = ansible_playbook(str(play), _inventory(tmp_path, {}), "--tags", "always", cwd=tmp_path).check()
    assert BANNER.findall(run.out) == [("4", "0")] * 2
