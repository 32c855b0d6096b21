"""WorkloadAttestor: turns a calling process into selectors, as SPIRE's agent plugin type.

The Workload API runs every configured attestor on the caller's pid and takes the
union of their selectors; an entry matches when all its selectors are in that union.
"""

from __future__ import annotations

from typing import ClassVar

from ....common.errors import SpireError
from ....common.plugin import Plugin
from ....common.registration import Selector


class WorkloadAttestationError(SpireError):
    """The attestor could not learn who the process is; the message says what failed."""


class WorkloadAttestor(Plugin):
    TYPE: ClassVar[str] = "WorkloadAttestor"

    async def attest(self, pid: int, uid: int, gid: int) -> list[Selector]:
        """Selectors for the process ``pid``; ``uid``/``gid`` are its SO_PEERCRED credentials.

        Raises :class:`WorkloadAttestationError` when the process cannot be examined.
        """
        raise NotImplementedError
