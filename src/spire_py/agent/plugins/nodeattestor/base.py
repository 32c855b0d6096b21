"""The agent side of node attestation: a payload, then answers to the server's challenges."""

from __future__ import annotations

from ....common.errors import SpireError
from ....common.plugin import Plugin


class AgentAttestationError(SpireError):
    """The agent cannot produce attestation data (missing or unreadable credentials)."""


class AgentNodeAttestor(Plugin):
    TYPE = "NodeAttestor"

    async def payload(self) -> bytes:
        raise NotImplementedError

    async def respond(self, challenge: bytes) -> bytes:
        raise AgentAttestationError(f"{self.NAME} attestor does not answer challenges")
