"""The rollout of release B: every host runs it, and no workload was ever without a valid SVID."""

from __future__ import annotations

import json
import os

import pytest

WATCH_LOG = "/var/tmp/fleet-svid-watch.jsonl"


@pytest.fixture(scope="module")
def record():
    path = os.path.join(os.environ["MOLECULE_EPHEMERAL_DIRECTORY"], "upgrade-record.json")
    with open(path, encoding="utf-8") as f:
        return json.load(f)


def watch_log(fleet, agent):
    lines = fleet.host(agent).check_output(f"cat {WATCH_LOG}").splitlines()
    return [json.loads(line) for line in lines if line.strip()]


def test_every_host_runs_release_b(fleet, fleet_host):
    h = fleet.host(fleet_host)
    version = fleet.var(fleet_host, "fleet_release_b_version")
    current = h.file("/opt/spire/current").linked_to
    assert current.rsplit("/", 1)[-1].startswith(f"{version}-"), current
    daemon = "spire-server" if fleet_host in fleet.servers else "spire-agent"
    assert h.check_output(f"{daemon} --version").strip().endswith(version)
    # Release A stays for a rollback.
    assert len(h.file("/opt/spire/releases").listdir()) == 2


def test_daemons_restarted_during_the_rollout(fleet, fleet_host, record):
    unit = "spire-server" if fleet_host in fleet.servers else "spire-agent"
    out = fleet.host(fleet_host).check_output(
        f"systemctl show --timestamp=unix -p ActiveEnterTimestamp --value {unit}")
    started_at = float(out.strip().lstrip("@"))
    assert record["start"] - 2 <= started_at <= record["end"] + 2, (record, started_at)


def test_the_second_run_changed_nothing(record):
    assert record["second_run"], "no recap of the second run"
    assert record["second_run"] == {h: 0 for h in record["second_run"]}
    assert all(changed > 0 for changed in record["first_run"].values())
    assert record["failed"] == 0


def test_workload_svids_had_no_gap(fleet, agent, record):
    log = watch_log(fleet, agent)
    first_valid = next(i for i, r in enumerate(log) if r["valid"])
    gaps = [r for r in log[first_valid:] if not r["valid"]]
    assert not gaps, f"{len(gaps)} seconds without a valid SVID, first at {gaps[0]}"
    # The watch covered the whole rollout.
    assert log[first_valid]["t"] <= record["start"] and log[-1]["t"] >= record["end"]


def test_workload_received_new_svids_through_the_rollout(fleet, agent, record):
    log = watch_log(fleet, agent)
    during = [r for r in log if record["start"] <= r["t"] <= record["end"]]
    assert during[-1]["updates"] > during[0]["updates"], "no SVID update during the rollout"
    expiries = {exp for r in log for exp in r["held"].values()}
    print(f"{agent}: {len(log)} s watched, {during[-1]['updates'] - during[0]['updates']} updates and "
          f"{during[-1]['errors'] - during[0]['errors']} stream errors during the rollout, "
          f"{len(expiries)} distinct SVIDs held")
    assert len(expiries) >= 2, "the SVID was never rotated"
    held_ids = set(log[-1]["held"])
    assert held_ids == set(fleet.expected_svids(agent))
