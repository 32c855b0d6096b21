"""The agent's admin socket (``admin_socket_path``): Debug, Logger and Delegated Identity APIs.

As SPIRE's: a Unix socket of mode 0770 (owner and group only; the Workload API's is 0777),
its missing directories created 0750 (SPIRE creates them 0755 under its minimum umask 027);
config refuses it beside the Workload API socket.
Callers are tracked from accept (SO_PEERCRED, /proc pinned) like the Workload API's, so the
Delegated Identity API can attest them.
"""

from __future__ import annotations

import os
from typing import Any, Iterable

from ...common import log
from ..workloadapi.caller import CallerRegistry
from ..workloadapi.server import TrackedServer, prepare_dir, remove_stale

_log = log.get("admin_api")

SOCKET_MODE = 0o770
DIR_MODE = 0o750


async def serve_admin_api(socket_path: str, services: Iterable[Any], callers: CallerRegistry) -> TrackedServer:
    prepare_dir(socket_path, DIR_MODE)
    remove_stale(socket_path)
    server = TrackedServer(services, callers)
    old = os.umask(0o077)  # no moment at which others could connect
    try:
        await server.start(path=socket_path)
    finally:
        os.umask(old)
    try:
        os.chmod(socket_path, SOCKET_MODE)
    except OSError as exc:
        server.close()
        await server.wait_closed()
        raise OSError(f"unable to change UDS permissions: {exc}") from None
    _log.info("Starting Admin APIs", extra=log.fields(address=socket_path, network="unix"))
    return server
