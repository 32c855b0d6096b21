"""spire-agent healthcheck, worded as SPIRE's: ``Agent is healthy.`` or ``Agent is unhealthy: ...``
on stderr (with -verbose, first the reason the check could not be made)."""

from __future__ import annotations

from grpclib.client import Channel

from ...common.admin_cli import dial_error_text
from ...common.cli import CommandError, Context, FlagSet
from ...proto.grpc.health.v1 import health_grpc, health_pb2

DEFAULT_SOCKET = "/tmp/spire-agent/public/api.sock"
UNHEALTHY = "Agent is unhealthy: "
CHECK_TIMEOUT = 10


def flags(fs: FlagSet) -> None:
    fs.string("socketPath", DEFAULT_SOCKET, "Path to the SPIRE Agent API socket")
    fs.bool("shallow", False, "Perform a less stringent health check")
    fs.bool("verbose", False, "Print verbose information")


async def healthcheck(ctx: Context) -> int:
    if ctx.flags["verbose"]:
        ctx.out("Checking agent health...")
    path = ctx.flags["socketPath"]
    ch = Channel(path=path)
    try:
        resp = await health_grpc.HealthStub(ch).Check(health_pb2.HealthCheckRequest(), timeout=CHECK_TIMEOUT)
    except Exception as exc:
        if ctx.flags["verbose"]:
            ctx.stdout.flush()
            print(f"Failed to check health: {dial_error_text(exc, path)}", file=ctx.stderr)
        raise CommandError("unable to determine health", prefix=UNHEALTHY) from None
    finally:
        ch.close()
    if resp.status != health_pb2.HealthCheckResponse.SERVING:
        name = health_pb2.HealthCheckResponse.ServingStatus.Name(resp.status)
        raise CommandError(f'agent returned status "{name}"', prefix=UNHEALTHY)
    ctx.out("Agent is healthy.")
    return 0
