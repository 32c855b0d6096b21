"""The agent's cache: what the server authorized, the SVIDs minted for it, the bundles.

The sync loop writes it; the Workload API reads it. Every change bumps
``version`` and wakes waiters, so streaming calls push the new state at once.

X.509-SVIDs are bounded as in SPIRE's LRU cache: entries with a subscriber (an
open FetchX509SVID stream) always keep theirs; past ``x509_svid_max_size`` the
others' are dropped, least recently subscribed first, and signed again when a
subscriber asks (``svids_wanted``) or the next sync has room.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import functools
import time
from dataclasses import dataclass, field
from typing import Any, Awaitable, Callable, Iterable, Iterator, NamedTuple, Optional

from cryptography import x509
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.types import PrivateKeyTypes

from ..common import log
from ..common.registration import Entry, Selector
from ..common.spiffeid import TrustDomain, server_id
from ..common.x509util import certs_to_der_chain
from .jwt_cache import DEFAULT_MAX_SIZE, CachedJWT, JWTSVIDCache

_log = log.get("cache_manager")


@dataclass(frozen=True)
class CachedSVID:
    entry_id: str
    spiffe_id: str
    chain: list[x509.Certificate]
    key: PrivateKeyTypes
    hint: str = ""

    # Read for every entry at every sync: worked out once per SVID (cryptography builds a new
    # datetime or Name object on each access of a certificate's field).
    @functools.cached_property
    def expires_at(self) -> int:
        return int(self.chain[0].not_valid_after_utc.timestamp())

    @functools.cached_property
    def top_issuer(self) -> bytes:
        """The DER of the issuer name of the chain's last certificate (the root it hangs from)."""
        return self.chain[-1].issuer.public_bytes()

    # Encoded once per SVID, not once per Workload API call (frozen: cached_property writes __dict__).
    @functools.cached_property
    def chain_der(self) -> bytes:
        return certs_to_der_chain(self.chain)

    @functools.cached_property
    def key_der(self) -> bytes:
        """The private key as unencrypted PKCS#8 DER, as the Workload API sends it."""
        return self.key.private_bytes(
            serialization.Encoding.DER, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
        )

    @functools.cached_property
    def issued_at(self) -> int:
        return int(self.chain[0].not_valid_before_utc.timestamp())


# (entry, audience) -> minted token; provided by the sync loop (it calls NewJWTSVID).
JWTMinter = Callable[[Entry, list[str]], Awaitable[CachedJWT]]


class _WorkloadIndex(NamedTuple):
    """What every Workload API call needs from ``entries``, worked out once per change."""

    key: tuple[int, int, int, str]  # id and size of the entries dict, cache version, agent ID
    entries: dict[str, Entry]  # kept so the dict's id cannot be reused while this lives
    parents: frozenset[str]
    by_selector: dict[Selector, list[Entry]]  # this node's workload entries, by each of their selectors


