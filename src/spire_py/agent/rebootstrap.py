"""``rebootstrap_mode`` / ``rebootstrap_delay``: when the server's certificate no longer chains
to the agent's trust bundle (the server was reinstalled, or the agent was away past every root),
SPIRE's agent can bootstrap again: after ``rebootstrap_delay`` of continuous disagreement (a
secure connection in between resets the clock, so a passing man in the middle cannot force it)
it drops its bundle and SVID, reads the bootstrap bundle from ``trust_bundle_*`` again and
re-attests. ``never`` leaves recovery to the operator; ``always`` refuses to run with a node
attestor that cannot re-attest; ``auto`` then disables rebootstrapping with a warning.

SPIRE's agent exits and starts over from its persisted state; this agent does the same steps
in place (the running Workload API keeps serving its cached SVIDs meanwhile).
"""

from __future__ import annotations

import ssl
import time
from typing import Callable, Optional

from ..common import log
from .attestor import AttestationFailed

_log = log.get("agent")

NEVER, AUTO, ALWAYS = "never", "auto", "always"
NOT_ALLOWED = ("you have requested rebootstrap support but the NodeAttestor plugin or the spire server "
               "configuration is not allowing it")


def unknown_authority(exc: BaseException) -> bool:
    """The server's certificate did not verify against our bundle (Go's x509.UnknownAuthorityError),
    anywhere in ``exc``'s chain."""
    seen: set[int] = set()
    cur: Optional[BaseException] = exc
    while cur is not None and id(cur) not in seen:
        if isinstance(cur, ssl.SSLCertVerificationError):
            return True
        seen.add(id(cur))
        cur = cur.__cause__ or cur.__context__
    return False


class Rebootstrap:
    def __init__(self, mode: str = NEVER, delay: float = 600.0, clock: Callable[[], float] = time.monotonic) -> None:
        self.mode = mode or NEVER
        self.delay = float(delay)
        self._clock = clock
        self._since: Optional[float] = None

    @property
    def enabled(self) -> bool:
        return self.mode != NEVER

    def check_reattestable(self, reattestable: bool) -> None:
        """After loading or getting an agent SVID: ``always`` refuses a node attestor that cannot
        re-attest, ``auto`` turns rebootstrapping off."""
        if not self.enabled or reattestable:
            return
        if self.mode == ALWAYS:
            raise AttestationFailed(NOT_ALLOWED)
        _log.warning(NOT_ALLOWED + ". Disabling")
        self.mode = NEVER

    def agreed(self) -> None:
        """A secure exchange with the server: the disagreement clock restarts."""
        self._since = None

    def disagreed(self) -> bool:
        """The server's certificate did not chain to our bundle: True once that has lasted
        ``delay`` (time to rebootstrap), logged as SPIRE does either way."""
        now = self._clock()
        if self._since is None:
            self._since = now
        left = self.delay - (now - self._since)
        if left > 0:
            _log.info("Trust Bundle and Server don't agree, ignoring for now",
                      extra=log.fields(time_left=f"{left:.0f}s"))
            return False
        _log.warning("Trust Bundle and Server don't agree, rebootstrapping")
        return True
