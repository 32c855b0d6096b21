"""spire-server token generate."""

from __future__ import annotations

from ...common.cli import Context, FlagSet
from ...common.cliprinter import is_json, print_proto_json
from ...proto.spire.api.server.agent.v1 import agent_grpc, agent_pb2
from .arguments import check_int32, spiffe_id_proto
from .client import AdminClient, call, socket_flags


def generate_flags(fs: FlagSet) -> None:
    socket_flags(fs)
    fs.int("ttl", 600, "Token TTL in seconds")
    fs.string("spiffeID", "", "Additional SPIFFE ID to assign the token owner (optional)")


async def generate(ctx: Context) -> int:
    as_json = is_json(ctx)
    spiffe_id = ctx.flags["spiffeID"]
    req = agent_pb2.CreateJoinTokenRequest(ttl=check_int32(ctx.flags["ttl"], "TTL"))
    if spiffe_id:
        req.agent_id.CopyFrom(spiffe_id_proto(spiffe_id))
    async with AdminClient(ctx.flags["socketPath"]) as c:
        token = await call(c.stub(agent_grpc.AgentStub).CreateJoinToken(req))
    if as_json:
        print_proto_json(ctx, token)
        return 0
    ctx.out(f"Token: {token.value}")
    if not spiffe_id:
        ctx.out("Warning: Missing SPIFFE ID.")
    return 0
