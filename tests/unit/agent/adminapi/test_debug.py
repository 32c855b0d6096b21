"""spire.agent.debug.v1.Debug (agent/adminapi/debug.py) over real gRPC: the agent SVID's chain as
verified against the bundle, the cache counts, SPIRE's 5-second answer cache."""

from __future__ import annotations

import os
import tempfile
import time
from typing import Any

import pytest
from grpclib.client import Channel
from grpclib.const import Status
from grpclib.exceptions import GRPCError

from spire_py.agent.adminapi.debug import AgentInfo, DebugService
from spire_py.common.rpc import GuardedServer
from spire_py.proto.spire.api.agent.debug.v1 import debug_grpc, debug_pb2
from tests.unit.helpers.workload_world import AGENT_ID, CA


async def get_info(service: DebugService) -> Any:
    d = tempfile.mkdtemp(prefix="dbg-", dir="/tmp")
    sock = os.path.join(d, "admin.sock")
    server = GuardedServer([service])
    await server.start(path=sock)
    ch = Channel(path=sock)
    try:
        return await debug_grpc.DebugStub(ch).GetInfo(debug_pb2.GetInfoRequest())
    finally:
        ch.close()
        server.close()
        await server.wait_closed()
        os.unlink(sock)
        os.rmdir(d)


async def test_get_info_reports_the_verified_chain_and_counts() -> None:
    ca = CA("agent root")
    chain, _ = ca.svid(AGENT_ID)
    info = AgentInfo(chain, [ca.cert], cached_x509_svids=3, cached_jwt_svids=2, last_sync_success=1767225600.5)
    now = [100.0]
    service = DebugService(lambda: info, time.time() - 65, clock=lambda: now[0])
    resp = await get_info(service)
    assert [c.subject for c in resp.svid_chain] == [chain[0].subject.rfc4514_string(), "CN=agent root"]
    assert (resp.svid_chain[0].id.trust_domain, resp.svid_chain[0].id.path) == (
        "example.org", "/spire/agent/join_token/test")
    assert not resp.svid_chain[1].HasField("id")
    assert (resp.cached_x509_svids_count, resp.svids_count, resp.cached_jwt_svids_count,
            resp.cached_svidstore_x509_svids_count, resp.last_sync_success) == (3, 3, 2, 0, 1767225600)
    assert 65 <= resp.uptime < 120

    info.cached_x509_svids = 9
    assert (await get_info(service)).cached_x509_svids_count == 3  # answered from the 5 s cache
    now[0] += 5
    assert (await get_info(service)).cached_x509_svids_count == 9


async def test_a_chain_that_does_not_verify_is_internal() -> None:
    chain, _ = CA("agent root").svid(AGENT_ID)
    info = AgentInfo(chain, [CA("someone else").cert], 0, 0, 0)
    with pytest.raises(GRPCError) as exc:
        await get_info(DebugService(lambda: info, time.time()))
    assert exc.value.status == Status.INTERNAL
    assert exc.value.message.startswith("failed to verify agent SVID: ")
