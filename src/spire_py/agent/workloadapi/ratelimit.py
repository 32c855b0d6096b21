"""``experimental.ratelimit``: per-caller limits on Workload API and SDS methods (SPIRE's
WorkloadRateLimiter).

Checked after workload attestation; the key is the caller's whole selector set, so workloads
with the same selectors share one bucket (callers with none share ``<unattested>``). A bucket
holds ``limit`` calls and refills ``limit`` per second; a streaming method is counted when the
stream opens. A call over the limit is refused with UNAVAILABLE "rate limit exceeded for
<full method>". The agent's own calls (its health check) are never limited.
"""

from __future__ import annotations

import hashlib
import time
from typing import Callable, Iterable, Mapping

from grpclib.const import Status
from grpclib.exceptions import GRPCError

from ...common import log, telemetry
from ...common.ratelimit import PerAddressLimiter
from ...common.registration import Selector
from ...common.telemetry.names import RATE_LIMIT_EXCEEDED

_log = log.get("workload_api")

UNATTESTED = "<unattested>"

_WL = "/SpiffeWorkloadAPI/"
_SDS = "/envoy.service.secret.v3.SecretDiscoveryService/"
# config key -> the method's full gRPC name, in SPIRE's order.
METHODS = {
    "fetch_x509_svid": _WL + "FetchX509SVID",
    "fetch_jwt_svid": _WL + "FetchJWTSVID",
    "fetch_x509_bundles": _WL + "FetchX509Bundles",
    "fetch_jwt_bundles": _WL + "FetchJWTBundles",
    "stream_secrets": _SDS + "StreamSecrets",
    "fetch_secrets": _SDS + "FetchSecrets",
}

_FULL = {m.rsplit("/", 1)[1]: m for m in METHODS.values()}


def selector_set_key(selectors: Iterable[Selector]) -> str:
    """A fixed-size key for a selector set: SHA-256 over the sorted (type, value) pairs, each
    part length-prefixed so adjacent items cannot run together (even with a NUL inside)."""
    items = sorted((s.type, s.value) for s in selectors)
    if not items:
        return UNATTESTED
    h = hashlib.sha256()
    for part in (p.encode("utf-8", "surrogateescape") for item in items for p in item):
        h.update(len(part).to_bytes(8, "big") + part)
    return h.hexdigest()


class WorkloadRateLimiter:
    """``limits``: config key (``fetch_x509_svid``, ...) -> calls per second; 0 leaves a method
    unlimited."""

    def __init__(self, limits: Mapping[str, int], clock: Callable[[], float] = time.monotonic) -> None:
        self._limiters: dict[str, PerAddressLimiter] = {}
        for key, method in METHODS.items():
            limit = int(limits.get(key, 0) or 0)
            if limit > 0:
                self._limiters[method] = PerAddressLimiter(limit, clock)
                _log.info("Workload API/SDS rate limiting enabled", extra=log.fields(method=method, limit=limit))

    def __bool__(self) -> bool:
        return bool(self._limiters)

    def check(self, method: str, selectors: Iterable[Selector]) -> None:
        """Raise UNAVAILABLE when the caller's selector set is over ``method``'s limit (its short
        name, "FetchX509SVID", or its full one)."""
        full_method = _FULL.get(method, method)
        limiter = self._limiters.get(full_method)
        if limiter is not None and not limiter.allow(selector_set_key(selectors)):
            telemetry.current().incr_counter(RATE_LIMIT_EXCEEDED, labels=(("method", full_method),))
            raise GRPCError(Status.UNAVAILABLE, f"rate limit exceeded for {full_method}")
