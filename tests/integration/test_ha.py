"""Two servers of one trust domain on one PostgreSQL / MySQL database (HA).

Both servers take their CA from the same UpstreamAuthority "disk" root: each signs
with an intermediate of its own, and the trust bundle is the root (plus every
server's JWT key). They listen on 127.0.0.2 and 127.0.0.3, same port; the agent's
server_address is one host name resolving to both, as with SPIRE behind a DNS
name. The name is made to resolve for the agent process alone: it runs in a
private mount namespace with its own /etc/hosts bind-mounted (nothing on the
machine changes). Where that is not possible the test falls back to an
/etc/hosts line removed at teardown (root only), else skips.
"""

from __future__ import annotations

import datetime
import json
import os
import re
import shutil
import subprocess
import time
from pathlib import Path
from typing import Any, Iterator

import jwt as pyjwt
import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from spire_py.agent.client import server_targets
from spire_py.common.x509util import verify_chain

from tests.integration.helpers.databases import SERVER_ENGINES, engine_params
from tests.integration.helpers.harness import TD, entry_create, fetch, free_port, serial, svid_for, wait_for

HA_NAME = "spire-ha.test"
ADDRESSES = ("127.0.0.2", "127.0.0.3")
ME = os.getuid()


def test_server_address_forms() -> None:
    assert server_targets("spire.example", 8081) == [("spire.example", 8081)]
    assert server_targets("s1.example, s2.example:8082", 8081) == [("s1.example", 8081), ("s2.example", 8082)]
    assert server_targets("::1", 8081) == [("::1", 8081)]
    assert server_targets("[::1]:9000,127.0.0.2", 8081) == [("::1", 9000), ("127.0.0.2", 8081)]
    with pytest.raises(ValueError):
        server_targets(" , ", 8081)


# --- fixtures ----------------------------------------------------------------


def make_root(d: Path) -> tuple[Path, Path]:
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "ha-root"), x509.NameAttribute(NameOID.ORGANIZATION_NAME, "spire_py tests")])
    now = datetime.datetime.now(datetime.timezone.utc)
    cert = (
        x509.CertificateBuilder().subject_name(name).issuer_name(name).public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5)).not_valid_after(now + datetime.timedelta(days=2))
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .add_extension(x509.KeyUsage(False, False, False, False, False, True, True, False, False), critical=True)
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), critical=False)
        .sign(key, hashes.SHA256())
    )
    crt, pem = d / "root.crt", d / "root.key"
    crt.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    pem.write_bytes(key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                      serialization.NoEncryption()))
    pem.chmod(0o600)
    return crt, pem


def _unshare_works() -> bool:
    if not shutil.which("unshare"):
        return False
    probe = subprocess.run(["unshare", "-m", "--propagation", "private", "sh", "-c",
                            "mount --bind /etc/hostname /etc/hostname"], capture_output=True, timeout=10)
    return probe.returncode == 0


@pytest.fixture
def ha_name(tmp_path: Path) -> Iterator[tuple[str, ...]]:
    """The command prefix under which HA_NAME resolves to both servers' addresses."""
    lines = "".join(f"{a} {HA_NAME}\n" for a in ADDRESSES)
    if _unshare_works():
        hosts = tmp_path / "hosts"
        hosts.write_text(Path("/etc/hosts").read_text() + lines)
        hosts.chmod(0o644)
        yield ("unshare", "-m", "--propagation", "private", "sh", "-c",
               'mount --bind "$0" /etc/hosts && exec "$@"', str(hosts))
        return
    if os.getuid() != 0:
        pytest.skip("cannot make a host name resolve to two addresses (no unshare -m, not root)")
    original = Path("/etc/hosts").read_text()
    Path("/etc/hosts").write_text(original + lines)
    try:
        yield ()
    finally:
        Path("/etc/hosts").write_text(original)


