"""spire-server logger get | set | reset: the server's log level through its Logger API."""

from __future__ import annotations

from ...common import admin_cli
from ...common.cli import Context, FlagSet
from ...proto.spire.api.server.logger.v1 import logger_grpc, logger_pb2
from .client import socket_flags


def flags(fs: FlagSet) -> None:
    socket_flags(fs, output=False)
    admin_cli.output_flag(fs)


def set_flags(fs: FlagSet) -> None:
    flags(fs)
    admin_cli.level_flag(fs)


async def get(ctx: Context) -> int:
    return await admin_cli.logger_get(ctx, logger_grpc.LoggerStub, logger_pb2.GetLoggerRequest())


async def set_(ctx: Context) -> int:
    return await admin_cli.logger_set(ctx, logger_grpc.LoggerStub,
                                      lambda level: logger_pb2.SetLogLevelRequest(new_level=level))


async def reset(ctx: Context) -> int:
    return await admin_cli.logger_reset(ctx, logger_grpc.LoggerStub, logger_pb2.ResetLogLevelRequest())