@dataclass
class WorkloadCache:
    trust_domain: TrustDomain
    agent_id: str = ""
    # entry id -> entry (everything the server authorized for this agent)
    entries: dict[str, Entry] = field(default_factory=dict)
    svids: dict[str, CachedSVID] = field(default_factory=dict)
    # trust domain id ("spiffe://example.org") -> common.bundle.Bundle
    bundles: dict[str, Any] = field(default_factory=dict)
    jwt_minter: Optional[JWTMinter] = None
    # experimental.jwt_svid_cache_hit_timeout: how long to wait for the server when an unexpired
    # JWT-SVID is cached and would be served instead (None: the RPC's own 30 s, as SPIRE).
    jwt_cache_hit_timeout: Optional[float] = None
    jwt_svids: JWTSVIDCache = field(default_factory=JWTSVIDCache)
    x509_svid_max_size: int = DEFAULT_MAX_SIZE
    version: int = 0
    # Open FetchX509SVID streams by selector set, and when each entry last gained a subscriber.
    _subscribers: collections.Counter[frozenset[Selector]] = field(default_factory=collections.Counter)
    _last_used: dict[str, float] = field(default_factory=dict)
    _wanted: Optional[asyncio.Event] = None
    # Streams waiting for the next change: plain futures, resolved by publish().
    _waiters: set[asyncio.Future[None]] = field(default_factory=set, repr=False, compare=False)
    _index: Optional[_WorkloadIndex] = field(default=None, repr=False, compare=False)

    # --- writers (sync loop) ---------------------------------------------------------
    async def publish(self) -> None:
        """Announce a change to every waiting stream."""
        self.version += 1
        waiters, self._waiters = self._waiters, set()
        for w in waiters:
            if not w.done():
                w.set_result(None)

    def change_waiter(self) -> asyncio.Future[None]:
        """A future resolved by the next ``publish``. A bare future, not a task: a stream
        cancelled while it waits leaves no task, frame or exception behind in a reference cycle
        (with py-spiffe every fetch ends that way, and the cycles made the collector's full
        passes stall the Workload API). Cancel it when no longer waiting."""
        fut: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._waiters.add(fut)
        fut.add_done_callback(self._waiters.discard)
        return fut

    # --- the X.509-SVID bound -------------------------------------------------------------
    def svids_wanted(self) -> asyncio.Event:
        """Set when a subscriber's entry has no SVID: the sync loop signs it without waiting."""
        if self._wanted is None:
            self._wanted = asyncio.Event()
        return self._wanted

    @contextlib.contextmanager
    def subscribe(self, selectors: Iterable[Selector]) -> Iterator[None]:
        """An open stream for a workload: its entries' SVIDs are kept while it lasts."""
        key = frozenset(selectors)
        self._subscribers[key] += 1
        now = time.monotonic()
        entries = self.entries_for(key)
        for e in entries:
            self._last_used[e.id] = now
        if any(e.id not in self.svids for e in entries):
            self.svids_wanted().set()
        try:
            yield
        finally:
            self._subscribers[key] -= 1
            if self._subscribers[key] <= 0:
                del self._subscribers[key]

    def subscribed_entry_ids(self) -> set[str]:
        return {e.id for key in self._subscribers for e in self.entries_for(key)}

    def evict_svids(self, keep: set[str]) -> list[str]:
        """Drop SVIDs past the bound, least recently used first, never those in ``keep``."""
        extra = len(self.svids) - self.x509_svid_max_size
        if extra <= 0:
            return []
        idle = sorted((eid for eid in self.svids if eid not in keep),
                      key=lambda eid: (self._last_used.get(eid, 0.0), eid))
        gone = idle[:extra]
        for eid in gone:
            del self.svids[eid]
            _log.debug("Removing SVID record", extra=log.fields(entry_id=eid))
        return gone

    def forget_svid(self, entry_id: str) -> None:
        self.svids.pop(entry_id, None)
        self._last_used.pop(entry_id, None)

    # --- readers (Workload API) ---------------------------------------------------------
    def _workload_index(self) -> _WorkloadIndex:
        """Rebuilt when the sync loop replaces ``entries`` or publishes, or the dict changes size:
        a Workload API call then costs a few lookups, not a scan of every entry."""
        key = (id(self.entries), len(self.entries), self.version, self.agent_id)
        if self._index is not None and self._index.key == key:
            return self._index
        parents = frozenset(self._identity_parents())
        by_selector: dict[Selector, list[Entry]] = {}
        for e in self.entries.values():
            if e.parent_id in parents:
                for sel in set(e.selectors):
                    by_selector.setdefault(sel, []).append(e)
        self._index = _WorkloadIndex(key, self.entries, parents, by_selector)
        return self._index

    def identity_parents(self) -> frozenset[str]:
        """The agent's own ID, its node aliases and every entry below them: parents of workload
        entries on this node. Below counts: a join token's alias (`token generate -spiffeID`)
        is an entry parented by the agent ID, and SPIRE's quickstart registers workloads under it."""
        return self._workload_index().parents

    def _identity_parents(self) -> set[str]:
        server = str(server_id(self.trust_domain))
        parents = {self.agent_id}
        parents.update(e.spiffe_id for e in self.entries.values() if e.parent_id == server)
        while True:
            below = {e.spiffe_id for e in self.entries.values() if e.parent_id in parents} - parents
            if not below:
                return parents
            parents |= below

    def entries_for(self, selectors: Iterable[Selector]) -> list[Entry]:
        """Entries whose selectors are all among the workload's, parented by this node."""
        have = set(selectors)
        index = self._workload_index()
        now = time.time()
        found: dict[str, Entry] = {}
        for sel in have:
            for e in index.by_selector.get(sel, ()):
                if e.id not in found and set(e.selectors) <= have and not (e.expires_at and e.expires_at < now):
                    found[e.id] = e
        return sorted(found.values(), key=lambda e: (e.spiffe_id, e.id))

    def x509_svids_for(self, selectors: Iterable[Selector]) -> list[CachedSVID]:
        return [self.svids[e.id] for e in self.entries_for(selectors) if e.id in self.svids]

    def own_bundle(self) -> Any:
        return self.bundles.get(self.trust_domain.id_string())

    def federated_bundles_for(self, entries: Iterable[Entry]) -> dict[str, Any]:
        out = {}
        for e in entries:
            for td in e.federates_with:
                if td in self.bundles and td != self.trust_domain.id_string():
                    out[td] = self.bundles[td]
        return out

    async def jwt_svid(self, entry: Entry, audience: list[str]) -> CachedJWT:
        """A JWT-SVID for the entry's SPIFFE ID and audience, minted on demand and reused until
        half its life; if minting fails, an unexpired cached token is served (SPIRE's rule)."""
        hit = self.jwt_svids.get(entry.spiffe_id, audience)
        now = time.time()
        if hit is not None and now < hit.issued_at + (hit.expires_at - hit.issued_at) / 2:
            return hit
        cache_hit = hit is not None and now < hit.expires_at
        try:
            if self.jwt_minter is None:
                raise RuntimeError("agent is not connected to a server")
            async with asyncio.timeout(self.jwt_cache_hit_timeout if cache_hit else None):
                fresh = await self.jwt_minter(entry, audience)
        except Exception as exc:
            if hit is None or hit.expires_at <= time.time():
                raise
            error = "context deadline exceeded" if isinstance(exc, TimeoutError) else str(exc)
            _log.warning("Unable to renew JWT; returning cached copy",
                         extra=log.fields(spiffe_id=entry.spiffe_id, error=error))
            return hit
        self.jwt_svids.put(entry.spiffe_id, audience, fresh)
        return fresh
