"""WorkloadAttestor "systemd" on real systemd: a service gets the SVID registered for its unit.

The unit (files/spire-fleet-workload.service) runs as nobody, whom no unix entry names;
its entry selects ``systemd:id:spire-fleet-workload.service``. The same command in another unit
is refused, and uid 2001 in another unit gets its unix entry only.
"""

from __future__ import annotations

import json
import shlex
import time
import uuid
from pathlib import Path

from conftest import AGENT_SOCKET, check_x509_svid

UNIT = "spire-fleet-workload.service"
UNIT_FILE = Path(__file__).resolve().parent.parent / "files" / UNIT
OUTPUT = "/run/spire-fleet-workload.json"
FETCH = f"/opt/spire/bin/spire-agent api fetch x509 -socketPath {AGENT_SOCKET} -output json"


def run_in_unit(h, name, prop):
    """FETCH in a transient unit of its own (unique name; --collect unloads it even when it fails)."""
    return h.run(f"systemd-run --quiet --wait --pipe --collect -p {prop} --unit={name}-{uuid.uuid4().hex[:8]} {FETCH}")


def install_unit(h):
    text = UNIT_FILE.read_text()
    h.check_output(f"printf %s {shlex.quote(text)} > /etc/systemd/system/{UNIT} && systemctl daemon-reload")


def test_service_gets_the_svid_of_its_unit(fleet, agent):
    h = fleet.host(agent)
    install_unit(h)
    deadline = time.monotonic() + 60
    while True:
        r = h.run(f"systemctl start {UNIT}")
        if r.rc == 0 or time.monotonic() > deadline:
            break
        time.sleep(2)
    assert r.rc == 0, h.run(f"journalctl -u {UNIT} -n 20 --no-pager").stdout
    svids = json.loads(h.file(OUTPUT).content_string)["svids"]
    assert [s["spiffe_id"] for s in svids] == [f"spiffe://example.org/service/{agent}"]
    check_x509_svid(svids[0])


def test_the_same_command_in_another_unit_is_refused(fleet, agent):
    h = fleet.host(agent)
    r = run_in_unit(h, "spire-fleet-other", "User=nobody")
    assert r.rc != 0
    assert "PermissionDenied" in r.stderr and "no identity issued" in r.stderr, r.stderr


def test_uid_2001_in_another_unit_gets_its_unix_entry_only(fleet, agent):
    h = fleet.host(agent)
    r = run_in_unit(h, "spire-fleet-uid", "User=workload")
    assert r.rc == 0, r.stderr
    assert [s["spiffe_id"] for s in json.loads(r.stdout)["svids"]] == fleet.expected_svids(agent)
