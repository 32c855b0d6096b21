"""The agent's admin socket against a real spire-server and spire-agent: the Delegated Identity
API for an authorized delegate (and not for others), the socket's mode, Debug and Logger
through `spire-agent debug getinfo` / `spire-agent logger`, and the run flags that act.

One agent serves the module: this process (uid 0) is the authorized delegate
(``unix:uid:0``); the workload it asks for runs as uid 65534 (``unix:uid:65534``).
"""

from __future__ import annotations

import asyncio
import json
import os
import re
import shutil
import stat
import subprocess
import sys
import time
from pathlib import Path
from typing import Any, Iterator

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import serialization
from grpclib.client import Channel
from grpclib.const import Status
from grpclib.exceptions import GRPCError

from spire_py.proto.spire.api.agent.delegatedidentity.v1 import delegatedidentity_grpc
from spire_py.proto.spire.api.agent.delegatedidentity.v1 import delegatedidentity_pb2 as pb
from spire_py.proto.spire.api.types import selector_pb2
from spire_py.proto.workload import workload_pb2

from tests.integration.helpers.harness import (AGENT, TD, AgentHandle, Proc, ServerHandle, agent_conf,
                                               agent_factory, entry_create, run, server_factory, short_dir,
                                               wait_for)

NOBODY = 65534
DELEGATE = f"spiffe://{TD}/delegate"
TARGET = f"spiffe://{TD}/target"
DELEGATE_SCRIPT = str(Path(__file__).with_name("helpers") / "delegate.py")


class AdminWorld:
    def __init__(self, server: ServerHandle, agent: AgentHandle, admin: str, agent_id: str) -> None:
        self.server, self.agent, self.admin, self.agent_id = server, agent, admin, agent_id


@pytest.fixture(scope="module")
def world(tmp_path_factory: pytest.TempPathFactory) -> Iterator[AdminWorld]:
    tmp = tmp_path_factory.mktemp("admin")
    with server_factory(tmp) as make_server, agent_factory(tmp) as start_agent:
        server = make_server()
        token = server.token()
        agent_id = f"spiffe://{TD}/spire/agent/join_token/{token}"
        admin_dir = short_dir(tmp, "admin")
        admin = str(admin_dir / "private" / "admin.sock")
        agent = start_agent(server, token=token, extra_agent=f'''
            admin_socket_path = "{admin}"
            authorized_delegates = ["{DELEGATE}"]''')
        entry_create(server, agent_id, DELEGATE, "-selector", f"unix:uid:{os.getuid()}")
        entry_create(server, agent_id, TARGET, "-selector", f"unix:uid:{NOBODY}")
        try:
            yield AdminWorld(server, agent, admin, agent_id)
        finally:
            shutil.rmtree(admin_dir, ignore_errors=True)


def by_selectors() -> pb.SubscribeToX509SVIDsRequest:
    return pb.SubscribeToX509SVIDsRequest(selectors=[selector_pb2.Selector(type="unix", value=f"uid:{NOBODY}")])


async def first_x509(sock: str, req: pb.SubscribeToX509SVIDsRequest) -> pb.SubscribeToX509SVIDsResponse:
    ch = Channel(path=sock)
    try:
        stub = delegatedidentity_grpc.DelegatedIdentityStub(ch)
        async with stub.SubscribeToX509SVIDs.open(timeout=20) as stream:
            await stream.send_message(req, end=True)
            while True:
                resp = await stream.recv_message()
                assert resp is not None, "stream ended"
                if resp.x509_svids:
                    await stream.cancel()
                    return resp
    finally:
        ch.close()


async def unary(sock: str, method: str, req: Any) -> Any:
    ch = Channel(path=sock)
    try:
        return await getattr(delegatedidentity_grpc.DelegatedIdentityStub(ch), method)(req, timeout=20)
    finally:
        ch.close()


