"""Admin-socket client used by the CLI commands (and by the Ansible modules)."""

from __future__ import annotations

import json
import os
from typing import Any, Iterator, Optional

from google.protobuf import json_format
from grpclib.client import Channel
from grpclib.exceptions import GRPCError, StreamTerminatedError

from ...common.cli import CommandError, Context, FlagSet

DEFAULT_SOCKET = "/tmp/spire-server/private/api.sock"


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
        return CommandError(f"rpc error: code = {_code_name(exc.status)} desc = {exc.message}")
    if isinstance(exc, (ConnectionError, StreamTerminatedError, OSError)):
        return CommandError(f"connection error: {exc}")
    return CommandError(str(exc))


def _code_name(status: Any) -> str:
    return "".join(p.capitalize() for p in status.name.split("_")).replace("Ok", "OK")


def code_name(code: int) -> str:
    from grpclib.const import Status

    return _code_name(Status(code))


def to_json(msg: Any) -> Any:
    """Proto → JSON the way SPIRE's -output json prints it (proto field names, defaults kept)."""
    return json_format.MessageToDict(msg, preserving_proto_field_name=True, always_print_fields_with_no_presence=True)


def print_json(ctx: Context, msg: Any) -> None:
    ctx.out(json.dumps(to_json(msg)))


def want_json(ctx: Context) -> bool:
    fmt = ctx.flags.get("output", "pretty")
    if fmt not in ("pretty", "json"):
        raise CommandError(f'invalid output format "{fmt}"; supported formats: pretty, json')
    return fmt == "json"


def split_lines(values: list[str]) -> Iterator[str]:
    for v in values:
        yield from (x for x in v.split(",") if x)
