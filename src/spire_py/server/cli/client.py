"""The admin-socket client the server's commands call the API through."""

from __future__ import annotations

import os
from typing import Any, Awaitable, Optional, TypeVar

from grpclib.client import Channel
from grpclib.exceptions import GRPCError, StreamTerminatedError

from ...common.cli import CommandError, FlagSet
from ...common.cliprinter import rpc_error_text

DEFAULT_SOCKET = "/tmp/spire-server/private/api.sock"

T = TypeVar("T")


def socket_flags(fs: FlagSet, output: bool = True) -> None:
    fs.string("socketPath", DEFAULT_SOCKET, "Path to the SPIRE Server API socket")
    if output:
        fs.string("output", "pretty", "Desired output format (pretty, json)")


class AdminClient:
    """Opens the admin Unix socket and hands out stubs; closes on exit."""

    def __init__(self, socket_path: str) -> None:
        self.socket_path = socket_path
        self.channel: Optional[Channel] = None

    async def __aenter__(self) -> "AdminClient":
        if not os.path.exists(self.socket_path):
            raise CommandError(f'connection error: desc = "transport: error while dialing: dial unix {self.socket_path}: connect: no such file or directory"')
        self.channel = Channel(path=self.socket_path)
        return self

    async def __aexit__(self, *exc: Any) -> None:
        if self.channel is not None:
            self.channel.close()

    def stub(self, cls: Any) -> Any:
        return cls(self.channel)


def rpc_error(exc: BaseException) -> CommandError:
    if isinstance(exc, GRPCError):
        return CommandError(rpc_error_text(exc))
    if isinstance(exc, (ConnectionError, StreamTerminatedError, OSError)):
        return CommandError(f"connection error: {exc}")
    return CommandError(str(exc))


async def call(aw: Awaitable[T], prefix: str = "") -> T:
    """Await an RPC; a failure becomes SPIRE's one-line error."""
    try:
        return await aw
    except (GRPCError, StreamTerminatedError, ConnectionError, OSError) as exc:
        err = rpc_error(exc)
        raise CommandError(f"{prefix}{err}" if prefix else str(err)) from None
