"""grpc.health.v1.Health, served by the server on its API socket and by the agent beside the Workload API.

(The HTTP health_checks listener is common/health.py.)
"""

from __future__ import annotations

import asyncio
from typing import Any, Callable

from ..proto.grpc.health.v1 import health_grpc, health_pb2

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
