"""The admin socket's metrics as SPIRE's: delegated_identity_api.connection/connections per RPC,
and the latency from SubscribeToX509SVIDs to its first update carrying an SVID, sampled once."""

from __future__ import annotations

import os
from collections.abc import AsyncIterator, Iterator
from typing import Any

import pytest
from grpclib.client import Channel

from spire_py.agent.adminapi.delegatedidentity import DelegatedIdentityService
from spire_py.agent.adminapi.server import serve_admin_api
from spire_py.agent.workloadapi.caller import CallerRegistry
from spire_py.agent.workloadapi.server import close_workload_api
from spire_py.common.telemetry import metrics
from spire_py.proto.spire.api.agent.delegatedidentity.v1 import delegatedidentity_grpc
from spire_py.proto.spire.api.agent.delegatedidentity.v1 import delegatedidentity_pb2 as pb
from tests.unit.agent.adminapi.test_delegatedidentity import DELEGATE, OTHER_UID, other_workload
from tests.unit.helpers.workload_world import World


@pytest.fixture
def recorded() -> Iterator[metrics.Metrics]:
    m = metrics.Metrics("spire_agent")
    metrics.set_current(m)
    yield m
    metrics.set_current(metrics.NULL)


@pytest.fixture
async def metered(recorded: metrics.Metrics, world: World) -> AsyncIterator[tuple[World, Any]]:
    callers = CallerRegistry()
    path = os.path.join(os.path.dirname(os.path.dirname(world.socket_path)), "private", "admin.sock")
    # Served after telemetry is current: the connection metrics are found when methods are wrapped.
    server = await serve_admin_api(path, [DelegatedIdentityService(world.service, callers, [DELEGATE])], callers)
    ch = Channel(path=path)
    try:
        yield world, delegatedidentity_grpc.DelegatedIdentityStub(ch)
    finally:
        ch.close()
        await world.service.shutdown()
        await close_workload_api(server, path)


def series(m: metrics.Metrics, name: str) -> list[metrics.Series]:
    return [s for s in m.series() if ".".join(s.name) == name]


async def test_first_update_latency_and_connection_metrics(metered, recorded) -> None:
    world, stub = metered
    world.add_entry(DELEGATE)
    target = world.add_entry("spiffe://example.org/target", [OTHER_UID])
    async with stub.SubscribeToX509SVIDs.open(timeout=10) as stream:
        await stream.send_message(pb.SubscribeToX509SVIDsRequest(selectors=other_workload()), end=True)
        assert (await stream.recv_message()).x509_svids
        (gauge,) = series(recorded, "spire_agent.delegated_identity_api.connections")
        assert gauge.value == 1
        world.issue(target)  # a second update: not sampled again
        await world.cache.publish()
        assert (await stream.recv_message()).x509_svids
        await stream.cancel()
    (latency,) = series(recorded, "spire_agent.delegated_identity_api.subscribe_x509_svids.first_update.elapsed_time")
    assert latency.count == 1 and latency.sum >= 0
    (counter,) = series(recorded, "spire_agent.delegated_identity_api.connection")
    assert counter.value == 1
