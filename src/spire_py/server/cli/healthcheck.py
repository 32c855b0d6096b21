"""spire-server healthcheck."""

from __future__ import annotations

from ...common.cli import CommandError, Context, FlagSet
from ...proto.grpc.health.v1 import health_grpc, health_pb2
from .client import AdminClient, rpc_error, socket_flags


def flags(fs: FlagSet) -> None:
    socket_flags(fs, output=False)
    fs.bool("shallow", False, "Perform a less stringent health check")
    fs.bool("verbose", False, "Print verbose information")


async def healthcheck(ctx: Context) -> int:
    if ctx.flags["verbose"]:
        ctx.out("Checking server health...")
    try:
        async with AdminClient(ctx.flags["socketPath"]) as c:
            resp = await c.stub(health_grpc.HealthStub).Check(health_pb2.HealthCheckRequest(), timeout=10)
    except Exception as exc:
        # As SPIRE: the cause goes to stderr only with -verbose; the error line stays fixed.
        if ctx.flags["verbose"]:
            cause = str(exc) if isinstance(exc, CommandError) else rpc_error(exc)
            ctx.stderr.write(f"Failed to check health: {cause}\n")
        raise CommandError("server is unhealthy: unable to determine health") from None
    if resp.status != health_pb2.HealthCheckResponse.SERVING:
        raise CommandError(f'server is unhealthy: server returned status "{health_pb2.HealthCheckResponse.ServingStatus.Name(resp.status)}"')
    ctx.out("Server is healthy.")
    return 0
