"""x509pop end to end: real spire-server and spire-agent processes attesting with X.509
certificates made here, node alias entries keyed on x509pop selectors, refusals seen from
both sides, and re-attestation after the agent SVID expired during a server outage."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path
from typing import Any, Callable

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec
from grpclib.exceptions import GRPCError

from spire_py.agent.attestor import make_csr
from spire_py.agent.client import ServerClient
from spire_py.agent.storage import AgentStorage
from spire_py.common.plugins import x509pop as pop
from spire_py.common.spiffeid import TrustDomain
from spire_py.proto.spire.api.server.agent.v1 import agent_pb2
from spire_py.proto.spire.api.types import attestation_pb2

from tests.integration.helpers.harness import TD, WORKLOAD, AgentHandle, ServerHandle, wait_for
from tests.integration.helpers.pki import X509Identity, make_ca, make_node_cert, serial_hex, sha1_fingerprint

UID = os.getuid()
DISK_KM = 'KeyManager "disk" { plugin_data { keys_path = "{dir}/data/keys.json" } }'


def server_plugin(ca_bundle: Path) -> str:
    return f'NodeAttestor "x509pop" {{ plugin_data {{ ca_bundle_path = "{ca_bundle}" }} }}'


def agent_plugin(cert: Path, key: Path) -> str:
    return (f'NodeAttestor "x509pop" {{ plugin_data {{ certificate_path = "{cert}" '
            f'private_key_path = "{key}" }} }}')


def fetch(sock: str, uid: int = UID) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, WORKLOAD, str(uid), sock, "fetch"], capture_output=True, text=True,
                          timeout=60)


def agent_json(server: ServerHandle, agent_id: str) -> dict[str, Any]:
    return json.loads(server.cli("agent", "show", "-spiffeID", agent_id, "-output", "json").stdout)


def selectors_of(shown: dict[str, Any]) -> set[str]:
    return {f'{s["type"]}:{s["value"]}' for s in shown.get("selectors", [])}


def agent_exit_log(agent: AgentHandle, timeout: float = 60) -> str:
    wait_for(lambda: not agent.proc.alive(), timeout, "the agent to give up")
    code = agent.proc.stop()
    logs = agent.proc.logs()
    assert code == 1, f"agent exited with {code}:\n{logs}"
    return logs


class PKI:
    def __init__(self, d: Path) -> None:
        self.dir = d
        self.ca = make_ca("Node CA")
        self.bundle = d / "node-ca.pem"
        d.mkdir(parents=True, exist_ok=True)
        self.bundle.write_bytes(self.ca.cert.public_bytes(serialization.Encoding.PEM))

    def node(self, cn: str, **kw: Any) -> tuple[X509Identity, str]:
        ident = make_node_cert(self.ca, cn, **kw)
        cert, key = ident.write(self.dir, cn)
        return ident, agent_plugin(cert, key)


@pytest.fixture
def pki(tmp_path: Path) -> PKI:
    return PKI(tmp_path / "pki")


@pytest.fixture
def x509pop_server(make_server: Callable[..., ServerHandle], pki: PKI) -> ServerHandle:
    return make_server(extra_plugins=server_plugin(pki.bundle))


def x509pop_id(ident: X509Identity) -> str:
    return f"spiffe://{TD}/spire/agent/x509pop/{sha1_fingerprint(ident.cert)}"


# --- attestation, selectors, node aliases ---------------------------------------------------

def test_agents_get_fingerprint_ids_and_x509pop_selectors(x509pop_server, start_agent, pki):
    server = x509pop_server
    node1, conf1 = pki.node("node1")
    node2, conf2 = pki.node("node2")
    start_agent(server, node_attestor=conf1)
    start_agent(server, node_attestor=conf2)

    for ident, cn in ((node1, "node1"), (node2, "node2")):
        shown = agent_json(server, x509pop_id(ident))
        assert shown["attestation_type"] == "x509pop"
        assert shown["can_reattest"] is True
        assert selectors_of(shown) == {
            f"x509pop:subject:cn:{cn}",
            f"x509pop:ca:fingerprint:{sha1_fingerprint(pki.ca.cert)}",
            f"x509pop:serialnumber:{serial_hex(ident.cert)}",
        }
    listed = json.loads(server.cli("agent", "list", "-output", "json").stdout)
    assert sorted(f'spiffe://{a["id"]["trust_domain"]}{a["id"]["path"]}' for a in listed["agents"]) == sorted(
        [x509pop_id(node1), x509pop_id(node2)])
    assert "Agent attestation request completed" in server.proc.logs()


def test_node_alias_entry_reaches_the_workload_on_that_node_only(x509pop_server, start_agent, pki):
    server = x509pop_server
    _, conf1 = pki.node("node1")
    _, conf2 = pki.node("node2")
    alias = f"spiffe://{TD}/node1-alias"
    server.cli("entry", "create", "-node", "-spiffeID", alias, "-selector", "x509pop:subject:cn:node1")
    server.cli("entry", "create", "-parentID", alias, "-spiffeID", f"spiffe://{TD}/web",
               "-selector", f"unix:uid:{UID}")
    agent1 = start_agent(server, node_attestor=conf1)
    agent2 = start_agent(server, node_attestor=conf2)

    wait_for(lambda: fetch(agent1.socket).returncode == 0, 30, "the workload SVID on node1")
    got = json.loads(fetch(agent1.socket).stdout)
    assert got["spiffe_id"] == f"spiffe://{TD}/web"
    leaf = x509.load_pem_x509_certificates(got["chain"].encode())[0]
    assert leaf.not_valid_after_utc.timestamp() > time.time()

    # node2 synced the same entries (several sync intervals) and still has nothing for this workload.
    time.sleep(3)
    refused = fetch(agent2.socket)
    assert refused.returncode != 0
    assert "PERMISSION_DENIED" in refused.stderr or "no identity issued" in refused.stderr, refused.stderr


# --- refusals ---------------------------------------------------------------------------------

def test_certificate_from_an_untrusted_ca_is_refused(x509pop_server, start_agent, tmp_path):
    rogue = PKI(tmp_path / "rogue")
    _, conf = rogue.node("node1")
    agent = start_agent(x509pop_server, node_attestor=conf, wait=False)
    logs = agent_exit_log(agent)
    assert "attestation refused by server: PERMISSION_DENIED" in logs
    assert "certificate verification failed" in logs
    wait_for(lambda: "certificate verification failed" in x509pop_server.proc.logs(), 10, "the server's reason")
    assert "Agent attestation failed" in x509pop_server.proc.logs()
    assert json.loads(x509pop_server.cli("agent", "list", "-output", "json").stdout).get("agents", []) == []


def test_expired_certificate_is_refused(x509pop_server, start_agent, pki):
    _, conf = pki.node("node1", expired=True)
    agent = start_agent(x509pop_server, node_attestor=conf, wait=False)
    logs = agent_exit_log(agent)
    assert "attestation refused by server: PERMISSION_DENIED" in logs
    assert "certificate verification failed" in logs and "expired" in logs.lower(), logs
    server_logs = x509pop_server.proc.logs()
    assert "certificate verification failed" in server_logs and "expired" in server_logs.lower()


def test_private_key_not_matching_the_certificate_is_refused_by_the_agent(x509pop_server, start_agent, pki):
    node1, _ = pki.node("node1")
    other = make_node_cert(pki.ca, "other")
    cert, _ = node1.write(pki.dir, "mismatch")
    _, wrong_key = other.write(pki.dir, "other")
    agent = start_agent(x509pop_server, node_attestor=agent_plugin(cert, wrong_key), wait=False)
    logs = agent_exit_log(agent)
    assert "private key does not match the public key" in logs


async def _attest_raw(server: ServerHandle, ident: X509Identity,
                      answer: Callable[[bytes], bytes]) -> agent_pb2.AttestAgentResponse:
    """AttestAgent against the real server, answering its challenge with ``answer``."""
    roots = x509.load_pem_x509_certificates(server.cli("bundle", "show", "-format", "pem").stdout.encode())
    client = ServerClient("127.0.0.1", server.port, TrustDomain(TD), roots)
    der = ident.cert.public_bytes(serialization.Encoding.DER)
    req = agent_pb2.AttestAgentRequest(params=agent_pb2.AttestAgentRequest.Params(
        data=attestation_pb2.AttestationData(type="x509pop", payload=pop.marshal_attestation_data([der])),
        params=agent_pb2.AgentX509SVIDParams(csr=make_csr(ec.generate_private_key(ec.SECP256R1()))),
    ))
    try:
        async with client.agent.AttestAgent.open(timeout=30) as stream:
            await stream.send_message(req)
            resp = await stream.recv_message()
            assert resp is not None and not resp.HasField("result")
            await stream.send_message(agent_pb2.AttestAgentRequest(challenge_response=answer(bytes(resp.challenge))))
            result = await stream.recv_message()
            await stream.end()
            return result
    finally:
        client.close()


async def test_challenge_signed_with_another_key_is_refused(x509pop_server, pki):
    node1, _ = pki.node("node1")
    impostor = ec.generate_private_key(ec.SECP256R1())

    def sign_with_wrong_key(challenge: bytes) -> bytes:
        return pop.marshal_response(pop.calculate_response(impostor, pop.unmarshal_challenge(challenge)))

    with pytest.raises(GRPCError) as ei:
        await _attest_raw(x509pop_server, node1, sign_with_wrong_key)
    assert "challenge response verification failed" in ei.value.message
    assert "challenge response verification failed" in x509pop_server.proc.logs()


async def test_replayed_challenge_response_is_refused(x509pop_server, pki):
    node1, _ = pki.node("node1")
    captured: list[bytes] = []

    def honest(challenge: bytes) -> bytes:
        captured.append(pop.marshal_response(pop.calculate_response(node1.key, pop.unmarshal_challenge(challenge))))
        return captured[-1]

    first = await _attest_raw(x509pop_server, node1, honest)
    assert first.HasField("result")
    # A second attestation gets a fresh nonce; the recorded answer to the first one is stale.
    with pytest.raises(GRPCError) as ei:
        await _attest_raw(x509pop_server, node1, lambda _challenge: captured[0])
    assert "challenge response verification failed" in ei.value.message


# --- re-attestation -----------------------------------------------------------------------------

def test_agent_reattests_by_itself_after_its_svid_expired_during_a_server_outage(make_server, start_agent, pki):
    # A disk KeyManager keeps the server's CA across the restart, so the agent's bundle still trusts it.
    server = make_server(extra_server='agent_ttl = "10s"', extra_plugins=server_plugin(pki.bundle),
                         keymanager=DISK_KM)
    node1, conf = pki.node("node1")
    agent_id = x509pop_id(node1)
    server.cli("entry", "create", "-parentID", agent_id, "-spiffeID", f"spiffe://{TD}/web",
               "-selector", f"unix:uid:{UID}", "-x509SVIDTTL", "10")
    agent = start_agent(server, node_attestor=conf)
    wait_for(lambda: fetch(agent.socket).returncode == 0, 30, "the first workload SVID")
    first_serial = agent_json(server, agent_id)["x509svid_serial_number"]

    server.proc.stop()
    svid_path = agent.dir / "data"
    stored = _agent_svid_expiry(svid_path)
    wait_for(lambda: time.time() > stored + 1, 30, "the agent SVID to expire while the server is down")
    assert agent.proc.alive(), agent.proc.logs()[-3000:]
    server.restart()

    def reattested() -> bool:
        return agent.proc.logs().count("Node attestation was successful") >= 2
    try:
        wait_for(reattested, 60, "the agent to attest again")
    except AssertionError:
        raise AssertionError("agent log:\n" + agent.proc.logs()[-6000:] + "\nserver log:\n"
                             + server.proc.logs()[-4000:]) from None
    wait_for(lambda: fetch(agent.socket).returncode == 0, 30, "a workload SVID after re-attestation")
    got = json.loads(fetch(agent.socket).stdout)
    leaf = x509.load_pem_x509_certificates(got["chain"].encode())[0]
    assert got["spiffe_id"] == f"spiffe://{TD}/web"
    assert leaf.not_valid_after_utc.timestamp() > time.time()
    shown = agent_json(server, agent_id)
    assert shown["x509svid_serial_number"] != first_serial
    completed = [line for line in server.proc.logs().splitlines()
                 if "Agent attestation request completed" in line and agent_id in line]
    assert len(completed) >= 2, completed
    assert agent.proc.alive()


def _agent_svid_expiry(data_dir: Path) -> float:
    """NotAfter of the agent SVID the agent stored on disk."""
    state = AgentStorage(str(data_dir)).load_state()
    assert state is not None
    return state.svid[0].not_valid_after_utc.timestamp()


def test_banned_agent_is_refused_when_it_reattests_and_stops(x509pop_server, start_agent, pki):
    server = x509pop_server
    node1, conf = pki.node("node1")
    agent = start_agent(server, node_attestor=conf)
    server.cli("agent", "ban", "-spiffeID", x509pop_id(node1))
    # Refused on its next sync, it attests again (x509pop can) and is refused for good: the ban sticks.
    logs = agent_exit_log(agent, 30)
    assert "agent is banned" in logs
    assert agent_json(server, x509pop_id(node1))["banned"] is True
