"""spire.api.agent.logger.v1.Logger: the agent's root log level at run time (common/loglevel)."""

from __future__ import annotations

from ...common.loglevel import LoggerAPI, RootLevel
from ...proto.spire.api.agent.logger.v1 import logger_grpc


class LoggerService(LoggerAPI, logger_grpc.LoggerBase):
    def __init__(self, root: RootLevel | None = None) -> None:
        super().__init__(root, subsystem="logger_api")
