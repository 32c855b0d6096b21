"""What ``spire-server logger`` and ``spire-agent logger|debug`` share: one unary call on a
daemon's admin socket, errors worded as grpc-go's, and the Logger printout (SPIRE's
pkg/common/api/logger PrettyPrintLogger)."""

from __future__ import annotations

import asyncio
from typing import Any, Callable

from grpclib.client import Channel
from grpclib.exceptions import GRPCError, StreamTerminatedError

from . import loglevel
from .cli import CommandError, Context, FlagSet
from .cliprinter import is_json, print_proto_json, rpc_error_text
from ..proto.spire.api.types import logger_pb2

OUTPUT_USAGE = "Desired output format (pretty, json); default: pretty."
LEVEL_USAGE = "The new log level, one of (panic, fatal, error, warn, info, debug, trace)"
RPC_TIMEOUT = 30.0


def output_flag(fs: FlagSet) -> None:
    fs.string("output", "pretty", OUTPUT_USAGE)


def level_flag(fs: FlagSet) -> None:
    fs.string("level", "", LEVEL_USAGE)


def dial_error_text(exc: BaseException, socket_path: str) -> str:
    """A call that failed before or during the exchange, as grpc-go's status error reads."""
    if isinstance(exc, GRPCError):
        return rpc_error_text(exc)
    if isinstance(exc, asyncio.TimeoutError):
        return "rpc error: code = DeadlineExceeded desc = context deadline exceeded"
    if isinstance(exc, OSError) and exc.strerror:
        return ("rpc error: code = Unavailable desc = connection error: desc = \"transport: Error while dialing: "
                f'dial unix {socket_path}: connect: {exc.strerror.lower()}"')
    return f"rpc error: code = Unavailable desc = {exc}"


async def unary(socket_path: str, stub_cls: Any, method: str, request: Any, prefix: str = "") -> Any:
    """``stub_cls(channel).<method>(request)`` on the Unix socket; failures become one CommandError
    (``prefix`` + grpc-go's text)."""
    channel = Channel(path=socket_path)
    try:
        return await getattr(stub_cls(channel), method)(request, timeout=RPC_TIMEOUT)
    except (GRPCError, StreamTerminatedError, OSError, asyncio.TimeoutError) as exc:
        raise CommandError(prefix + dial_error_text(exc, socket_path)) from None
    finally:
        channel.close()


def requested_level(ctx: Context) -> "logger_pb2.LogLevel":
    """``-level`` as the API's LogLevel, checked as SPIRE's ``logger set`` checks it."""
    raw = ctx.flags["level"]
    if not raw:
        raise CommandError("a value (-level) must be set")
    try:
        name = loglevel.parse(raw)
    except ValueError:
        raise CommandError(f'the value "{raw}" is not a valid setting') from None
    return loglevel.to_api(name)


def print_logger(ctx: Context, resp: Any) -> None:
    if is_json(ctx):
        print_proto_json(ctx, resp)
        return
    try:
        current = loglevel.from_api(resp.current_level)
    except ValueError:
        raise CommandError("internal error: returned current log level is undefined; please report this as a bug") from None
    try:
        launch = loglevel.from_api(resp.launch_level)
    except ValueError:
        raise CommandError("internal error: returned launch log level is undefined; please report this as a bug") from None
    ctx.out(f"Logger Level : {current}\nLaunch Level : {launch}\n")


async def logger_get(ctx: Context, stub_cls: Any, request: Any) -> int:
    is_json(ctx)  # a bad -output fails before the call, as cliprinter's flag does
    resp = await unary(ctx.flags["socketPath"], stub_cls, "GetLogger", request, "error fetching logger: ")
    print_logger(ctx, resp)
    return 0


async def logger_set(ctx: Context, stub_cls: Any, make_request: Callable[["logger_pb2.LogLevel"], Any]) -> int:
    is_json(ctx)
    level = requested_level(ctx)
    resp = await unary(ctx.flags["socketPath"], stub_cls, "SetLogLevel", make_request(level),
                       "failed to set log level: ")
    print_logger(ctx, resp)
    return 0


async def logger_reset(ctx: Context, stub_cls: Any, request: Any) -> int:
    is_json(ctx)
    resp = await unary(ctx.flags["socketPath"], stub_cls, "ResetLogLevel", request, "failed to reset logger: ")
    print_logger(ctx, resp)
    return 0
