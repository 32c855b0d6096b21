"""spire-server token generate."""

from __future__ import annotations

from ...common.cli import Context, FlagSet
from ...proto.spire.api.server.agent.v1 import agent_grpc, agent_pb2
from .client import AdminClient, socket_flags
from .main import app
from .printing import call, check_int32, is_json, print_proto_json, spiffe_id_proto


def _generate_flags(fs: FlagSet) -> None:
    socket_flags(fs)
    fs.int("ttl", 600, "Token TTL in seconds")
    fs.string("spiffeID", "", "Additional SPIFFE ID to assign the token owner (optional)")


@app.command("token generate", "Generates a join token", _generate_flags)
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
