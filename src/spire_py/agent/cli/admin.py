"""spire-agent debug getinfo | logger get|set|reset: clients of the agent's admin socket, as SPIRE's.

Errors are printed as SPIRE's command adapter prints them: ``Error: `` and the message.
"""

from __future__ import annotations

from typing import Any

from ...common import admin_cli
from ...common.cli import Context, FlagSet
from ...common.cliprinter import is_json, print_proto_json, rfc3339
from ...common.duration import format_duration
from ...proto.spire.api.agent.debug.v1 import debug_grpc, debug_pb2
from ...proto.spire.api.agent.logger.v1 import logger_grpc, logger_pb2

DEFAULT_ADMIN_SOCKET = "/tmp/spire-agent/private/admin.sock"


def flags(fs: FlagSet) -> None:
    fs.string("socketPath", DEFAULT_ADMIN_SOCKET, "Path to the SPIRE Agent admin API socket")
    admin_cli.output_flag(fs)


def set_flags(fs: FlagSet) -> None:
    flags(fs)
    admin_cli.level_flag(fs)


# --- debug getinfo -----------------------------------------------------------------------
def _spiffe_id(cert: Any) -> str:
    if not cert.HasField("id"):
        return "(none)"
    return f"spiffe://{cert.id.trust_domain}{cert.id.path}"


def print_info(ctx: Context, resp: debug_pb2.GetInfoResponse) -> None:
    last = rfc3339(resp.last_sync_success) if resp.last_sync_success else "(never)"
    ctx.out("Agent Debug Info:")
    ctx.out(f"  Uptime:                          {format_duration(resp.uptime)}")
    ctx.out(f"  Last Sync Success:               {last}")
    ctx.out(f"  Cached X.509 SVIDs:              {resp.cached_x509_svids_count}")
    ctx.out(f"  Cached JWT SVIDs:                {resp.cached_jwt_svids_count}")
    ctx.out(f"  Cached SVID Store X.509 SVIDs:   {resp.cached_svidstore_x509_svids_count}")
    if resp.svid_chain:
        ctx.out("  SVID Chain:")
        for i, cert in enumerate(resp.svid_chain):
            ctx.out(f"    [{i}] SPIFFE ID:  {_spiffe_id(cert)}")
            ctx.out(f"        Subject:    {cert.subject}")
            ctx.out(f"        Expires At: {rfc3339(cert.expires_at)}")


async def getinfo(ctx: Context) -> int:
    as_json = is_json(ctx)
    resp = await admin_cli.unary(ctx.flags["socketPath"], debug_grpc.DebugStub, "GetInfo", debug_pb2.GetInfoRequest())
    if as_json:
        print_proto_json(ctx, resp)
    else:
        print_info(ctx, resp)
    return 0


# --- logger ------------------------------------------------------------------------------
async def logger_get(ctx: Context) -> int:
    return await admin_cli.logger_get(ctx, logger_grpc.LoggerStub, logger_pb2.GetLoggerRequest())


async def logger_set(ctx: Context) -> int:
    return await admin_cli.logger_set(ctx, logger_grpc.LoggerStub,
                                      lambda level: logger_pb2.SetLogLevelRequest(new_level=level))


async def logger_reset(ctx: Context) -> int:
    return await admin_cli.logger_reset(ctx, logger_grpc.LoggerStub, logger_pb2.ResetLogLevelRequest())
