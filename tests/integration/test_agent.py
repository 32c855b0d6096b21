"""spire-agent end to end: real server and agent processes, py-spiffe as the workload's client."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time

import jwt as pyjwt
import pytest
from cryptography import x509
from grpclib.client import Channel
from grpclib.const import Status
from grpclib.exceptions import GRPCError
from spiffe import WorkloadApiClient

from spire_py.common.x509util import verify_chain
from spire_py.proto.workload import workload_grpc, workload_pb2

from tests.integration.helpers.harness import TD, WORKLOAD, free_port, wait_for

NOBODY = 65534
ROOT_ONLY = pytest.mark.skipif(os.getuid() != 0, reason="needs root to run a workload as another uid")


def workload(uid: int, sock: str, *args: str, timeout: float = 60) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, WORKLOAD, str(uid), sock, *args], capture_output=True, text=True,
                          timeout=timeout)


def fetch(uid: int, sock: str) -> dict:
    proc = workload(uid, sock, "fetch")
    assert proc.returncode == 0, proc.stderr
    return json.loads(proc.stdout)


@pytest.fixture
def node(spire_server, start_agent):
    """A server, an agent attested with a join token, entries for uid 0 and nobody."""
    token = spire_server.token()
    agent_id = f"spiffe://{TD}/spire/agent/join_token/{token}"
    for uid, name in ((os.getuid(), "me"), (NOBODY, "nobody")):
        spire_server.cli("entry", "create", "-parentID", agent_id, "-spiffeID", f"spiffe://{TD}/{name}",
                         "-selector", f"unix:uid:{uid}", "-x509SVIDTTL", "120")
    agent = start_agent(spire_server, token)
    try:
        wait_for(lambda: workload(os.getuid(), agent.socket, "fetch", timeout=30).returncode == 0, 60, "first SVID")
    except AssertionError:
        raise AssertionError(workload(os.getuid(), agent.socket, "fetch", timeout=30).stderr[-2000:]
                             + "\nagent log:\n" + agent.proc.logs()[-5000:]) from None
    return spire_server, agent, agent_id


def test_py_spiffe_gets_registered_svid_chaining_to_bundle_and_jwt(node):
    server, agent, _ = node
    got = fetch(os.getuid(), agent.socket)
    assert got["spiffe_id"] == f"spiffe://{TD}/me"
    chain = x509.load_pem_x509_certificates(got["chain"].encode())
    roots = x509.load_pem_x509_certificates(got["bundle"].encode())
    server_roots = x509.load_pem_x509_certificates(server.cli("bundle", "show", "-format", "pem").stdout.encode())
    assert {r.fingerprint(r.signature_hash_algorithm) for r in roots} == {
        r.fingerprint(r.signature_hash_algorithm) for r in server_roots}
    verify_chain(chain[0], chain[1:], roots)

    client = WorkloadApiClient(f"unix://{agent.socket}", default_timeout=20)
    try:
        bundles = client.fetch_x509_bundles()
        assert bundles.get_bundle_for_trust_domain(
            __import__("spiffe").TrustDomain(TD)).x509_authorities
        # JWT-SVID: validated by the agent, and offline with the JWT bundle.
        validated = client.validate_jwt_svid(got["jwt"], "test-audience")
        assert str(validated.spiffe_id) == f"spiffe://{TD}/me"
        jwt_bundles = client.fetch_jwt_bundles()
        bundle = jwt_bundles.get_bundle_for_trust_domain(__import__("spiffe").TrustDomain(TD))
        kid = pyjwt.get_unverified_header(got["jwt"])["kid"]
        claims = pyjwt.decode(got["jwt"], bundle.get_jwt_authority(kid), algorithms=["ES256", "RS256", "ES384"],
                              audience="test-audience")
        assert claims["sub"] == f"spiffe://{TD}/me"
        with pytest.raises(Exception):
            client.validate_jwt_svid(got["jwt"], "another-audience")
    finally:
        client.close()


@ROOT_ONLY
def test_two_uids_get_different_svids_and_do_mtls_with_them(node):
    _, agent, _ = node
    mine, theirs = fetch(os.getuid(), agent.socket), fetch(NOBODY, agent.socket)
    assert theirs["uid"] == NOBODY
    assert mine["spiffe_id"] == f"spiffe://{TD}/me" and theirs["spiffe_id"] == f"spiffe://{TD}/nobody"
    port = str(free_port())
    srv = subprocess.Popen([sys.executable, WORKLOAD, str(os.getuid()), agent.socket, "serve", port,
                            f"spiffe://{TD}/nobody"], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        assert srv.stdout.readline().strip() == "listening"
        cli = workload(NOBODY, agent.socket, "connect", port, f"spiffe://{TD}/me")
        assert cli.returncode == 0, cli.stderr
        assert cli.stdout.strip() == f"hello spiffe://{TD}/nobody from spiffe://{TD}/me"
        assert srv.wait(30) == 0, srv.stderr.read()
    finally:
        srv.kill()


async def _raw_fetch(sock: str, metadata: dict | None) -> None:
    ch = Channel(path=sock)
    try:
        async with workload_grpc.SpiffeWorkloadAPIStub(ch).FetchX509SVID.open(metadata=metadata) as stream:
            await stream.send_message(workload_pb2.X509SVIDRequest(), end=True)
            await stream.recv_message()
    finally:
        ch.close()


async def test_missing_header_is_invalid_argument(node):
    _, agent, _ = node
    with pytest.raises(GRPCError) as ei:
        await _raw_fetch(agent.socket, None)
    assert ei.value.status == Status.INVALID_ARGUMENT


@ROOT_ONLY
def test_unregistered_uid_is_permission_denied(node):
    _, agent, _ = node
    proc = workload(NOBODY - 1, agent.socket, "fetch", timeout=60)
    assert proc.returncode != 0
    assert "PERMISSION_DENIED" in proc.stderr or "no identity issued" in proc.stderr


def test_entry_delete_removes_the_svid_within_a_sync(node):
    server, agent, agent_id = node
    shown = json.loads(server.cli("entry", "show", "-spiffeID", f"spiffe://{TD}/me", "-output", "json").stdout)
    entry_id = shown["entries"][0]["id"]
    server.cli("entry", "delete", "-entryID", entry_id)
    wait_for(lambda: workload(os.getuid(), agent.socket, "fetch", timeout=30).returncode != 0, 20,
             "the SVID to be withdrawn")


def test_rotation_delivers_a_new_svid_before_the_old_expires(spire_server, start_agent):
    token = spire_server.token()
    agent_id = f"spiffe://{TD}/spire/agent/join_token/{token}"
    spire_server.cli("entry", "create", "-parentID", agent_id, "-spiffeID", f"spiffe://{TD}/short",
                     "-selector", f"unix:uid:{os.getuid()}", "-x509SVIDTTL", "20")
    agent = start_agent(spire_server, token)
    client = WorkloadApiClient(f"unix://{agent.socket}", default_timeout=20)
    seen: list[x509.Certificate] = []
    errors: list[Exception] = []

    def on_success(ctx) -> None:
        seen.append(ctx.default_svid.leaf)

    handle = client.stream_x509_contexts(on_success, errors.append)
    try:
        wait_for(lambda: len(seen) >= 1, 30, "the first SVID")
        first = seen[0]
        wait_for(lambda: any(c.serial_number != first.serial_number for c in seen), 30, "a rotated SVID")
        rotated = next(c for c in seen if c.serial_number != first.serial_number)
        arrived = time.time()
        assert arrived < first.not_valid_after_utc.timestamp(), "new SVID came after the old one expired"
        assert rotated.not_valid_after_utc > first.not_valid_after_utc
    finally:
        handle.cancel()
        client.close()


def test_agent_restart_with_kill9_keeps_serving_without_a_new_token(node):
    server, agent, agent_id = node
    agent.proc.kill9()
    # The token is spent: the agent must resume from its stored SVID and disk keys.
    agent.restart(extra_args=())
    got = fetch(os.getuid(), agent.socket)
    assert got["spiffe_id"] == f"spiffe://{TD}/me"
    listed = json.loads(server.cli("agent", "list", "-output", "json").stdout)
    assert [a["id"]["path"] for a in listed["agents"]] == [agent_id.split(TD, 1)[1]]


def test_evicted_agent_is_refused_and_stops(node):
    server, agent, agent_id = node
    server.cli("agent", "evict", "-spiffeID", agent_id)
    wait_for(lambda: not agent.proc.alive(), 30, "the evicted agent to stop")
    assert agent.proc.stop() == 1
    assert "refused" in agent.proc.logs()


def test_reused_join_token_is_refused(node, start_agent):
    server, agent, agent_id = node
    token = agent_id.rsplit("/", 1)[1]
    second = start_agent(server, token, wait=False)
    wait_for(lambda: not second.proc.alive(), 30, "the second agent to give up")
    assert second.proc.stop() == 1
    assert "join token does not exist or has already been used" in second.proc.logs()


async def test_renewed_agent_svid_replaces_the_old_one(make_server, start_agent):
    from cryptography.hazmat.primitives import serialization

    from spire_py.agent.client import ServerClient
    from spire_py.agent.storage import load_der_chain
    from spire_py.common.spiffeid import TrustDomain
    from spire_py.proto.spire.api.server.entry.v1 import entry_pb2

    # Renewal comes at half the TTL: long enough that the first call below still holds the
    # current SVID on a loaded machine (8 s was not: the CLI call alone can take seconds).
    server = make_server(extra_server='agent_ttl = "20s"')
    agent = start_agent(server, server.token())
    data = agent.dir / "data"
    old_chain = load_der_chain((data / "agent_svid.der").read_bytes())
    key_id = json.loads((data / "agent_state.json").read_text())["key_id"]
    old_key = serialization.load_pem_private_key(
        json.loads((data / "keys.json").read_text())["keys"][key_id].encode(), None)
    roots = x509.load_pem_x509_certificates(server.cli("bundle", "show", "-format", "pem").stdout.encode())

    async def call_with_old() -> None:
        client = ServerClient("127.0.0.1", server.port, TrustDomain(TD), roots, old_chain, old_key)
        try:
            await client.entry.GetAuthorizedEntries(entry_pb2.GetAuthorizedEntriesRequest(), timeout=10)
        finally:
            client.close()

    await call_with_old()  # still the current SVID
    wait_for(lambda: load_der_chain((data / "agent_svid.der").read_bytes())[0].serial_number
             != old_chain[0].serial_number, 30, "the agent SVID to be renewed")
    time.sleep(2.5)  # the agent syncs with its new SVID, which retires the old one
    with pytest.raises(GRPCError) as ei:
        await call_with_old()
    assert ei.value.status == Status.PERMISSION_DENIED
    assert agent.healthy()


def test_agent_socket_modes_and_health_listener(spire_server, start_agent):
    import stat
    import urllib.request

    port = free_port()
    agent = start_agent(spire_server, spire_server.token(), extra_agent="")
    sock_mode = stat.S_IMODE(os.stat(agent.socket).st_mode)
    dir_mode = stat.S_IMODE(os.stat(os.path.dirname(agent.socket)).st_mode)
    assert (sock_mode, dir_mode) == (0o777, 0o755)
    # health_checks is a top-level block: restart the agent with it appended.
    agent.proc.stop()
    conf = agent.conf.read_text() + (f'\nhealth_checks {{\n listener_enabled = true\n bind_address = "127.0.0.1"\n'
                                     f' bind_port = "{port}"\n}}\n')
    agent.conf.write_text(conf)
    agent.restart()
    for path in ("/live", "/ready"):
        with urllib.request.urlopen(f"http://127.0.0.1:{port}{path}", timeout=5) as r:
            assert r.status == 200
