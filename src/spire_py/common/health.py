"""The health_checks HTTP listener: GET live_path and ready_path, as SPIRE serves them.

200 with a small JSON body when healthy, 500 when not; anything else is 404.
"""

from __future__ import annotations

import asyncio
import json
from typing import Callable, Optional

from . import log

_log = log.get("health")


class HealthListener:
    def __init__(
        self,
        bind_address: str,
        bind_port: int,
        live_path: str,
        ready_path: str,
        is_live: Callable[[], bool],
        is_ready: Callable[[], bool],
    ) -> None:
        self.addr = bind_address
        self.port = bind_port
        self.live_path = live_path
        self.ready_path = ready_path
        self.is_live = is_live
        self.is_ready = is_ready
        self._server: Optional[asyncio.base_events.Server] = None

    async def start(self) -> None:
        self._server = await asyncio.start_server(self._handle, self.addr, self.port)
        _log.info("Serving health checks", extra=log.fields(address=f"{self.addr}:{self.port}"))

    async def close(self) -> None:
        if self._server is not None:
            self._server.close()
            await self._server.wait_closed()

    async def _handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            line = await asyncio.wait_for(reader.readline(), 5)
            while (await asyncio.wait_for(reader.readline(), 5)) not in (b"\r\n", b"\n", b""):
                pass
            parts = line.decode("latin-1").split()
            path = parts[1].split("?", 1)[0] if len(parts) >= 2 else ""
            if path == self.live_path:
                ok = self.is_live()
                body: dict[str, object] = {"live": ok}
            elif path == self.ready_path:
                ok = self.is_ready()
                body = {"ready": ok}
            else:
                ok, body = False, {}
            code = "200 OK" if ok else ("404 Not Found" if not body else "500 Internal Server Error")
            data = json.dumps(body).encode()
            writer.write(
                f"HTTP/1.1 {code}\r\nContent-Type: application/json\r\nContent-Length: {len(data)}\r\nConnection: close\r\n\r\n".encode()
                + data
            )
            await writer.drain()
        except (asyncio.TimeoutError, ConnectionError):
            pass
        finally:
            writer.close()
