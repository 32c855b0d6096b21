"""common/loglevel: logrus's seven levels on Python's logging, and the Logger API both daemons
serve (here the agent's, over real gRPC on a Unix socket)."""

from __future__ import annotations

import asyncio
import logging
from pathlib import Path

import pytest
from grpclib.client import Channel
from grpclib.const import Status
from grpclib.exceptions import GRPCError

from spire_py.agent.adminapi.logger import LoggerService
from spire_py.common import log, loglevel
from spire_py.common.rpc import GuardedServer
from spire_py.proto.spire.api.agent.logger.v1 import logger_grpc, logger_pb2
from spire_py.proto.spire.api.types import logger_pb2 as types


@pytest.mark.parametrize(("name", "parsed"), [("TRACE", "trace"), ("Warning", "warn"), ("panic", "panic")])
def test_level_names_parse_as_logrus_does(name, parsed) -> None:
    assert loglevel.parse(name) == parsed


def test_unknown_level_name_is_refused() -> None:
    with pytest.raises(ValueError):
        loglevel.parse("verbose")


def test_api_levels_round_trip_and_unspecified_is_refused() -> None:
    for name in loglevel.LEVELS:
        assert loglevel.from_api(loglevel.to_api(name)) == name
    assert loglevel.to_api("trace") == types.TRACE
    with pytest.raises(ValueError, match="LogLevel_UNSPECIFIED"):
        loglevel.from_api(types.UNSPECIFIED)
    with pytest.raises(ValueError, match="unsupported log level"):
        loglevel.from_api(42)


def test_every_python_level_has_a_logrus_name() -> None:
    assert [loglevel.name_of(n) for n in (1, log.TRACE, logging.DEBUG, logging.INFO, logging.WARNING,
                                          logging.ERROR, logging.CRITICAL, log.PANIC)] == [
        "trace", "trace", "debug", "info", "warn", "error", "fatal", "panic"]


def test_root_level_set_and_reset_to_the_launch_level() -> None:
    logger = logging.getLogger("spire_py.test_loglevel_root")
    logger.setLevel(logging.INFO)
    root = loglevel.RootLevel(logger)
    root.set("trace")
    assert (root.current, root.launch, logger.isEnabledFor(log.TRACE)) == ("trace", "info", True)
    root.reset()
    assert (root.current, logger.isEnabledFor(logging.DEBUG)) == ("info", False)


def test_logger_api_over_grpc(tmp_path: Path) -> None:
    logger = logging.getLogger("spire_py.test_loglevel_api")
    logger.setLevel(logging.DEBUG)

    async def scenario() -> None:
        server = GuardedServer([LoggerService(loglevel.RootLevel(logger))])
        sock = str(tmp_path / "admin.sock")
        await server.start(path=sock)
        ch = Channel(path=sock)
        try:
            stub = logger_grpc.LoggerStub(ch)
            got = await stub.GetLogger(logger_pb2.GetLoggerRequest())
            assert (got.current_level, got.launch_level) == (types.DEBUG, types.DEBUG)
            got = await stub.SetLogLevel(logger_pb2.SetLogLevelRequest(new_level=types.ERROR))
            assert (got.current_level, got.launch_level, logger.level) == (types.ERROR, types.DEBUG, logging.ERROR)
            for level, message in ((types.UNSPECIFIED, "newLevel value cannot be LogLevel_UNSPECIFIED"),
                                   (99, "unsupported log level")):
                with pytest.raises(GRPCError) as exc:
                    await stub.SetLogLevel(logger_pb2.SetLogLevelRequest(new_level=level))
                assert (exc.value.status, exc.value.message) == (Status.INVALID_ARGUMENT, message)
            got = await stub.ResetLogLevel(logger_pb2.ResetLogLevelRequest())
            assert (got.current_level, logger.level) == (types.DEBUG, logging.DEBUG)
        finally:
            ch.close()
            server.close()
            await server.wait_closed()

    asyncio.run(scenario())