async def first_of(sock: str, method: str, req: Any) -> Any:
    ch = Channel(path=sock)
    try:
        async with getattr(delegatedidentity_grpc.DelegatedIdentityStub(ch), method).open(timeout=20) as stream:
            await stream.send_message(req, end=True)
            resp = await stream.recv_message()
            await stream.cancel()
            return resp
    finally:
        ch.close()


def eventually(coro_fn, timeout: float = 30) -> Any:
    """Entries reach the agent at its next sync (1 s): retry until the delegate is recognised."""
    deadline = time.monotonic() + timeout
    while True:
        try:
            return asyncio.run(coro_fn())
        except GRPCError as exc:
            if time.monotonic() > deadline or exc.status != Status.PERMISSION_DENIED:
                raise
            time.sleep(0.5)


@pytest.fixture
def nobody_process() -> Iterator[int]:
    proc = subprocess.Popen(["sleep", "120"], user=NOBODY, group=NOBODY, extra_groups=[])
    try:
        yield proc.pid
    finally:
        proc.kill()
        proc.wait()


def check_svid(resp: pb.SubscribeToX509SVIDsResponse, bundle: list[x509.Certificate]) -> None:
    (svid,) = resp.x509_svids
    assert (svid.x509_svid.id.trust_domain, svid.x509_svid.id.path) == (TD, "/target")
    leaf = x509.load_der_x509_certificate(svid.x509_svid.cert_chain[0])
    key = serialization.load_der_private_key(svid.x509_svid_key, None)
    pub = serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
    assert key.public_key().public_bytes(*pub) == leaf.public_key().public_bytes(*pub)
    assert leaf.extensions.get_extension_for_class(x509.SubjectAlternativeName).value.get_values_for_type(
        x509.UniformResourceIdentifier) == [TARGET]
    chain = [leaf, *(x509.load_der_x509_certificate(d) for d in svid.x509_svid.cert_chain[1:])]
    assert any(_signed_by(chain[-1], root) for root in bundle)
    assert svid.x509_svid.expires_at == int(leaf.not_valid_after_utc.timestamp())


def _signed_by(cert: x509.Certificate, root: x509.Certificate) -> bool:
    try:
        cert.verify_directly_issued_by(root)
        return True
    except Exception:
        return False


def test_admin_socket_is_owner_and_group_only(world: AdminWorld) -> None:
    st = os.stat(world.admin)
    assert stat.S_ISSOCK(st.st_mode)
    assert stat.S_IMODE(st.st_mode) == 0o770
    assert (st.st_uid, st.st_gid) == (os.getuid(), os.getgid())
    assert stat.S_IMODE(os.stat(os.path.dirname(world.admin)).st_mode) == 0o750
    # Others cannot even connect: the file mode is the first gate.
    out = run([sys.executable, DELEGATE_SCRIPT, str(NOBODY), str(NOBODY), world.admin, "1"])
    assert json.loads(out.stdout) == {"status": "OSError", "message": "Permission denied", "ids": []}


def test_delegate_gets_another_workloads_svid_by_selectors_and_by_pid(world: AdminWorld, nobody_process: int) -> None:
    bundle = x509.load_pem_x509_certificates(world.server.bundle_path().read_bytes())
    check_svid(eventually(lambda: first_x509(world.admin, by_selectors())), bundle)
    check_svid(asyncio.run(first_x509(world.admin, pb.SubscribeToX509SVIDsRequest(pid=nobody_process))), bundle)

    jwts = asyncio.run(unary(world.admin, "FetchJWTSVIDs", pb.FetchJWTSVIDsRequest(audience=["db"], pid=nobody_process)))
    (jwt,) = jwts.svids
    assert jwt.id.path == "/target" and jwt.expires_at > jwt.issued_at
    payload = json.loads(_b64(jwt.token.split(".")[1]))
    assert (payload["sub"], payload["aud"]) == (TARGET, ["db"])


def _b64(part: str) -> bytes:
    import base64

    return base64.urlsafe_b64decode(part + "=" * (-len(part) % 4))


