"""The playbooks as files: every play escalates (a non-root SSH user works), the day-2 playbooks
are there and tagged, and decommission.yml matches no host unless told which."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[2]
PLAYBOOKS = sorted((ROOT / "playbooks").glob("*.yml"))
DAY2 = {"upgrade", "rollback", "rotate", "reattest", "decommission", "entries"}


def plays(path: Path) -> list[dict]:
    return [p for p in yaml.safe_load(path.read_text()) if "hosts" in p]


def test_day2_playbooks_exist() -> None:
    assert DAY2 <= {p.stem for p in PLAYBOOKS}


@pytest.mark.parametrize("path", PLAYBOOKS, ids=lambda p: p.stem)
def test_every_play_becomes_root(path: Path) -> None:
    if path.stem == "kubernetes":
        pytest.skip("talks to the Kubernetes API from the controller")
    for play in plays(path):
        if play["hosts"] == "localhost":
            continue
        assert play.get("become") is True, (path.name, play.get("name"))


def test_entries_playbook_runs_alone_with_tags() -> None:
    [play] = plays(ROOT / "playbooks" / "entries.yml")
    assert play["hosts"] == "spire_servers" and "entries" in play["tags"]
    purge = [t for t in play["tasks"] if t.get("spire_py.spire.entry", {}).get("purge") is True]
    assert purge and "entries_purge" in purge[0]["tags"]


def test_decommission_needs_its_hosts_named() -> None:
    [play] = plays(ROOT / "playbooks" / "decommission.yml")
    assert play["hosts"] == "{{ spire_decommission_hosts | default('spire_decommission_none') }}"


def test_upgrade_backs_up_before_the_rollout() -> None:
    doc = yaml.safe_load((ROOT / "playbooks" / "upgrade.yml").read_text())
    assert doc[0]["hosts"] == "spire_servers" and "backup" in doc[0]["tags"]
    assert doc[-1]["ansible.builtin.import_playbook"] == "site.yml"
