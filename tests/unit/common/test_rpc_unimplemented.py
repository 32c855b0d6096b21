"""A path a GuardedServer does not serve is UNIMPLEMENTED with grpc-go's words, for grpclib
clients as for grpc-go/grpcio ones (grpclib's own answer lacks a content-type, which grpclib
clients report as UNKNOWN)."""

from __future__ import annotations

import asyncio
import os
import tempfile

import grpc
import pytest
from grpclib.client import Channel
from grpclib.const import Status
from grpclib.exceptions import GRPCError

from spire_py.agent.adminapi.logger import LoggerService
from spire_py.common.rpc import GuardedServer
from spire_py.proto.spire.api.agent.debug.v1 import debug_grpc, debug_pb2


@pytest.fixture
async def served():
    d = tempfile.mkdtemp(prefix="rpc-", dir="/tmp")
    sock = os.path.join(d, "api.sock")
    server = GuardedServer([LoggerService()])
    await server.start(path=sock)
    try:
        yield sock
    finally:
        server.close()
        await server.wait_closed()
        os.unlink(sock)
        os.rmdir(d)


async def test_unknown_service_for_a_grpclib_client(served) -> None:
    ch = Channel(path=served)
    try:
        with pytest.raises(GRPCError) as exc:
            await debug_grpc.DebugStub(ch).GetInfo(debug_pb2.GetInfoRequest(), timeout=10)
    finally:
        ch.close()
    assert (exc.value.status, exc.value.message) == (Status.UNIMPLEMENTED, "unknown service spire.agent.debug.v1.Debug")


async def test_unknown_method_of_a_served_service_for_grpcio(served) -> None:
    def call() -> grpc.RpcError:
        with grpc.insecure_channel(f"unix:{served}") as channel:
            try:
                channel.unary_unary("/spire.api.agent.logger.v1.Logger/Nope", request_serializer=None,
                                    response_deserializer=None)(b"", timeout=10)
            except grpc.RpcError as exc:
                return exc
        raise AssertionError("the call succeeded")

    err = await asyncio.get_running_loop().run_in_executor(None, call)
    assert (err.code(), err.details()) == (
        grpc.StatusCode.UNIMPLEMENTED, "unknown method Nope for service spire.api.agent.logger.v1.Logger")
