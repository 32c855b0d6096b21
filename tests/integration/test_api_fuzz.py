"""Fuzzing every API method of a real server and agent with random and mutated requests.

Bounded (a few hundred cases, a fixed seed), on loopback and the processes' own sockets. Each
answer must be a gRPC status the daemon chose (never UNKNOWN, never a hang); afterwards the
daemon is healthy and its log has no traceback and no "internal error".
"""

from __future__ import annotations

import asyncio
from typing import Any

from grpclib.client import Channel
from grpclib.const import Cardinality, Status
from grpclib.exceptions import GRPCError, StreamTerminatedError
from hypothesis import HealthCheck, given, seed, settings
from hypothesis import strategies as st

from spire_py.common.health_service import HealthService
from spire_py.server.api.agent import AgentService
from spire_py.server.api.bundle import BundleService
from spire_py.server.api.entry import EntryService
from spire_py.server.api.health import DebugService
from spire_py.server.api.svid import SVIDService
from tests.integration.helpers.attacker import RawReplyCodec, anonymous_tls
from tests.integration.helpers.harness import ServerHandle

# Streams that never end by themselves.
ENDLESS = {"/grpc.health.v1.Health/Watch", "/SpiffeWorkloadAPI/FetchX509SVID", "/SpiffeWorkloadAPI/FetchX509Bundles",
           "/SpiffeWorkloadAPI/FetchJWTBundles"}


def _server_methods() -> dict[str, Any]:
    services: list[Any] = [AgentService(None), EntryService(None), BundleService(None),  # type: ignore[arg-type]
                           SVIDService(None), DebugService(None, 0, list), HealthService(lambda: True)]  # type: ignore[arg-type]
    out: dict[str, Any] = {}
    for s in services:
        out.update({k: v for k, v in s.__mapping__().items() if k not in ENDLESS})
    return out


def _mutations(valid: bytes) -> st.SearchStrategy[bytes]:
    """Random bytes, or a valid message with bytes flipped, cut, or a field length inflated."""
    base = valid or b"\x00"

    def flip(edits: list[tuple[int, int]]) -> bytes:
        b = bytearray(base)
        for pos, value in edits:
            b[pos % len(b)] = value
        return bytes(b)

    return st.one_of(
        st.binary(max_size=512),
        st.builds(lambda n: valid[:n], st.integers(0, max(len(valid) - 1, 0))),
        st.lists(st.tuples(st.integers(0, 10_000), st.integers(0, 255)), min_size=1, max_size=4).map(flip),
        st.builds(lambda tag, n: bytes([tag]) + n.to_bytes(4, "little") + b"x" * 16, st.integers(0, 255),
                  st.integers(0, 2**31)),
    )


def _sample_request(handler: Any) -> bytes:
    msg = handler.request_type()
    for field in msg.DESCRIPTOR.fields:
        if field.type == field.TYPE_STRING and not field.is_repeated:
            setattr(msg, field.name, "spiffe://example.org/x")
    return msg.SerializeToString()


# The Workload API's security header, so requests get past it to the parsing under test.
HEADER = {"workload.spiffe.io": "true"}


async def _call(channel: Channel, method: str, handler: Any, body: bytes) -> Status:
    call = channel.request(method, handler.cardinality, handler.request_type, handler.reply_type, timeout=20,
                           metadata=HEADER if method.startswith("/SpiffeWorkloadAPI/") else None)
    try:
        async with call as stream:
            await stream.send_message(body, end=True)
            if handler.cardinality in (Cardinality.UNARY_STREAM, Cardinality.STREAM_STREAM):
                async for _ in stream:
                    pass
            else:
                await stream.recv_message()
        return Status.OK
    except GRPCError as exc:
        return exc.status
    except StreamTerminatedError:
        return Status.CANCELLED


def _fuzz(methods: dict[str, Any], open_channel: Any, examples: int) -> list[tuple[str, Status]]:
    names = sorted(methods)
    statuses: list[tuple[str, Status]] = []

    @seed(20261206)
    @settings(max_examples=examples, deadline=None, database=None, derandomize=True,
              suppress_health_check=list(HealthCheck))
    @given(data=st.data())
    def one(data: st.DataObject) -> None:
        method = data.draw(st.sampled_from(names))
        handler = methods[method]
        body = data.draw(_mutations(_sample_request(handler)))

        async def go() -> Status:
            channel = open_channel()
            try:
                return await asyncio.wait_for(_call(channel, method, handler, body), 30)
            finally:
                channel.close()

        status = asyncio.run(go())
        statuses.append((method, status))
        assert status != Status.UNKNOWN, (method, body[:64])

    one()
    return statuses


def test_server_apis_survive_random_and_mutated_requests(spire_server: ServerHandle) -> None:
    methods = _server_methods()
    local = _fuzz(methods, lambda: Channel(path=spire_server.socket, codec=RawReplyCodec()), 250)
    remote = _fuzz(methods, lambda: Channel("127.0.0.1", spire_server.port, ssl=anonymous_tls(), codec=RawReplyCodec()),
                   100)
    assert len(local) == 250 and len(remote) == 100
    # Anonymous TCP callers only ever reach the methods open to anyone.
    assert all(s == Status.PERMISSION_DENIED for m, s in remote
               if not m.endswith(("/AttestAgent", "/GetBundle")))
    assert spire_server.healthy()
    logs = spire_server.proc.logs()
    assert "Traceback" not in logs
    assert "internal error" not in logs


def test_workload_api_survives_random_and_mutated_requests(spire_server: ServerHandle, start_agent: Any) -> None:
    from spire_py.proto.workload import workload_grpc

    agent = start_agent(spire_server, spire_server.token())

    class Table(workload_grpc.SpiffeWorkloadAPIBase):  # only for its method table
        FetchX509SVID = FetchX509Bundles = FetchJWTSVID = FetchJWTBundles = ValidateJWTSVID = None  # type: ignore

    mapping = {k: v for k, v in Table().__mapping__().items() if k not in ENDLESS}

    def open_channel() -> Channel:
        return Channel(path=agent.socket, codec=RawReplyCodec())

    statuses = _fuzz(mapping, open_channel, 150)
    assert len(statuses) == 150
    assert agent.healthy()
    logs = agent.proc.logs()
    assert "Traceback" not in logs and "internal error" not in logs
