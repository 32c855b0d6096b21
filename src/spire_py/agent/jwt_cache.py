"""The agent's JWT-SVID cache: a bounded LRU, as SPIRE's (pkg/agent/manager/cache/jwt_cache.go).

Keyed on a SHA-256 of the SPIFFE ID and the sorted audiences, so a caller's
audience strings are not kept as keys; at most ``max_size`` tokens (SPIRE's
default 1000), the least recently used dropped first, expired ones pruned.
"""

from __future__ import annotations

import hashlib
import time
from dataclasses import dataclass
from typing import Callable, Iterable, Optional

from cachetools import TLRUCache

from ..common import telemetry
from ..common.telemetry.names import JWT_SVID_CACHE_SIZE

DEFAULT_MAX_SIZE = 1000  # SPIRE's DefaultSVIDCacheMaxSize, for jwt_svid_cache_max_size = 0


@dataclass
class CachedJWT:
    token: str
    spiffe_id: str
    expires_at: int
    issued_at: int
    hint: str = ""


def cache_key(spiffe_id: str, audience: Iterable[str]) -> bytes:
    """SHA-256 of the ID and the sorted audiences, each followed by a NUL (no ambiguous joins)."""
    h = hashlib.sha256()
    for part in (spiffe_id, *sorted(audience)):
        h.update(part.encode())
        h.update(b"\0")
    return h.digest()


class JWTSVIDCache:
    def __init__(self, max_size: int = 0, clock: Callable[[], float] = time.time) -> None:
        self.max_size = max_size if max_size > 0 else DEFAULT_MAX_SIZE
        # An item lives until its token expires (the clock is wall time, as exp is).
        self._lru: TLRUCache[bytes, CachedJWT] = TLRUCache(
            self.max_size, ttu=lambda _key, jwt, _now: jwt.expires_at, timer=clock)

    def get(self, spiffe_id: str, audience: Iterable[str]) -> Optional[CachedJWT]:
        """The cached token, unless it has expired; a hit counts as a use."""
        return self._lru.get(cache_key(spiffe_id, audience))

    def put(self, spiffe_id: str, audience: Iterable[str], jwt: CachedJWT) -> None:
        self._lru[cache_key(spiffe_id, audience)] = jwt  # evicts the least recently used when full
        self._report()

    def _report(self) -> None:
        """SPIRE's jwt_svid_cache_size, set after each change (a mint, a prune, a taint)."""
        telemetry.current().set_gauge(JWT_SVID_CACHE_SIZE, len(self._lru))

    def prune(self) -> int:
        """Drop expired tokens now (the sync loop calls it); returns how many."""
        gone = len(self._lru.expire())
        self._report()
        return gone

    def drop_signed_by(self, key_ids: set[str]) -> int:
        """Forget tokens signed by these (tainted) JWT keys, so the next request gets a fresh one."""
        if not key_ids:
            return 0
        stale = [k for k, jwt in list(self._lru.items()) if _kid(jwt.token) in key_ids]
        for k in stale:
            self._lru.pop(k, None)
        self._report()
        return len(stale)

    def __len__(self) -> int:
        return len(self._lru)


def _kid(token: str) -> str:
    import base64
    import json

    try:
        head = token.split(".", 1)[0]
        return str(json.loads(base64.urlsafe_b64decode(head + "=" * (-len(head) % 4))).get("kid", ""))
    except (ValueError, AttributeError):
        return ""
