"""spire.api.agent.delegatedidentity.v1 (agent/adminapi/delegatedidentity.py) over real gRPC on a
served admin socket, with the Workload API's real cache and unix attestor: this process is the
delegate (its uid's entry is in authorized_delegates), the workloads are named by selectors."""

from __future__ import annotations

import dataclasses
import os
from typing import Any, AsyncIterator

import pytest
from grpclib.client import Channel
from grpclib.const import Status
from grpclib.exceptions import GRPCError

from spire_py.agent.adminapi.delegatedidentity import DelegatedIdentityService
from spire_py.agent.adminapi.server import serve_admin_api
from spire_py.agent.workloadapi.caller import CallerRegistry
from spire_py.agent.workloadapi.server import close_workload_api
from spire_py.common.registration import Selector
from spire_py.proto.spire.api.agent.delegatedidentity.v1 import delegatedidentity_grpc
from spire_py.proto.spire.api.agent.delegatedidentity.v1 import delegatedidentity_pb2 as pb
from spire_py.proto.spire.api.types import selector_pb2
from tests.unit.helpers.workload_world import FEDERATED_TD, World

DELEGATE = "spiffe://example.org/delegate"
OTHER_UID = Selector("unix", "uid:4242")


@pytest.fixture
async def admin(world: World) -> AsyncIterator[tuple[World, Any]]:
    callers = CallerRegistry()
    path = os.path.join(os.path.dirname(os.path.dirname(world.socket_path)), "private", "admin.sock")
    server = await serve_admin_api(path, [DelegatedIdentityService(world.service, callers, [DELEGATE])], callers)
    ch = Channel(path=path)
    try:
        yield world, delegatedidentity_grpc.DelegatedIdentityStub(ch)
    finally:
        ch.close()
        await world.service.shutdown()
        await close_workload_api(server, path)


def other_workload() -> list[selector_pb2.Selector]:
    return [selector_pb2.Selector(type=OTHER_UID.type, value=OTHER_UID.value)]


async def test_svids_for_the_named_workload_without_admin_or_downstream_ones(admin) -> None:
    world, stub = admin
    world.add_entry(DELEGATE)
    target = world.add_entry("spiffe://example.org/target", [OTHER_UID], hint="db", federates_with=[FEDERATED_TD])
    for flag in ("admin", "downstream"):
        e = world.add_entry(f"spiffe://example.org/{flag}", [OTHER_UID])
        world.cache.entries[e.id] = dataclasses.replace(e, **{flag: True})
    async with stub.SubscribeToX509SVIDs.open(timeout=10) as stream:
        await stream.send_message(pb.SubscribeToX509SVIDsRequest(selectors=other_workload()), end=True)
        resp = await stream.recv_message()
        (svid,) = resp.x509_svids
        assert (svid.x509_svid.id.path, svid.x509_svid.hint) == ("/target", "db")
        assert svid.x509_svid_key == world.cache.svids[target.id].key_der
        assert list(resp.federates_with) == [FEDERATED_TD]

        world.issue(target)  # a rotated SVID is pushed
        await world.cache.publish()
        again = await stream.recv_message()
        assert again.x509_svids[0].x509_svid.cert_chain != svid.x509_svid.cert_chain
        await stream.cancel()


async def test_a_stream_ends_when_the_caller_stops_being_a_delegate(admin) -> None:
    world, stub = admin
    delegate = world.add_entry(DELEGATE)
    world.add_entry("spiffe://example.org/target", [OTHER_UID])
    async with stub.SubscribeToX509SVIDs.open(timeout=10) as stream:
        await stream.send_message(pb.SubscribeToX509SVIDsRequest(selectors=other_workload()), end=True)
        assert (await stream.recv_message()).x509_svids
        world.cache.entries[delegate.id] = dataclasses.replace(delegate, spiffe_id="spiffe://example.org/demoted")
        await world.cache.publish()
        assert await stream.recv_message() is None
        with pytest.raises(GRPCError) as exc:
            await stream.recv_trailing_metadata()
    assert (exc.value.status, exc.value.message) == (
        Status.PERMISSION_DENIED, "caller not configured as an authorized delegate")


async def test_callers_without_an_entry_or_not_listed_are_denied(admin) -> None:
    world, stub = admin
    req = pb.FetchJWTSVIDsRequest(audience=["db"], selectors=other_workload())
    with pytest.raises(GRPCError) as exc:
        await stub.FetchJWTSVIDs(req)
    assert (exc.value.status, exc.value.message) == (Status.PERMISSION_DENIED, "no identity issued")
    world.add_entry("spiffe://example.org/not-a-delegate")
    with pytest.raises(GRPCError) as exc:
        await stub.FetchJWTSVIDs(req)
    assert (exc.value.status, exc.value.message) == (
        Status.PERMISSION_DENIED, "caller not configured as an authorized delegate")


async def test_jwt_svids_and_bundles_for_a_delegate(admin) -> None:
    world, stub = admin
    world.add_entry(DELEGATE)
    req = pb.FetchJWTSVIDsRequest(audience=["db"], selectors=other_workload())
    with pytest.raises(GRPCError) as exc:  # nothing registered for the named workload
        await stub.FetchJWTSVIDs(req)
    assert (exc.value.status, exc.value.message) == (Status.PERMISSION_DENIED, "no identity issued")
    world.add_entry("spiffe://example.org/target", [OTHER_UID], hint="h")
    (jwt,) = (await stub.FetchJWTSVIDs(req)).svids
    assert (jwt.id.path, jwt.hint) == ("/target", "h") and jwt.token.count(".") == 2

    async with stub.SubscribeToX509Bundles.open(timeout=10) as stream:
        await stream.send_message(pb.SubscribeToX509BundlesRequest(), end=True)
        got = await stream.recv_message()
        await stream.cancel()
    assert set(got.ca_certificates) == {"spiffe://example.org", FEDERATED_TD}


@pytest.mark.parametrize(("req", "message"), [
    (pb.FetchJWTSVIDsRequest(audience=["db"]), "must provide either selectors or non-zero PID, but not both"),
    (pb.FetchJWTSVIDsRequest(audience=["db"], pid=1, selectors=other_workload()),
     "must provide either selectors or non-zero PID, but not both"),
    (pb.FetchJWTSVIDsRequest(audience=["db"], selectors=[selector_pb2.Selector(type="unix", value="")]),
     "could not parse provided selectors"),
    (pb.FetchJWTSVIDsRequest(selectors=other_workload()), "audience must be specified"),
])
async def test_invalid_requests(admin, req, message) -> None:
    world, stub = admin
    world.add_entry(DELEGATE)
    with pytest.raises(GRPCError) as exc:
        await stub.FetchJWTSVIDs(req)
    assert (exc.value.status, exc.value.message) == (Status.INVALID_ARGUMENT, message)


async def test_a_pid_that_does_not_exist_fails_attestation(admin) -> None:
    world, stub = admin
    world.add_entry(DELEGATE)
    with pytest.raises(GRPCError) as exc:
        await stub.FetchJWTSVIDs(pb.FetchJWTSVIDsRequest(audience=["db"], pid=2**31 - 1))
    assert (exc.value.status, exc.value.message) == (Status.UNAVAILABLE, "workload attestation failed")
