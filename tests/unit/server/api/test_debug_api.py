"""spire.api.server.debug.v1.Debug (server/api/health.py) over real gRPC against an
in-process server: GetInfo counts what the datastore holds and shows the server's SVID,
for local callers only."""

from __future__ import annotations

import pytest
from grpclib.const import Status
from grpclib.exceptions import GRPCError

from spire_py.proto.spire.api.server.debug.v1 import debug_grpc, debug_pb2
from spire_py.proto.spire.api.server.entry.v1 import entry_grpc, entry_pb2
from spire_py.proto.spire.api.types import entry_pb2 as types_entry_pb2
from spire_py.proto.spire.api.types import selector_pb2
from tests.unit.helpers.inprocess_server import Handle, spiffe_id


async def test_get_info_counts_agents_entries_and_federated_bundles(server: Handle) -> None:
    debug = server.admin_stub(debug_grpc.DebugStub)
    before = await debug.GetInfo(debug_pb2.GetInfoRequest())
    assert (before.agents_count, before.entries_count, before.federated_bundles_count) == (0, 0, 0)
    assert before.svid_chain and before.svid_chain[0].expires_at > 0 and before.uptime >= 0

    await server.attest_agent("api-debug")
    await server.admin_stub(entry_grpc.EntryStub).BatchCreateEntry(entry_pb2.BatchCreateEntryRequest(entries=[
        types_entry_pb2.Entry(spiffe_id=spiffe_id("/w"), parent_id=spiffe_id("/agent"),
                              selectors=[selector_pb2.Selector(type="unix", value="uid:1")])]))
    after = await debug.GetInfo(debug_pb2.GetInfoRequest())
    assert (after.agents_count, after.entries_count, after.federated_bundles_count) == (1, 1, 0)


async def test_get_info_is_served_to_local_callers_only(server: Handle) -> None:
    with pytest.raises(GRPCError) as exc:
        await server.tls_stub(debug_grpc.DebugStub).GetInfo(debug_pb2.GetInfoRequest())
    assert exc.value.status == Status.PERMISSION_DENIED
