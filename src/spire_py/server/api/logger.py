"""spire.api.server.logger.v1.Logger: the server's root log level, read and changed at run time.

The admin socket only (SPIRE's policy: ``allow_local``); the behaviour is common/loglevel's,
shared with the agent's Logger API.
"""

from __future__ import annotations

from ...common.loglevel import LoggerAPI, RootLevel
from ...proto.spire.api.server.logger.v1 import logger_grpc


class LoggerService(LoggerAPI, logger_grpc.LoggerBase):
    def __init__(self, root: RootLevel | None = None) -> None:
        super().__init__(root, subsystem="logger_api")