def test_delegate_gets_bundles(world: AdminWorld) -> None:
    eventually(lambda: first_x509(world.admin, by_selectors()))
    x509s = asyncio.run(first_of(world.admin, "SubscribeToX509Bundles", pb.SubscribeToX509BundlesRequest()))
    roots = x509.load_pem_x509_certificates(world.server.bundle_path().read_bytes())
    assert x509s.ca_certificates[f"spiffe://{TD}"] == b"".join(
        r.public_bytes(serialization.Encoding.DER) for r in roots)
    jwks = asyncio.run(first_of(world.admin, "SubscribeToJWTBundles", pb.SubscribeToJWTBundlesRequest()))
    assert json.loads(jwks.bundles[f"spiffe://{TD}"])["keys"]


def test_requests_name_selectors_or_a_pid_not_both(world: AdminWorld) -> None:
    eventually(lambda: first_x509(world.admin, by_selectors()))
    both = by_selectors()
    both.pid = os.getpid()
    with pytest.raises(GRPCError) as exc:
        asyncio.run(first_x509(world.admin, both))
    assert (exc.value.status, exc.value.message) == (
        Status.INVALID_ARGUMENT, "must provide either selectors or non-zero PID, but not both")
    with pytest.raises(GRPCError) as exc:
        asyncio.run(unary(world.admin, "FetchJWTSVIDs", pb.FetchJWTSVIDsRequest(pid=os.getpid())))
    assert (exc.value.status, exc.value.message) == (Status.INVALID_ARGUMENT, "audience must be specified")


def test_a_caller_that_is_not_a_delegate_is_denied(world: AdminWorld, nobody_process: int) -> None:
    eventually(lambda: first_x509(world.admin, by_selectors()))
    # uid 65534 in group 0 passes the socket's mode; its entry (TARGET) is not an authorized delegate.
    out = run([sys.executable, DELEGATE_SCRIPT, str(NOBODY), "0", world.admin, str(nobody_process)])
    assert json.loads(out.stdout) == {"status": "PERMISSION_DENIED",
                                      "message": "caller not configured as an authorized delegate", "ids": []}
    # uid 4242 has no entry at all.
    out = run([sys.executable, DELEGATE_SCRIPT, "4242", "0", world.admin, str(nobody_process)])
    assert json.loads(out.stdout) == {"status": "PERMISSION_DENIED", "message": "no identity issued", "ids": []}


def status_of(sock: str, path: str, request: bytes, metadata: tuple = ()) -> Status:
    """The status grpcio (C core, like grpc-go) sees for one unary call on a Unix socket."""
    import grpc

    with grpc.insecure_channel(f"unix:{sock}") as channel:
        call = channel.unary_unary(path, request_serializer=None, response_deserializer=None)
        try:
            call(request, metadata=metadata, timeout=30)
        except grpc.RpcError as exc:
            return Status(exc.code().value[0])
    return Status.OK


def test_the_two_sockets_serve_their_own_apis(world: AdminWorld) -> None:
    eventually(lambda: first_x509(world.admin, by_selectors()))
    delegated = "/spire.api.agent.delegatedidentity.v1.DelegatedIdentity/FetchJWTSVIDs"
    req = pb.FetchJWTSVIDsRequest(audience=["a"], selectors=by_selectors().selectors).SerializeToString()
    assert status_of(world.admin, delegated, req) == Status.OK
    assert status_of(world.agent.socket, delegated, req) == Status.UNIMPLEMENTED
    jwt = workload_pb2.JWTSVIDRequest(audience=["a"]).SerializeToString()
    header = (("workload.spiffe.io", "true"),)
    assert status_of(world.agent.socket, "/SpiffeWorkloadAPI/FetchJWTSVID", jwt, header) == Status.OK
    assert status_of(world.admin, "/SpiffeWorkloadAPI/FetchJWTSVID", jwt, header) == Status.UNIMPLEMENTED


