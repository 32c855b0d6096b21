"""The Workload API's Unix socket: created as SPIRE does it, callers tracked from accept.

The socket is world-connectable (0777, SPIRE's convention): the Workload API
authorizes by attesting the caller, not by file permissions.
"""

from __future__ import annotations

import asyncio
import os
import stat
from typing import Any, Iterable, Optional

from grpclib.server import Server

from ...common import log
from ...common.rpc import GuardedServer
from .caller import CallerRegistry
from .handler import WorkloadAPIService

_log = log.get("workload_api")

SOCKET_MODE = 0o777
DIR_MODE = 0o755
CLOSE_TIMEOUT = 5.0


class TrackedServer(GuardedServer):
    """A bounded gRPC server (common.rpc: message sizes, status strings, backlog) that tells
    ``callers`` about each connection as it is accepted, so the caller's /proc entry is pinned
    before any request is read (pid-reuse guard). The Workload API and the admin API use it."""

    def __init__(self, handlers: Iterable[Any], callers: CallerRegistry) -> None:
        super().__init__(handlers)
        self.callers = callers
        self.transports: set[Any] = set()

    def _protocol_factory(self) -> Any:
        protocol = super()._protocol_factory()
        registry = self.callers
        made, lost = protocol.connection_made, protocol.connection_lost
        conn: dict[str, Any] = {}

        def connection_made(transport: Any) -> None:
            made(transport)
            # What the streams see as stream.peer._transport: h2writes.CoalescingTransport over ``transport``.
            transport = protocol.connection._transport
            conn["transport"] = transport
            self.transports.add(transport)
            registry.connection_made(transport)

        def connection_lost(exc: Optional[BaseException]) -> None:
            try:
                lost(exc)
            finally:
                if "transport" in conn:
                    transport = conn.pop("transport")
                    self.transports.discard(transport)
                    registry.connection_lost(transport)

        protocol.connection_made = connection_made  # type: ignore[method-assign]
        protocol.connection_lost = connection_lost  # type: ignore[method-assign]
        return protocol

    def drop_connections(self) -> None:
        """grpclib keeps accepted connections open after close(); clients must see the agent go."""
        for transport in list(self.transports):
            transport.close()


class WorkloadAPIServer(TrackedServer):
    """The Workload API (and SDS, health) on the public socket; callers go to the service's registry."""

    def __init__(self, service: WorkloadAPIService, extra_services: Iterable[Any] = (),
                 serve_workload_api: bool = True) -> None:
        # With disable_workload_api the service still attests SDS callers, unserved.
        super().__init__([service, *extra_services] if serve_workload_api else list(extra_services),
                         service.callers)
        self.service = service


def prepare_dir(path: str, mode: int = DIR_MODE) -> None:
    """Create the socket's missing parent directories with ``mode`` (not filtered by the umask)."""
    missing = []
    d = os.path.dirname(os.path.abspath(path))
    while d and not os.path.isdir(d):
        missing.append(d)
        d = os.path.dirname(d)
    for d in reversed(missing):
        os.mkdir(d, mode)
        os.chmod(d, mode)  # mkdir's mode is filtered by the umask


def remove_stale(path: str) -> None:
    try:
        st = os.lstat(path)
    except FileNotFoundError:
        return
    if stat.S_ISDIR(st.st_mode):
        raise OSError(f"cannot listen on {path}: it is a directory")
    os.unlink(path)


async def serve_workload_api(
    socket_path: str, service: WorkloadAPIService, extra_services: Iterable[Any] = (),
    serve_workload_api: bool = True,
) -> WorkloadAPIServer:
    """Listen on ``socket_path`` (parent created 0755, stale socket removed, socket 0777)."""
    prepare_dir(socket_path)
    remove_stale(socket_path)
    server = WorkloadAPIServer(service, extra_services, serve_workload_api)
    await server.start(path=socket_path)
    try:
        os.chmod(socket_path, SOCKET_MODE)
    except OSError as exc:
        server.close()
        await server.wait_closed()
        raise OSError(f"unable to change UDS permissions: {exc}") from None
    return server


async def close_workload_api(server: Server, socket_path: Optional[str] = None) -> None:
    """End every stream with UNAVAILABLE, stop accepting, drop connections, remove the socket."""
    if isinstance(server, WorkloadAPIServer):
        await server.service.shutdown()
    server.close()
    if isinstance(server, TrackedServer):
        server.drop_connections()
    try:
        await asyncio.wait_for(server.wait_closed(), CLOSE_TIMEOUT)
    except asyncio.TimeoutError:
        _log.warning("Workload API streams did not end in time")
    if isinstance(server, TrackedServer):
        server.callers.close()
    if socket_path:
        try:
            os.unlink(socket_path)
        except FileNotFoundError:
            pass
