"""The server side of node attestation, as SPIRE's NodeAttestor plugin type.

An attestor receives the agent's payload, may exchange challenges with it through
``challenge`` and returns who the agent is. Any refusal raises AttestationError
with the gRPC status the agent will see.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Awaitable, Callable

from grpclib.const import Status

from ....common.errors import SpireError
from ....common.plugin import Plugin
from ....common.registration import Selector
from ....common.spiffeid import SpiffeId

Challenge = Callable[[bytes], Awaitable[bytes]]


class AttestationError(SpireError):
    def __init__(self, message: str, status: Status = Status.PERMISSION_DENIED) -> None:
        super().__init__(message)
        self.status = status


@dataclass
class AttestResult:
    agent_id: SpiffeId
    selectors: list[Selector] = field(default_factory=list)
    can_reattest: bool = False


class NodeAttestor(Plugin):
    TYPE = "NodeAttestor"

    async def attest(self, payload: bytes, challenge: Challenge) -> AttestResult:
        raise NotImplementedError