def agent_cli(world: AdminWorld, *args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
    return run([AGENT, *args, "-socketPath", world.admin], check=check)


def test_debug_getinfo(world: AdminWorld) -> None:
    eventually(lambda: first_x509(world.admin, by_selectors()))
    out = agent_cli(world, "debug", "getinfo").stdout
    assert re.fullmatch(
        r"Agent Debug Info:\n"
        r"  Uptime:                          (\d+h)?(\d+m)?\d+s\n"
        r"  Last Sync Success:               \d{4}-\d\d-\d\dT\d\d:\d\d:\d\dZ\n"
        r"  Cached X\.509 SVIDs:              \d+\n"
        r"  Cached JWT SVIDs:                \d+\n"
        r"  Cached SVID Store X\.509 SVIDs:   0\n"
        r"  SVID Chain:\n"
        rf"    \[0\] SPIFFE ID:  {re.escape(world.agent_id)}\n"
        r"        Subject:    .*\n"
        r"        Expires At: \d{4}-\d\d-\d\dT\d\d:\d\d:\d\dZ\n"
        r"    \[1\] SPIFFE ID:  .*\n(.*\n)*", out), out
    doc = json.loads(agent_cli(world, "debug", "getinfo", "-output", "json").stdout)
    assert doc["cached_x509_svids_count"] >= 2 and doc["svids_count"] == doc["cached_x509_svids_count"]
    assert int(doc["last_sync_success"]) > 0
    assert doc["svid_chain"][0]["id"] == {"trust_domain": TD, "path": world.agent_id.split(TD, 1)[1]}


def test_agent_logger_get_set_reset(world: AdminWorld) -> None:
    pretty = "Logger Level : {}\nLaunch Level : {}\n\n"
    assert agent_cli(world, "logger", "get").stdout == pretty.format("debug", "debug")
    assert agent_cli(world, "logger", "set", "-level", "warn").stdout == pretty.format("warn", "debug")
    assert json.loads(agent_cli(world, "logger", "get", "-output", "json").stdout) == {
        "current_level": "WARN", "launch_level": "DEBUG"}
    assert agent_cli(world, "logger", "reset").stdout == pretty.format("debug", "debug")
    bad = agent_cli(world, "logger", "set", "-level", "verbose", check=False)
    assert (bad.returncode, bad.stderr) == (1, 'Error: the value "verbose" is not a valid setting\n')


def test_run_flags_join_token_file_and_disable_sds(world: AdminWorld, tmp_path: Path) -> None:
    """-joinTokenFile is read for attestation; -disableSDSAPI leaves SDS unimplemented while the
    Workload API serves."""
    from envoy.service.discovery.v3 import discovery_pb2

    server = world.server
    d = short_dir(tmp_path, "agent")
    sock = str(d / "public" / "api.sock")
    conf = d / "agent.conf"
    conf.write_text(agent_conf(d, server, sock, server.bundle_path()))
    token_file = d / "token"
    token_file.write_text(server.token() + "\n")
    proc = Proc([AGENT, "run", "-config", str(conf), "-joinTokenFile", str(token_file), "-disableSDSAPI"],
                d / "agent.log").start()
    try:
        healthy = lambda: run([AGENT, "healthcheck", "-socketPath", sock], check=False).returncode == 0  # noqa: E731
        wait_for(lambda: healthy() or not proc.alive(), 60, "agent healthcheck")
        assert proc.alive(), proc.logs()
        assert 'apis="Workload API"' in proc.logs() or "apis=Workload API" in proc.logs()

        sds = "/envoy.service.secret.v3.SecretDiscoveryService/FetchSecrets"
        assert status_of(sock, sds, discovery_pb2.DiscoveryRequest().SerializeToString()) == Status.UNIMPLEMENTED
    finally:
        proc.stop()
        shutil.rmtree(d, ignore_errors=True)
