"""spire.api.server.logger.v1.Logger (server/api/logger.py) over real gRPC against an in-process
server: the admin socket reads and changes the level, callers over TCP are refused (SPIRE's
policy: local only)."""

from __future__ import annotations

import logging

import pytest
from grpclib.const import Status
from grpclib.exceptions import GRPCError

from spire_py.proto.spire.api.server.logger.v1 import logger_grpc, logger_pb2
from spire_py.proto.spire.api.types import logger_pb2 as types
from tests.unit.helpers.inprocess_server import Handle


async def test_set_and_reset_through_the_admin_socket(server: Handle) -> None:
    stub = server.admin_stub(logger_grpc.LoggerStub)
    launch = (await stub.GetLogger(logger_pb2.GetLoggerRequest())).launch_level
    got = await stub.SetLogLevel(logger_pb2.SetLogLevelRequest(new_level=types.TRACE))
    assert (got.current_level, got.launch_level) == (types.TRACE, launch)
    assert logging.getLogger("spire_py").isEnabledFor(5)
    got = await stub.ResetLogLevel(logger_pb2.ResetLogLevelRequest())
    assert got.current_level == launch


async def test_logger_is_served_to_local_callers_only(server: Handle) -> None:
    tls = server.tls_stub(logger_grpc.LoggerStub)
    for call, req in ((tls.GetLogger, logger_pb2.GetLoggerRequest()),
                      (tls.SetLogLevel, logger_pb2.SetLogLevelRequest(new_level=types.DEBUG)),
                      (tls.ResetLogLevel, logger_pb2.ResetLogLevelRequest())):
        with pytest.raises(GRPCError) as exc:
            await call(req)
        assert exc.value.status == Status.PERMISSION_DENIED
