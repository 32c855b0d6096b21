"""spire-agent healthcheck."""

from __future__ import annotations

import os

from grpclib.client import Channel

from ...common.cli import CommandError, Context, FlagSet
from ...proto.grpc.health.v1 import health_grpc, health_pb2

DEFAULT_SOCKET = "/tmp/spire-agent/public/api.sock"


def flags(fs: FlagSet) -> None:
    fs.string("socketPath", DEFAULT_SOCKET, "Path to the SPIRE Agent API socket")
    fs.bool("shallow", False, "Perform a less stringent health check")
    fs.bool("verbose", False, "Print verbose information")


async def healthcheck(ctx: Context) -> int:
    if ctx.flags["verbose"]:
        ctx.out("Checking agent health...")
    path = ctx.flags["socketPath"]
    if not os.path.exists(path):
        raise CommandError(f"agent is unhealthy: unable to determine health: socket {path} does not exist")
    ch = Channel(path=path)
    try:
        resp = await health_grpc.HealthStub(ch).Check(health_pb2.HealthCheckRequest(), timeout=10)
    except Exception as exc:
        raise CommandError(f"agent is unhealthy: unable to determine health: {exc}") from None
    finally:
        ch.close()
    if resp.status != health_pb2.HealthCheckResponse.SERVING:
        raise CommandError("agent is unhealthy: agent returned status \"NOT_SERVING\"")
    ctx.out("Agent is healthy.")
    return 0
