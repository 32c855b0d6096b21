"""sshpop end to end: real spire-server and spire-agent processes attesting with SSH host
certificates made here; workloads registered under one node reach that node only; refusals
(untrusted CA, expired, user certificate, principal outside canonical_domain) seen from both sides."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any, Callable

import pytest
from cryptography import x509
from cryptography.hazmat.primitives.asymmetric import ec
from grpclib.exceptions import GRPCError

from spire_py.agent.attestor import make_csr
from spire_py.agent.client import ServerClient
from spire_py.agent.plugins.nodeattestor.sshpop import SshPopAttestor
from spire_py.common.plugin import PluginContext
from spire_py.common.spiffeid import TrustDomain
from spire_py.proto.spire.api.server.agent.v1 import agent_pb2
from spire_py.proto.spire.api.types import attestation_pb2

from tests.integration.helpers.harness import TD, WORKLOAD, AgentHandle, ServerHandle, wait_for
from tests.integration.helpers.pki import SshCA, new_host_key, ssh_fingerprint, write_ssh_host

UID = os.getuid()
HOSTNAME_TEMPLATE = "/{{ .PluginName }}/{{ .Hostname }}"


def server_plugin(ca: SshCA, **extra: str) -> str:
    body = " ".join(f'{k} = "{v}"' for k, v in extra.items())
    return f'NodeAttestor "sshpop" {{ plugin_data {{ cert_authorities = ["{ca.line}"] {body} }} }}'


def fetch(sock: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, WORKLOAD, str(UID), sock, "fetch"], capture_output=True, text=True,
                          timeout=60)


def agent_json(server: ServerHandle, agent_id: str) -> dict[str, Any]:
    return json.loads(server.cli("agent", "show", "-spiffeID", agent_id, "-output", "json").stdout)


def agent_exit_log(agent: AgentHandle, timeout: float = 60) -> str:
    wait_for(lambda: not agent.proc.alive(), timeout, "the agent to give up")
    code = agent.proc.stop()
    logs = agent.proc.logs()
    assert code == 1, f"agent exited with {code}:\n{logs}"
    return logs


class Hosts:
    """SSH host credentials on disk, one directory per host."""

    def __init__(self, d: Path, ca: SshCA) -> None:
        self.dir, self.ca = d, ca

    def host(self, name: str, principals: tuple[str, ...] = (), signer: SshCA | None = None,
             **kw: Any) -> tuple[bytes, str]:
        """(certificate line, agent NodeAttestor block) for a host."""
        key = new_host_key()
        line = (signer or self.ca).certify(key, principals or (f"{name}.{TD}",), **kw)
        key_path, cert_path = write_ssh_host(self.dir / name, key, line)
        return line, (f'NodeAttestor "sshpop" {{ plugin_data {{ host_key_path = "{key_path}" '
                      f'host_cert_path = "{cert_path}" }} }}')


@pytest.fixture
def hosts(tmp_path: Path) -> Hosts:
    return Hosts(tmp_path / "ssh", SshCA.generate())


@pytest.fixture
def sshpop_server(make_server: Callable[..., ServerHandle], hosts: Hosts) -> ServerHandle:
    """Agents named by host name, as an operator with a canonical domain would set it up."""
    return make_server(extra_plugins=server_plugin(hosts.ca, canonical_domain=TD,
                                                   agent_path_template=HOSTNAME_TEMPLATE))


# --- attestation -----------------------------------------------------------------------------

def test_agent_id_is_the_certificate_fingerprint_by_default(make_server, start_agent, hosts):
    server = make_server(extra_plugins=server_plugin(hosts.ca))
    line, conf = hosts.host("node1")
    start_agent(server, node_attestor=conf)
    agent_id = f"spiffe://{TD}/spire/agent/sshpop/{ssh_fingerprint(line)}"
    shown = agent_json(server, agent_id)
    assert shown["attestation_type"] == "sshpop"
    assert shown["can_reattest"] is True
    assert shown.get("selectors", []) == []  # SPIRE's sshpop reports no selectors


def test_hosts_get_hostname_ids_and_a_workload_entry_reaches_its_node_only(sshpop_server, start_agent, hosts):
    server = sshpop_server
    _, conf1 = hosts.host("node1")
    _, conf2 = hosts.host("node2")
    node1_id, node2_id = f"spiffe://{TD}/spire/agent/sshpop/node1", f"spiffe://{TD}/spire/agent/sshpop/node2"
    server.cli("entry", "create", "-parentID", node1_id, "-spiffeID", f"spiffe://{TD}/db",
               "-selector", f"unix:uid:{UID}")
    agent1 = start_agent(server, node_attestor=conf1)
    agent2 = start_agent(server, node_attestor=conf2)
    assert agent_json(server, node1_id)["attestation_type"] == "sshpop"
    assert agent_json(server, node2_id)["attestation_type"] == "sshpop"

    wait_for(lambda: fetch(agent1.socket).returncode == 0, 30, "the workload SVID on node1")
    assert json.loads(fetch(agent1.socket).stdout)["spiffe_id"] == f"spiffe://{TD}/db"
    refused = fetch(agent2.socket)
    assert refused.returncode != 0
    assert "PERMISSION_DENIED" in refused.stderr or "no identity issued" in refused.stderr, refused.stderr


# --- refusals ----------------------------------------------------------------------------------

REFUSALS = {
    "untrusted_ca": ({"signer": "rogue"}, "no authorities for hostname"),
    "expired": ({"expired": True}, "cert has expired"),
    "user_cert": ({"user": True}, "certificate presented as a host key has type 1"),
    "outside_canonical_domain": ({"principals": ("node1.evil.org",)},
                                 'cert principal is not in domain ".example.org"'),
}


@pytest.mark.parametrize("case", sorted(REFUSALS))
def test_refused_host_certificate(sshpop_server, start_agent, hosts, case):
    kw, reason = REFUSALS[case]
    kw = dict(kw)
    if kw.get("signer") == "rogue":
        kw["signer"] = SshCA.generate()
    _, conf = hosts.host("node1", **kw)
    agent = start_agent(sshpop_server, node_attestor=conf, wait=False)
    logs = agent_exit_log(agent)
    assert "attestation refused by server: PERMISSION_DENIED" in logs, logs
    assert reason in logs, logs
    server_logs = sshpop_server.proc.logs()
    failed = [ln for ln in server_logs.splitlines() if "Agent attestation failed" in ln]
    assert failed and reason.replace('"', '\\"') in failed[-1], server_logs  # logfmt escapes quotes
    assert json.loads(sshpop_server.cli("agent", "list", "-output", "json").stdout).get("agents", []) == []


def test_host_key_not_matching_the_certificate_is_refused_by_the_agent(sshpop_server, start_agent, hosts):
    _, conf = hosts.host("node1")
    other_line, _ = hosts.host("other")
    # node1's key with other's certificate.
    (hosts.dir / "node1" / "ssh_host_ed25519_key-cert.pub").write_bytes(other_line)
    agent = start_agent(sshpop_server, node_attestor=conf, wait=False)
    logs = agent_exit_log(agent)
    assert "does not match the certificate" in logs


async def _attest_raw(server: ServerHandle, payload: bytes,
                      answer: Callable[[bytes], Any]) -> agent_pb2.AttestAgentResponse:
    """AttestAgent against the real server with ``payload``, answering its challenge with ``answer``."""
    roots = x509.load_pem_x509_certificates(server.cli("bundle", "show", "-format", "pem").stdout.encode())
    client = ServerClient("127.0.0.1", server.port, TrustDomain(TD), roots)
    req = agent_pb2.AttestAgentRequest(params=agent_pb2.AttestAgentRequest.Params(
        data=attestation_pb2.AttestationData(type="sshpop", payload=payload),
        params=agent_pb2.AgentX509SVIDParams(csr=make_csr(ec.generate_private_key(ec.SECP256R1()))),
    ))
    try:
        async with client.agent.AttestAgent.open(timeout=30) as stream:
            await stream.send_message(req)
            resp = await stream.recv_message()
            assert resp is not None and not resp.HasField("result")
            reply = await answer(bytes(resp.challenge))
            await stream.send_message(agent_pb2.AttestAgentRequest(challenge_response=reply))
            result = await stream.recv_message()
            await stream.end()
            return result
    finally:
        client.close()


async def test_replayed_challenge_response_is_refused(sshpop_server, hosts):
    hosts.host("node1")
    host = SshPopAttestor.configure(
        {"host_key_path": str(hosts.dir / "node1" / "ssh_host_ed25519_key"),
         "host_cert_path": str(hosts.dir / "node1" / "ssh_host_ed25519_key-cert.pub")},
        PluginContext(TD, side="agent"))
    payload = await host.payload()
    captured: list[bytes] = []

    async def honest(challenge: bytes) -> bytes:
        captured.append(await host.respond(challenge))
        return captured[-1]

    async def replay(_challenge: bytes) -> bytes:
        return captured[0]

    assert (await _attest_raw(sshpop_server, payload, honest)).HasField("result")
    # The server's next nonce differs: the recorded answer signs a stale one.
    with pytest.raises(GRPCError) as ei:
        await _attest_raw(sshpop_server, payload, replay)
    assert "failed to verify signature" in ei.value.message, ei.value.message
    failed = [ln for ln in sshpop_server.proc.logs().splitlines() if "Agent attestation failed" in ln]
    assert failed and "failed to verify signature" in failed[-1], sshpop_server.proc.logs()
