"""spire-server as an attacker meets it: one anonymous request must not freeze or bloat it,
and who may call what is SPIRE's policy, on the TCP listener and on the admin socket."""

from __future__ import annotations

import asyncio
import time
from typing import Any, Optional

import pytest
from grpclib.client import Channel
from grpclib.const import Cardinality, Status
from grpclib.exceptions import GRPCError, StreamTerminatedError

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec

from spire_py.common import rpc
from spire_py.proto.grpc.health.v1 import health_pb2
from spire_py.proto.spire.api.server.agent.v1 import agent_pb2
from spire_py.proto.spire.api.server.bundle.v1 import bundle_pb2
from spire_py.proto.spire.api.server.entry.v1 import entry_pb2
from spire_py.proto.spire.api.types import attestation_pb2
from spire_py.proto.spire.api.types import bundle_pb2 as types_bundle_pb2
from tests.integration.helpers.attacker import RawCodec, anonymous_tls
from tests.integration.helpers.harness import SERVER, TD, ServerHandle, run

GET_BUNDLE = "/spire.api.server.bundle.v1.Bundle/GetBundle"
LIST_ENTRIES = "/spire.api.server.entry.v1.Entry/ListEntries"
AUTHORIZED = "/spire.api.server.entry.v1.Entry/GetAuthorizedEntries"
HEALTH = "/grpc.health.v1.Health/Check"
ATTEST = "/spire.api.server.agent.v1.Agent/AttestAgent"


def _channel(server: ServerHandle, tcp: bool = True) -> Channel:
    if tcp:
        return Channel("127.0.0.1", server.port, ssl=anonymous_tls(), codec=RawCodec())
    return Channel(path=server.socket, codec=RawCodec())


async def _unary(server: ServerHandle, method: str, request: Any, reply: Any, tcp: bool = True,
                 request_type: Any = None) -> Any:
    channel = _channel(server, tcp)
    try:
        call = channel.request(method, Cardinality.UNARY_UNARY, request_type or type(request), reply, timeout=60)
        async with call as stream:
            await stream.send_message(request, end=True)
            return await stream.recv_message()
    finally:
        channel.close()


def _csr() -> bytes:
    key = ec.generate_private_key(ec.SECP256R1())
    csr = x509.CertificateSigningRequestBuilder().subject_name(x509.Name([])).sign(key, hashes.SHA256())
    return csr.public_bytes(serialization.Encoding.DER)


async def _attest(server: ServerHandle, attestor_type: str, payload: bytes = b"x") -> GRPCError:
    channel = _channel(server)
    try:
        call = channel.request(ATTEST, Cardinality.STREAM_STREAM, agent_pb2.AttestAgentRequest,
                               agent_pb2.AttestAgentResponse, timeout=60)
        with pytest.raises(GRPCError) as err:
            async with call as stream:
                await stream.send_message(agent_pb2.AttestAgentRequest(params=agent_pb2.AttestAgentRequest.Params(
                    data=attestation_pb2.AttestationData(type=attestor_type, payload=payload),
                    params=agent_pb2.AgentX509SVIDParams(csr=_csr()))))
                await stream.recv_message()
        return err.value
    finally:
        channel.close()


def _rss_kib(pid: int) -> int:
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    raise AssertionError("no VmRSS")


def test_a_600kb_attestor_type_gets_a_bounded_answer_while_the_server_keeps_serving(spire_server: ServerHandle) -> None:
    async def scenario() -> tuple[GRPCError, bool]:
        attack = asyncio.create_task(_attest(spire_server, "t" * 600_000))
        healthy = await asyncio.to_thread(spire_server.healthy)
        return await asyncio.wait_for(attack, 60), healthy

    err, healthy = asyncio.run(scenario())
    assert healthy
    assert err.status == Status.FAILED_PRECONDITION
    assert err.message.startswith('error getting node attestor: could not find node attestor type "ttt')
    assert len(err.message) <= rpc.MAX_STATUS_MESSAGE
    assert spire_server.healthy()


