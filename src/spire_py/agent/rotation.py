"""When the agent renews an X.509-SVID (its own and the workloads'): SPIRE's rotation strategy.

By default at half the SVID's lifetime. With ``availability_target`` set, as soon as the SVID
has no more than that long left (plus up to 10 minutes of jitter, so a fleet does not renew at
once), which keeps it valid through a server or agent outage of that length; an SVID whose
lifetime leaves less than 12 hours beyond the target falls back to half life (SPIRE warns).
JWT-SVIDs are not affected.
"""

from __future__ import annotations

import random
from typing import Callable, Optional

from cryptography import x509

# SPIRE's gracePeriodThreshold: lifetime - availability_target must exceed it.
GRACE_PERIOD_THRESHOLD = 12 * 3600.0
# SPIRE adds 0..10 min to the target.
TARGET_JITTER = 600.0

FALLBACK_WARNING = ("X509 SVID lifetime isn't long enough to guarantee the availability_target, "
                    "falling back to the default rotation strategy")


class RotationStrategy:
    """``availability_target`` in seconds (None or 0: not configured); ``jitter`` returns a
    number in [0, 1) (injectable for tests)."""

    def __init__(self, availability_target: Optional[float] = None,
                 jitter: Callable[[], float] = random.random) -> None:
        self.availability_target = float(availability_target or 0)
        self._jitter = jitter

    def falls_back(self, lifetime: float) -> bool:
        """The target is set but a lifetime this short cannot honour it (SPIRE's
        ShouldFallbackX509DefaultRotation)."""
        return bool(self.availability_target) and lifetime - self.availability_target <= GRACE_PERIOD_THRESHOLD

    def should_rotate(self, now: float, not_before: float, not_after: float) -> bool:
        ttl = not_after - now
        if ttl <= 0:
            return True
        lifetime = not_after - not_before
        if self.availability_target and not self.falls_back(lifetime):
            if ttl <= self.availability_target + self._jitter() * TARGET_JITTER:
                return True
        return ttl <= lifetime / 2

    def should_rotate_cert(self, now: float, cert: x509.Certificate) -> bool:
        return self.should_rotate(now, cert.not_valid_before_utc.timestamp(), cert.not_valid_after_utc.timestamp())


DEFAULT = RotationStrategy()