@pytest.fixture(params=engine_params(SERVER_ENGINES))
def ha(request: pytest.FixtureRequest, tmp_path: Path, make_database: Any, make_server: Any) -> dict[str, Any]:  # noqa: F811
    """Two servers on one database, one upstream root."""
    db = make_database(request.param)
    crt, key = make_root(tmp_path)
    upstream = f'UpstreamAuthority "disk" {{ plugin_data {{ cert_file_path = "{crt}"\nkey_file_path = "{key}" }} }}'
    port = free_port()
    servers = [make_server(datastore=db.datastore(), extra_plugins=upstream, bind_address=a, port=port,
                           extra_server='ca_ttl = "1h"\n    default_x509_svid_ttl = "1h"') for a in ADDRESSES]
    root = x509.load_pem_x509_certificate(crt.read_bytes())
    return {"db": db, "servers": servers, "root": root, "port": port}


def connected_to(agent: Any) -> str:
    """The server address the agent's last new connection went to (its log says)."""
    found = re.findall(r"Connected to (?:another )?server.*?address[=\"': ]+([0-9.]+):\d+", agent.proc.logs())
    assert found, agent.proc.logs()[-3000:]
    return found[-1]


# --- tests -------------------------------------------------------------------


@pytest.mark.timeout(240)
def test_two_servers_share_one_database_and_one_root(ha: dict[str, Any], start_agent: Any, ha_name: tuple[str, ...]) -> None:
    a, b = ha["servers"]
    root = ha["root"]
    fp = root.fingerprint(hashes.SHA256())

    # The bundle, from either server, is the shared root; it carries both servers' JWT keys.
    for s in (a, b):
        roots = x509.load_pem_x509_certificates(s.cli("bundle", "show", "-format", "pem").stdout.encode())
        assert [r.fingerprint(hashes.SHA256()) for r in roots] == [fp]
    store = ha["db"].store()
    try:
        wait_for(lambda: len(store.fetch_bundle(f"spiffe://{TD}").jwt_authorities) >= 2, 30, "both JWT keys")
        jwt_keys = {k.key_id: k for k in store.fetch_bundle(f"spiffe://{TD}").jwt_authorities}
    finally:
        store.close()

    # A join token made on A is accepted once: by B here...
    token = a.token()
    agent_b_id = f"spiffe://{TD}/spire/agent/join_token/{token}"
    entry_create(a, agent_b_id, f"spiffe://{TD}/via-b", "-selector", f"unix:uid:{ME}")
    agent_b = start_agent(b, token, server_address=ADDRESSES[1])
    # ...entries written through A are served through B...
    got = svid_for(agent_b.socket, f"spiffe://{TD}/via-b", 30)
    chain = x509.load_pem_x509_certificates(got["chain"].encode())
    verify_chain(chain[0], chain[1:], [root])
    # ...and B's JWT-SVIDs verify with the shared bundle.
    kid = pyjwt.get_unverified_header(got["jwt"])["kid"]
    assert kid in jwt_keys
    pub = serialization.load_der_public_key(jwt_keys[kid].public_key)
    assert pyjwt.decode(got["jwt"], pub, algorithms=["ES256", "ES384", "RS256"], audience="test-audience")["sub"] \
        == f"spiffe://{TD}/via-b"
    # ...and not a second time, through either server.
    again = start_agent(a, token, server_address=ADDRESSES[0], wait=False)
    wait_for(lambda: not again.proc.alive(), 30, "second use of the token refused")
    assert again.proc.proc.returncode != 0

    # An entry created on B after the agent synced reaches it within a sync or two.
    entry_b = entry_create(b, agent_b_id, f"spiffe://{TD}/via-b-2", "-selector", f"unix:uid:{ME}")
    a.cli("entry", "delete", "-entryID", json.loads(a.cli("entry", "show", "-spiffeID", f"spiffe://{TD}/via-b",
                                                        "-output", "json").stdout)["entries"][0]["id"])
    t0 = time.monotonic()
    svid_for(agent_b.socket, f"spiffe://{TD}/via-b-2", 20)
    assert time.monotonic() - t0 < 10
    assert entry_b