def test_a_64mib_request_is_refused_before_it_is_buffered(spire_server: ServerHandle) -> None:
    """grpcio (C-core) on the admin socket reads the status; grpclib over TCP sees the stream end."""
    import grpc

    pid = spire_server.proc.proc.pid  # type: ignore[union-attr]
    before = _rss_kib(pid)
    body = b"\x7a" + b"\xff" * 5 + b"\x00" * (64 << 20)  # an unknown field claiming a huge length
    with grpc.insecure_channel(f"unix:{spire_server.socket}") as channel:
        call = channel.unary_unary(GET_BUNDLE, request_serializer=None, response_deserializer=None)
        with pytest.raises(grpc.RpcError) as err:
            call(body, timeout=60)
    assert err.value.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
    assert err.value.details() == f"grpc: received message larger than max ({len(body)} vs. {rpc.MAX_MESSAGE_BYTES})"

    async def over_tcp() -> BaseException:
        channel = _channel(spire_server)
        try:
            call = channel.request(GET_BUNDLE, Cardinality.UNARY_UNARY, bundle_pb2.GetBundleRequest,
                                   bundle_pb2.GetBundleRequest, timeout=60)
            with pytest.raises((GRPCError, StreamTerminatedError)) as refused:
                async with call as stream:
                    await stream.send_message(body, end=True)
                    await stream.recv_message()
            return refused.value
        finally:
            channel.close()

    refused = asyncio.run(asyncio.wait_for(over_tcp(), 90))
    if isinstance(refused, GRPCError):
        assert refused.status == Status.RESOURCE_EXHAUSTED
    grown_mib = (_rss_kib(pid) - before) / 1024
    assert grown_mib < 50, f"server RSS grew {grown_mib:.0f} MiB for two 64 MiB requests"
    assert spire_server.healthy()


def test_a_malformed_request_is_answered_without_a_traceback(spire_server: ServerHandle) -> None:
    async def send() -> GRPCError:
        with pytest.raises(GRPCError) as err:
            await _unary(spire_server, GET_BUNDLE, b"\x0a\xff\xff\xff\xff\x0f", bundle_pb2.GetBundleRequest,
                         request_type=bundle_pb2.GetBundleRequest)
        return err.value

    for _ in range(3):
        err = asyncio.run(send())
        assert err.status == Status.INTERNAL and "failed to unmarshal" in (err.message or "")
    logs = spire_server.proc.logs()
    assert "Traceback" not in logs
    assert logs.count("Malformed request") == 1


def test_anonymous_tcp_callers_reach_only_the_methods_open_to_anyone(spire_server: ServerHandle) -> None:
    bundle = asyncio.run(_unary(spire_server, GET_BUNDLE, bundle_pb2.GetBundleRequest(), types_bundle_pb2.Bundle))
    assert bundle.trust_domain == TD and bundle.x509_authorities
    for method, req, reply in ((LIST_ENTRIES, entry_pb2.ListEntriesRequest(), entry_pb2.ListEntriesResponse),
                               (HEALTH, health_pb2.HealthCheckRequest(), health_pb2.HealthCheckResponse)):
        with pytest.raises(GRPCError) as err:
            asyncio.run(_unary(spire_server, method, req, reply))
        assert err.value.status == Status.PERMISSION_DENIED, method
        assert err.value.message == "authorization denied: caller is not authenticated"


def test_local_callers_may_not_call_agent_only_methods(spire_server: ServerHandle) -> None:
    with pytest.raises(GRPCError) as err:
        asyncio.run(_unary(spire_server, AUTHORIZED, entry_pb2.GetAuthorizedEntriesRequest(),
                           entry_pb2.GetAuthorizedEntriesResponse, tcp=False))
    assert err.value.status == Status.PERMISSION_DENIED
    ok = asyncio.run(_unary(spire_server, LIST_ENTRIES, entry_pb2.ListEntriesRequest(), entry_pb2.ListEntriesResponse,
                            tcp=False))
    assert ok is not None


def test_attestation_is_rate_limited_per_caller_address(spire_server: ServerHandle) -> None:
    async def three() -> float:
        start = time.monotonic()
        for _ in range(3):
            err = await _attest(spire_server, "join_token", b"no-such-token")
            assert err.status == Status.INVALID_ARGUMENT
        return time.monotonic() - start

    # SPIRE's 1 attestation per second per IP, with a burst of 1: the third waits at least 2 s in all.
    assert asyncio.run(three()) >= 1.9


