"""grpc.health.v1.Health and spire.api.server.debug.v1.Debug."""

from __future__ import annotations

import asyncio
import time
from typing import Any, Callable

from ...proto.grpc.health.v1 import health_grpc, health_pb2
from ...proto.spire.api.server.debug.v1 import debug_grpc, debug_pb2
from ..core import ServerCore

SERVING = health_pb2.HealthCheckResponse.SERVING
NOT_SERVING = health_pb2.HealthCheckResponse.NOT_SERVING


class HealthService(health_grpc.HealthBase):
    def __init__(self, is_ready: Callable[[], bool]) -> None:
        self.is_ready = is_ready

    def _status(self) -> Any:
        return SERVING if self.is_ready() else NOT_SERVING

    async def Check(self, stream: Any) -> None:
        await stream.recv_message()
        await stream.send_message(health_pb2.HealthCheckResponse(status=self._status()))

    async def Watch(self, stream: Any) -> None:
        await stream.recv_message()
        last = None
        while True:
            now = self._status()
            if now != last:
                await stream.send_message(health_pb2.HealthCheckResponse(status=now))
                last = now
            await asyncio.sleep(1)


class DebugService(debug_grpc.DebugBase):
    def __init__(self, core: ServerCore, started: float, svid_chain: Callable[[], list[Any]]) -> None:
        self.core = core
        self.started = started
        self.svid_chain = svid_chain

    async def GetInfo(self, stream: Any) -> None:
        await stream.recv_message()
        ds = self.core.datastore
        agents = await self.core.db(ds.count_attested_nodes)
        entries = await self.core.db(ds.count_entries)
        bundles = await self.core.db(ds.count_bundles)
        chain = []
        for cert in self.svid_chain():
            chain.append(debug_pb2.GetInfoResponse.Cert(
                expires_at=int(cert.not_valid_after_utc.timestamp()),
                subject=cert.subject.rfc4514_string()))
        await stream.send_message(debug_pb2.GetInfoResponse(
            svid_chain=chain, uptime=int(time.time() - self.started), agents_count=agents,
            entries_count=entries, federated_bundles_count=max(0, bundles - 1)))