@pytest.mark.timeout(240)
def test_agent_fails_over_when_its_server_is_killed(ha: dict[str, Any], start_agent: Any,
                                                     ha_name: tuple[str, ...]) -> None:
    a, b = ha["servers"]
    by_address = {s.bind_address: s for s in (a, b)}
    token = a.token()
    agent_id = f"spiffe://{TD}/spire/agent/join_token/{token}"
    # A short TTL: the agent must mint a new SVID every few seconds, through a server.
    entry_create(a, agent_id, f"spiffe://{TD}/rotating", "-selector", f"unix:uid:{ME}", "-x509SVIDTTL", "8")
    agent = start_agent(a, token, server_address=HA_NAME, prefix=ha_name)
    first = svid_for(agent.socket, f"spiffe://{TD}/rotating", 60)

    victim = connected_to(agent)
    survivor = next(addr for addr in ADDRESSES if addr != victim)
    by_address[victim].proc.kill9()

    # SVIDs keep rotating, through the other server, and chain to the shared root.
    seen = {serial(first)}
    deadline = time.monotonic() + 60
    while len(seen) < 4 and time.monotonic() < deadline:
        doc = fetch(agent.socket)
        if doc:
            chain = x509.load_pem_x509_certificates(doc["chain"].encode())
            assert chain[0].not_valid_after_utc.timestamp() > time.time(), "workload got an expired SVID"
            verify_chain(chain[0], chain[1:], [ha["root"]])
            seen.add(chain[0].serial_number)
        time.sleep(1)
    assert len(seen) >= 4, f"SVID stopped rotating after the kill:\n{agent.proc.logs()[-4000:]}"
    assert connected_to(agent) == survivor
    # The survivor serves new entries too.
    entry_create(by_address[survivor], agent_id, f"spiffe://{TD}/after-kill", "-selector", f"unix:uid:{ME}",
                 "-x509SVIDTTL", "8")
    assert agent.proc.alive()


def _signing_ca(server: Any) -> bytes:
    """The authority key ID of an SVID the server mints now: which CA signs there."""
    out = server.cli("x509", "mint", "-spiffeID", f"spiffe://{TD}/probe").stdout
    leaf = x509.load_pem_x509_certificates(out.encode())[0]
    return leaf.extensions.get_extension_for_class(x509.AuthorityKeyIdentifier).value.key_identifier


@pytest.mark.timeout(240)
@pytest.mark.parametrize("engine", engine_params(SERVER_ENGINES))
def test_each_server_resumes_its_own_ca_after_a_restart(engine: str, make_database: Any,  # noqa: F811
                                                         make_server: Any) -> None:
    """Each server keeps its journal under its own CA's authority ID: a restart resumes its CA."""
    db = make_database(engine)
    disk_km = 'KeyManager "disk" { plugin_data { keys_path = "{dir}/keys.json" } }'
    port = free_port()
    servers = [make_server(datastore=db.datastore(), keymanager=disk_km, bind_address=a, port=port) for a in ADDRESSES]
    before = [_signing_ca(s) for s in servers]
    assert before[0] != before[1]  # self-signed: one CA each, both in the shared bundle
    roots = servers[0].cli("bundle", "show", "-format", "pem").stdout.count("BEGIN CERTIFICATE")
    jwt_keys = len(json.loads(servers[0].cli("bundle", "show", "-output", "json").stdout)["jwt_authorities"])
    for i in (1, 0):
        servers[i].proc.stop()
        servers[i].restart()
        assert _signing_ca(servers[i]) == before[i], f"server {i} came back with a new CA"
    # No new authority was minted by either restart.
    assert servers[1].cli("bundle", "show", "-format", "pem").stdout.count("BEGIN CERTIFICATE") == roots
    assert len(json.loads(servers[1].cli("bundle", "show", "-output", "json").stdout)["jwt_authorities"]) == jwt_keys