def test_audit_log_has_one_line_per_call_and_no_secrets(make_server: Any) -> None:
    server = make_server(extra_server="audit_log_enabled = true")
    asyncio.run(_unary(server, "/spire.api.server.agent.v1.Agent/CreateJoinToken",
                       agent_pb2.CreateJoinTokenRequest(ttl=600, token="s3cret-join-token"),
                       agent_pb2.CreateJoinTokenRequest, tcp=False))
    with pytest.raises(GRPCError):
        asyncio.run(_unary(server, LIST_ENTRIES, entry_pb2.ListEntriesRequest(), entry_pb2.ListEntriesResponse))
    audit = [line for line in server.proc.logs().splitlines() if "type=audit" in line]
    created = [line for line in audit if "CreateJoinToken" in line]
    assert created and "status=success" in created[0] and "caller_uid=" in created[0]
    assert "s3cret-join-token" not in "\n".join(audit)
    denied = [line for line in audit if "ListEntries" in line and "caller_addr=127.0.0.1" in line]
    assert denied and "status=error" in denied[0] and "status_code=PermissionDenied" in denied[0]


def test_disable_jwt_svids_refuses_jwt_minting(make_server: Any) -> None:
    server = make_server(extra_server="disable_jwt_svids = true")
    proc = run([SERVER, "jwt", "mint", "-socketPath", server.socket, "-spiffeID", f"spiffe://{TD}/w",
                "-audience", "a"], check=False)
    assert proc.returncode != 0
    assert "JWT functionality is disabled" in proc.stderr + proc.stdout
    x509 = run([SERVER, "x509", "mint", "-socketPath", server.socket, "-spiffeID", f"spiffe://{TD}/w"], check=False)
    assert x509.returncode == 0, x509.stderr


def _jwt_with_kid(kid: str) -> str:
    import base64
    import json as _json

    def b64(obj: dict[str, Any]) -> str:
        return base64.urlsafe_b64encode(_json.dumps(obj).encode()).rstrip(b"=").decode()

    return f'{b64({"alg": "ES256", "kid": kid, "typ": "JWT"})}.{b64({"sub": f"spiffe://{TD}/w", "aud": ["a"]})}.c2ln'


def test_workload_api_answers_a_1mb_kid_bounded_and_refuses_5mib_audiences(spire_server: ServerHandle,
                                                                            start_agent: Any) -> None:
    """Any local uid reaches ValidateJWTSVID: a 1 MB kid froze the agent for minutes before the cap."""
    from spire_py.proto.workload import workload_pb2

    agent = start_agent(spire_server, spire_server.token())

    async def call(method: str, request: Any, reply: Any) -> GRPCError:
        channel = Channel(path=agent.socket)
        try:
            stub = channel.request(method, Cardinality.UNARY_UNARY, type(request), reply, timeout=60,
                                   metadata={"workload.spiffe.io": "true"})
            with pytest.raises(GRPCError) as err:
                async with stub as stream:
                    await stream.send_message(request, end=True)
                    await stream.recv_message()
            return err.value
        finally:
            channel.close()

    async def scenario() -> tuple[GRPCError, GRPCError, bool]:
        kid = asyncio.create_task(call("/SpiffeWorkloadAPI/ValidateJWTSVID", workload_pb2.ValidateJWTSVIDRequest(
            audience="a", svid=_jwt_with_kid("k" * 1_000_000)), workload_pb2.ValidateJWTSVIDResponse))
        healthy = await asyncio.to_thread(agent.healthy)
        big = await call("/SpiffeWorkloadAPI/FetchJWTSVID", workload_pb2.JWTSVIDRequest(
            audience=["x" * (5 << 20)]), workload_pb2.JWTSVIDResponse)
        return await asyncio.wait_for(kid, 60), big, healthy

    kid_err, big_err, healthy = asyncio.run(scenario())
    assert healthy
    assert kid_err.status == Status.INVALID_ARGUMENT and len(kid_err.message) <= rpc.MAX_STATUS_MESSAGE
    assert big_err.status == Status.RESOURCE_EXHAUSTED
    assert agent.healthy()
