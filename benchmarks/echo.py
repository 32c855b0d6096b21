"""The Workload API baseline: a unary gRPC echo on a Unix socket, served by grpclib on the
agent's own event loop (common/eventloop.py: uvloop unless SPIRE_PY_EVENT_LOOP says otherwise)
in its own process, with no handler logic at all.

    python -m benchmarks.echo SOCKET
"""

from __future__ import annotations

import asyncio
import os
import signal
import sys
from typing import Any

from google.protobuf import wrappers_pb2
from grpclib.const import Cardinality, Handler
from grpclib.server import Server

from spire_py.common import eventloop

METHOD = "/bench.Echo/Echo"


class EchoService:
    async def Echo(self, stream: Any) -> None:
        req = await stream.recv_message()
        await stream.send_message(req)

    def __mapping__(self) -> dict[str, Handler]:
        return {METHOD: Handler(self.Echo, Cardinality.UNARY_UNARY, wrappers_pb2.BytesValue, wrappers_pb2.BytesValue)}


async def serve(path: str) -> None:
    server = Server([EchoService()])
    await server.start(path=path)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    print("ready", flush=True)
    await stop.wait()
    server.close()
    await server.wait_closed()
    if os.path.exists(path):
        os.unlink(path)


if __name__ == "__main__":
    eventloop.run(serve(sys.argv[1]))
