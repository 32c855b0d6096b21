"""The agent APIs' ``<api>.connection`` counter and ``<api>.connections`` gauge, counted as
SPIRE's endpoints middleware counts them: one per RPC, the gauge being the calls in flight
(an open stream stays counted until it ends, and the gauge returns to 0)."""

from __future__ import annotations

import asyncio
import os
import tempfile
from collections.abc import AsyncIterator, Iterator
from typing import Any

import pytest
from grpclib.client import Channel

from spire_py.agent.adminapi.logger import LoggerService
from spire_py.common.rpc import GuardedServer
from spire_py.common.telemetry import metrics
from spire_py.proto.spire.api.agent.logger.v1 import logger_grpc, logger_pb2
from spire_py.proto.workload import workload_grpc, workload_pb2


@pytest.fixture
def recorded() -> Iterator[metrics.Metrics]:
    m = metrics.Metrics("spire_agent")
    metrics.set_current(m)
    yield m
    metrics.set_current(metrics.NULL)


class _Bundles(workload_grpc.SpiffeWorkloadAPIBase):
    """FetchX509Bundles sends one response, then holds the stream open until released."""

    def __init__(self) -> None:
        self.release = asyncio.Event()

    async def FetchX509Bundles(self, stream: Any) -> None:
        await stream.recv_message()
        await stream.send_message(workload_pb2.X509BundlesResponse())
        await self.release.wait()

    async def FetchX509SVID(self, stream: Any) -> None: ...
    async def FetchJWTSVID(self, stream: Any) -> None: ...
    async def FetchJWTBundles(self, stream: Any) -> None: ...
    async def ValidateJWTSVID(self, stream: Any) -> None: ...


@pytest.fixture
async def served(recorded: metrics.Metrics) -> AsyncIterator[tuple[str, _Bundles]]:
    d = tempfile.mkdtemp(prefix="conn-", dir="/tmp")
    sock = os.path.join(d, "api.sock")
    bundles = _Bundles()
    server = GuardedServer([bundles, LoggerService()])  # wrapped now: telemetry is current
    await server.start(path=sock)
    try:
        yield sock, bundles
    finally:
        bundles.release.set()
        server.close()
        await server.wait_closed()
        os.unlink(sock)
        os.rmdir(d)


def value(m: metrics.Metrics, name: str, kind: str) -> float:
    found = [s.value for s in m.series() if ".".join(s.name) == name and s.kind == kind]
    assert len(found) == 1, f"{name} ({kind}): {found}"
    return found[0]


async def test_each_call_counts_and_the_gauge_follows_open_streams(served, recorded) -> None:
    sock, bundles = served
    ch = Channel(path=sock)
    try:
        async with workload_grpc.SpiffeWorkloadAPIStub(ch).FetchX509Bundles.open(
                metadata={"workload.spiffe.io": "true"}) as stream:
            await stream.send_message(workload_pb2.X509BundlesRequest(), end=True)
            assert await stream.recv_message() is not None
            # The stream is open: counted once, one in flight.
            assert value(recorded, "spire_agent.workload_api.connection", metrics.COUNTER) == 1
            assert value(recorded, "spire_agent.workload_api.connections", metrics.GAUGE) == 1
            bundles.release.set()
            assert await stream.recv_message() is None
        logger = logger_grpc.LoggerStub(ch)
        for _ in range(2):
            await logger.GetLogger(logger_pb2.GetLoggerRequest(), timeout=10)
    finally:
        ch.close()
    for _ in range(100):  # the server's handler finishes just after the client sees the end
        if value(recorded, "spire_agent.workload_api.connections", metrics.GAUGE) == 0:
            break
        await asyncio.sleep(0.01)
    assert value(recorded, "spire_agent.workload_api.connections", metrics.GAUGE) == 0
    assert value(recorded, "spire_agent.workload_api.connection", metrics.COUNTER) == 1
    assert value(recorded, "spire_agent.logger_api.connection", metrics.COUNTER) == 2
    assert value(recorded, "spire_agent.logger_api.connections", metrics.GAUGE) == 0


async def test_a_stream_the_client_abandons_leaves_the_gauge(served, recorded) -> None:
    sock, _ = served
    ch = Channel(path=sock)
    try:
        async with workload_grpc.SpiffeWorkloadAPIStub(ch).FetchX509Bundles.open() as stream:
            await stream.send_message(workload_pb2.X509BundlesRequest(), end=True)
            await stream.recv_message()
            await stream.cancel()
    finally:
        ch.close()
    for _ in range(200):
        if value(recorded, "spire_agent.workload_api.connections", metrics.GAUGE) == 0:
            break
        await asyncio.sleep(0.01)
    assert value(recorded, "spire_agent.workload_api.connections", metrics.GAUGE) == 0


def test_services_other_than_the_agent_apis_have_no_connection_metrics(recorded) -> None:
    from spire_py.common.rpc import wrap_handler

    async def handler(stream: Any) -> None: ...

    wrap_handler("/grpc.health.v1.Health/Check", handler)
    wrap_handler("/spire.api.server.agent.v1.Agent/AttestAgent", handler)
    assert not any("connection" in ".".join(s.name) for s in recorded.series())
    assert recorded.active_calls(("a", "connection"), ("a", "connections")) is recorded.active_calls(
        ("a", "connection"), ("a", "connections"))
