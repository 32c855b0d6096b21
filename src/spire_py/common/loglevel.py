"""The daemons' root log level at run time: what both Logger APIs (server and agent) read and change.

SPIRE's levels are logrus's seven (panic, fatal, error, warn, info, debug, trace); Python's
logging has five, so trace and panic get levels of their own below DEBUG and above CRITICAL.
``launch_level`` is the level the process started with: ResetLogLevel goes back to it.
"""

from __future__ import annotations

import logging
from typing import Any

from grpclib.const import Status
from grpclib.exceptions import GRPCError

from . import log
from .log import PANIC, TRACE
from .rpc import current_call
from ..proto.spire.api.types import logger_pb2

# logrus name -> Python level, most severe first (the order of SPIRE's LogLevel enum).
LEVELS: dict[str, int] = {
    "panic": PANIC,
    "fatal": logging.CRITICAL,
    "error": logging.ERROR,
    "warn": logging.WARNING,
    "info": logging.INFO,
    "debug": logging.DEBUG,
    "trace": TRACE,
}
# logrus.ParseLevel also takes "warning".
_ALIASES = {"warning": "warn"}


def parse(name: str) -> str:
    """A level name as logrus.ParseLevel reads it (any case, "warning" too); ValueError if unknown."""
    low = name.lower()
    low = _ALIASES.get(low, low)
    if low not in LEVELS:
        raise ValueError(f'not a valid logrus Level: "{name}"')
    return low


def name_of(level: int) -> str:
    """The logrus name of a Python level (a level between two names takes the more verbose one)."""
    for name, value in LEVELS.items():
        if level >= value:
            return name
    return "trace"


def to_api(name: str) -> "logger_pb2.LogLevel":
    """logrus name -> spire.api.types.LogLevel."""
    return logger_pb2.LogLevel.Value(name.upper())  # type: ignore[return-value]  # the stub says int


def from_api(value: int) -> str:
    """spire.api.types.LogLevel -> logrus name; ValueError for UNSPECIFIED or an unknown number."""
    try:
        name = logger_pb2.LogLevel.Name(value)
    except ValueError:
        raise ValueError("unsupported log level") from None
    if name == "UNSPECIFIED":
        raise ValueError("newLevel value cannot be LogLevel_UNSPECIFIED")
    return name.lower()


class RootLevel:
    """The daemon's root logger level, and the level it was launched with."""

    def __init__(self, logger: logging.Logger | None = None) -> None:
        self.logger = logger or logging.getLogger("spire_py")
        self.launch = name_of(self.logger.getEffectiveLevel())

    @property
    def current(self) -> str:
        return name_of(self.logger.getEffectiveLevel())

    def set(self, name: str) -> None:
        self.logger.setLevel(LEVELS[parse(name)])

    def reset(self) -> None:
        self.set(self.launch)

    def as_api(self) -> logger_pb2.Logger:
        return logger_pb2.Logger(current_level=to_api(self.current), launch_level=to_api(self.launch))


class LoggerAPI:
    """GetLogger, SetLogLevel and ResetLogLevel as SPIRE's server and agent serve them; each
    side mixes this into its generated ``LoggerBase`` (the two services differ only by package)."""

    root: RootLevel

    def __init__(self, root: RootLevel | None = None, *, subsystem: str = "logger_api") -> None:
        self.root = root or RootLevel()
        self._log = log.get(subsystem)
        self._log.info("Logger service configured", extra=log.fields(launch_log_level=self.root.launch))

    async def GetLogger(self, stream: Any) -> None:
        await stream.recv_message()
        self._log.info("GetLogger Called")
        await stream.send_message(self.root.as_api())

    async def SetLogLevel(self, stream: Any) -> None:
        req = await stream.recv_message()
        try:
            call = current_call()
            call.extra["new_log_level"] = logger_pb2.LogLevel.Name(req.new_level)
        except (RuntimeError, ValueError):  # outside a guarded server, or a number with no name
            pass
        try:
            name = from_api(req.new_level)
        except ValueError as exc:
            self._log.error("Invalid argument: " + str(exc))
            raise GRPCError(Status.INVALID_ARGUMENT, str(exc)) from None
        self._log.info("SetLogLevel Called", extra=log.fields(new_log_level=name))
        self.root.set(name)
        await stream.send_message(self.root.as_api())

    async def ResetLogLevel(self, stream: Any) -> None:
        await stream.recv_message()
        self._log.info("ResetLogLevel Called", extra=log.fields(launch_log_level=self.root.launch))
        self.root.reset()
        await stream.send_message(self.root.as_api())
