"""sshpop: the agents prove possession of their own SPIRE host keys (made on the agent, never sshd's),
certified by the fleet's SSH CA."""

from __future__ import annotations

import json

from conftest import SERVER_SOCKET


def test_agents_attested_with_sshpop(fleet):
    server = fleet.host(fleet.servers[0])
    out = server.check_output(f"spire-server agent list -socketPath {SERVER_SOCKET} -output json")
    agents = json.loads(out).get("agents", [])
    assert sorted(a["attestation_type"] for a in agents) == ["sshpop"] * len(fleet.agents)
    # agent_path_template "/{{ .PluginName }}/{{ .Hostname }}" under SPIRE's /spire/agent prefix.
    assert sorted(a["id"]["path"] for a in agents) == sorted(f"/spire/agent/sshpop/{n}" for n in fleet.agents)


def test_host_certificate_signed_for_this_host(fleet, agent):
    h = fleet.host(agent)
    out = h.check_output("ssh-keygen -L -f /opt/spire/conf/agent/sshpop/host_key-cert.pub")
    assert "host certificate" in out
    assert agent in out.split("Principals:")[1].split("Critical")[0]
    # The certificate certifies the agent's own key pair, not sshd's.
    cert_key = h.check_output("ssh-keygen -l -f /opt/spire/conf/agent/sshpop/host_key-cert.pub").split()[1]
    own_key = h.check_output("ssh-keygen -l -f /opt/spire/conf/agent/sshpop/host_key.pub").split()[1]
    sshd_key = h.check_output("ssh-keygen -l -f /etc/ssh/ssh_host_ed25519_key.pub").split()[1]
    assert cert_key == own_key != sshd_key


def test_agent_has_a_dedicated_host_key(fleet, agent):
    h = fleet.host(agent)
    key = h.file("/opt/spire/conf/agent/sshpop/host_key")
    assert (key.user, key.group, key.mode) == ("spire", "spire", 0o600)
    sshd = h.file("/etc/ssh/ssh_host_ed25519_key")
    assert (sshd.user, sshd.mode) == ("root", 0o600)
    assert key.sha256sum != sshd.sha256sum


def test_hosts_have_distinct_host_keys(fleet):
    keys = {fleet.host(n).check_output("ssh-keygen -l -f /opt/spire/conf/agent/sshpop/host_key.pub").split()[1]
            for n in fleet.agents}
    assert len(keys) == len(fleet.agents)
