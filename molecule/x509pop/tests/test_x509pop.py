"""x509pop: the agents' identities come from certificates of the provisioning CA."""

from __future__ import annotations

import json

from conftest import SERVER_SOCKET, fetch_x509


def agents_on_server(fleet):
    server = fleet.host(fleet.servers[0])
    out = server.check_output(f"spire-server agent list -socketPath {SERVER_SOCKET} -output json")
    return json.loads(out).get("agents", [])


def test_agents_attested_with_x509pop(fleet):
    agents = agents_on_server(fleet)
    assert len(agents) == len(fleet.agents)
    for a in agents:
        assert a["attestation_type"] == "x509pop"
        assert a["id"]["path"].startswith("/spire/agent/x509pop/")


def test_each_agent_carries_its_common_name_selector(fleet):
    cns = sorted(s["value"] for a in agents_on_server(fleet) for s in a.get("selectors", [])
                 if s["type"] == "x509pop" and s["value"].startswith("subject:cn:"))
    assert cns == sorted(f"subject:cn:{name}" for name in fleet.agents)


def test_certificate_files(fleet, agent):
    h = fleet.host(agent)
    key = h.file("/opt/spire/conf/agent/x509pop/agent.key")
    crt = h.file("/opt/spire/conf/agent/x509pop/agent.crt")
    assert (key.user, key.group, key.mode) == ("spire", "spire", 0o600)
    assert (crt.user, crt.group, crt.mode) == ("spire", "spire", 0o644)
    assert f"CN = {agent}" in h.check_output("openssl x509 -noout -subject -in /opt/spire/conf/agent/x509pop/agent.crt")


def test_provisioning_ca_key_stays_on_the_ca_host(fleet, server):
    h = fleet.host(server)
    key = h.file("/opt/spire/data/x509pop/ca.key")
    assert key.exists and key.mode & 0o077 == 0
    assert h.file("/opt/spire/conf/server/x509pop-ca.crt").exists


def test_node_selector_entry_reaches_only_its_node(fleet):
    only = "spiffe://example.org/only-on-agent1"
    for name in fleet.agents:
        ids = {s["spiffe_id"] for s in fetch_x509(fleet.host(name))["svids"]}
        assert (only in ids) == (name == "x509-agent1"), (name, ids)


def test_rollout_ran_as_an_unprivileged_user_through_sudo(fleet, fleet_host):
    """converge connected as deploy (uid 1500, not root) and every task escalated with sudo."""
    assert fleet.var(fleet_host, "ansible_user") == "deploy"
    h = fleet.host(fleet_host)
    assert h.user("deploy").uid == 1500
    log = h.check_output("journalctl --no-pager -q _COMM=sudo")
    assert "deploy : " in log and "USER=root" in log, log[-2000:]
    # The SPIRE files are still the service user's, not the connecting user's.
    assert not h.check_output("find /opt/spire -user deploy -print -quit")