@pytest.mark.timeout(240)
@pytest.mark.parametrize("engine", engine_params(["postgres"]))
def test_agent_leaves_a_server_that_hangs(engine: str, make_database: Any, make_server: Any,  # noqa: F811
                                          start_agent: Any, ha_name: tuple[str, ...], tmp_path: Path) -> None:
    """A stopped (SIGSTOP) server keeps its connections open: the agent's timed-out request makes
    it abandon that server and carry on through the other."""
    import signal as _signal

    db = make_database(engine)
    crt, key = make_root(tmp_path)
    upstream = f'UpstreamAuthority "disk" {{ plugin_data {{ cert_file_path = "{crt}"\nkey_file_path = "{key}" }} }}'
    port = free_port()
    servers = [make_server(datastore=db.datastore(), extra_plugins=upstream, bind_address=a, port=port)
               for a in ADDRESSES]
    by_address = {s.bind_address: s for s in servers}
    token = servers[0].token()
    agent_id = f"spiffe://{TD}/spire/agent/join_token/{token}"
    entry_create(servers[0], agent_id, f"spiffe://{TD}/before", "-selector", f"unix:uid:{ME}")
    agent = start_agent(servers[0], token, server_address=HA_NAME, prefix=ha_name)
    svid_for(agent.socket, f"spiffe://{TD}/before", 60)

    victim = connected_to(agent)
    survivor = next(addr for addr in ADDRESSES if addr != victim)
    hung = by_address[victim].proc.proc
    hung.send_signal(_signal.SIGSTOP)
    try:
        # Registered through the survivor while the victim hangs: it reaches the workload only
        # if the agent gives up on the victim (one request timeout, 30 s) and syncs elsewhere.
        entry_create(by_address[survivor], agent_id, f"spiffe://{TD}/after-hang", "-selector", f"unix:uid:{ME}")
        svid_for(agent.socket, f"spiffe://{TD}/after-hang", 90)
        assert connected_to(agent) == survivor
        assert "Server did not answer in time" in agent.proc.logs()
        assert agent.proc.alive()
    finally:
        hung.send_signal(_signal.SIGCONT)


def _agent_via(server: Any, token: str, root: x509.Certificate) -> Any:
    """A join-token agent attested through ``server``, as spire-agent does; its mTLS client to it."""
    import asyncio

    from spire_py.agent.attestor import attest
    from spire_py.agent.client import ServerClient
    from spire_py.agent.plugins.nodeattestor.join_token import JoinTokenAttestor
    from spire_py.common.keys import generate_key
    from spire_py.common.spiffeid import TrustDomain

    async def go() -> Any:
        key = generate_key("ec-p256")
        boot = ServerClient(server.bind_address, server.port, TrustDomain(TD), [root])
        try:
            chain, _ = await attest(boot, JoinTokenAttestor(token), key, TrustDomain(TD))
        finally:
            boot.close()
        return chain, key

    chain, key = asyncio.run(go())
    return lambda: ServerClient(server.bind_address, server.port, TrustDomain(TD), [root], chain, key)


def _sync_status(make_client: Any) -> str:
    """OK, or the gRPC status of the agent's GetAuthorizedEntries (a new connection each time)."""
    import asyncio

    from grpclib.exceptions import GRPCError

    from spire_py.proto.spire.api.server.entry.v1 import entry_pb2

    async def go() -> str:
        client = make_client()
        try:
            await client.entry.GetAuthorizedEntries(entry_pb2.GetAuthorizedEntriesRequest())
            return "OK"
        except GRPCError as exc:
            return f"{exc.status.name}: {exc.message}"
        finally:
            client.close()

    return asyncio.run(go())


@pytest.mark.timeout(120)
def test_a_ban_or_eviction_on_one_server_is_honoured_by_the_other(ha: dict[str, Any]) -> None:
    """Each server remembers agents' nodes; the other server's ban and eviction arrive through the
    node events (read at most every second), and on the server that wrote them at once."""
    a, b = ha["servers"]
    banned_token, evicted_token = a.token(), a.token()
    banned = _agent_via(b, banned_token, ha["root"])
    evicted = _agent_via(b, evicted_token, ha["root"])
    for client in (banned, evicted):
        assert _sync_status(client) == "OK" and _sync_status(client) == "OK"  # B now remembers them
    a.cli("agent", "ban", "-spiffeID", f"spiffe://{TD}/spire/agent/join_token/{banned_token}")
    a.cli("agent", "evict", "-spiffeID", f"spiffe://{TD}/spire/agent/join_token/{evicted_token}")
    wait_for(lambda: _sync_status(banned) != "OK", 15, "server B refusing the agent banned on A")
    assert _sync_status(banned) == "PERMISSION_DENIED: agent is banned"
    wait_for(lambda: _sync_status(evicted) != "OK", 15, "server B refusing the agent evicted on A")
    assert _sync_status(evicted) == "PERMISSION_DENIED: agent is not attested"
