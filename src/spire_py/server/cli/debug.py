"""spire-server debug getinfo: the Debug API's answer, printed as SPIRE's cmd/spire-server/cli/debug."""

from __future__ import annotations

from typing import Any

from ...common.cli import Context
from ...common.cliprinter import is_json, print_proto_json, rfc3339
from ...common.duration import format_duration
from ...proto.spire.api.server.debug.v1 import debug_grpc, debug_pb2
from .client import AdminClient, call


def _spiffe_id(cert: Any) -> str:
    if not cert.HasField("id"):
        return "(none)"
    return f"spiffe://{cert.id.trust_domain}{cert.id.path}"


def print_info(ctx: Context, resp: debug_pb2.GetInfoResponse) -> None:
    w = ctx.stdout.write
    w("Server Debug Info:\n")
    w(f"  Uptime:                  {format_duration(resp.uptime)}\n")
    w(f"  Registered Agents:       {resp.agents_count}\n")
    w(f"  Registration Entries:    {resp.entries_count}\n")
    w(f"  Federated Bundles:       {resp.federated_bundles_count}\n")
    if resp.svid_chain:
        w("  SVID Chain:\n")
        for i, cert in enumerate(resp.svid_chain):
            w(f"    [{i}] SPIFFE ID:  {_spiffe_id(cert)}\n")
            w(f"        Subject:    {cert.subject}\n")
            w(f"        Expires At: {rfc3339(cert.expires_at)}\n")


async def getinfo(ctx: Context) -> int:
    as_json = is_json(ctx)
    async with AdminClient(ctx.flags["socketPath"]) as c:
        resp = await call(c.stub(debug_grpc.DebugStub).GetInfo(debug_pb2.GetInfoRequest()))
    if as_json:
        print_proto_json(ctx, resp)
    else:
        print_info(ctx, resp)
    return 0
