"""The DataStore the server's APIs use: what every agent call reads is served from memory.

Each agent RPC needs the caller's attested node (is it attested, banned, presenting the
current serial?) and its node selectors (which entries it may sync or mint), and every
GetBundle reads the trust domain's bundle. Read from the database on every call, these
were most of the server's datastore work at fleet scale. ``CachedDataStore`` wraps the
real store, passes every call through, and keeps those three in memory:

- Attested nodes with their selectors, per agent (bounded, oldest dropped first). Every
  node write made through this store (attestation, re-attestation, renewal, SVID serial
  promotion, ban, delete, selectors, pruning) drops what it changed before it returns, so
  a banned or evicted agent is refused on its very next call to this server. Writes made
  by other servers sharing the database arrive as node events, read at most every
  ``NODE_EVENTS_POLL`` seconds when an agent is looked up (SPIRE's attested node cache is
  rebuilt every 5 s).
- Bundles, for ``BUNDLE_TTL`` (SPIRE's datastore cache keeps them 1 s), dropped by any
  bundle write made through this store.
- A write method this class does not know (one added later) drops everything, to be safe.

A read racing a write never stores what it read before the write: a value is kept only if
nothing was invalidated since its read began (one generation counter).
"""

from __future__ import annotations

import dataclasses
import threading
import time
from collections import OrderedDict
from typing import Any, Callable, Optional

from .events import EventTracker
from .models import AttestedNode, Bundle

# How often other servers' node changes (node events) are looked for, at most.
NODE_EVENTS_POLL = 1.0
# How long a bundle is served from memory when nothing written through this store changed it.
BUNDLE_TTL = 1.0
# How often the entry cache looks for other servers' entry events when nothing was written
# through this store, at most (every agent sync asked the database before).
ENTRY_EVENTS_POLL = 1.0
# How many agents' nodes are remembered.
MAX_NODES = 100_000

# Writes that change one node: the argument that names it (a node or a SPIFFE ID).
_NODE_WRITES = {"create_attested_node", "update_attested_node", "delete_attested_node", "set_node_selectors"}
_NODE_WRITES_MANY = {"prune_attested_expired_nodes"}
_BUNDLE_WRITES = {"create_bundle", "update_bundle", "set_bundle", "append_bundle", "delete_bundle", "prune_bundle"}
# Writes that touch neither nodes nor bundles (entries are followed by the entry cache's events).
_OTHER_WRITES = {
    "create_entry", "create_entries_if_not_exist", "update_entry", "delete_entry", "prune_entry_events",
    "prune_node_events", "create_join_token", "take_join_token", "prune_join_tokens", "set_ca_journal",
    "prune_ca_journals", "close",
}
_READ_PREFIXES = ("fetch_", "list_", "count_", "get_", "last_", "find_")


def _key(arg: Any) -> str:
    if isinstance(arg, AttestedNode):
        return arg.spiffe_id
    if isinstance(arg, Bundle):
        return arg.trust_domain_id
    return str(arg)


def _copy_node(n: AttestedNode) -> AttestedNode:
    return dataclasses.replace(n, selectors=list(n.selectors))


def _copy_bundle(b: Bundle) -> Bundle:
    return dataclasses.replace(b, x509_authorities=list(b.x509_authorities), jwt_authorities=list(b.jwt_authorities))


class CachedDataStore:
    def __init__(self, store: Any, *, clock: Callable[[], float] = time.monotonic) -> None:
        self.store = store
        self._clock = clock
        self._lock = threading.Lock()
        self._generation = 0
        self._nodes: OrderedDict[str, AttestedNode] = OrderedDict()
        self._bundles: dict[str, tuple[float, Bundle]] = {}
        # Other servers' node writes: followed through the node events table (from the first lookup).
        self._events: Optional[EventTracker] = None
        self._next_poll = float("-inf")
        self._poll_lock = threading.Lock()
        # Writes made through this store so far (any kind): the entry cache refreshes at once
        # after one, and otherwise at most every ENTRY_EVENTS_POLL (see ServerCore.refresh_cache).
        self.writes = 0

    # --- pass-through, with invalidation on writes ----------------------------------------
    def __getattr__(self, name: str) -> Any:
        attr = getattr(self.store, name)
        if not callable(attr) or name.startswith(_READ_PREFIXES):
            return attr
        if name in _OTHER_WRITES:
            return self._after(attr, lambda args, kw: None)
        if name in _NODE_WRITES:
            return self._after(attr, lambda args, kw: self._drop_node(_key(args[0] if args else kw.get("n", kw.get("spiffe_id")))))
        if name in _BUNDLE_WRITES:
            return self._after(attr, lambda args, kw: self._drop_bundle(
                _key(args[0] if args else kw.get("b", kw.get("trust_domain_id")))))
        if name in _NODE_WRITES_MANY:
            return self._after(attr, lambda args, kw: self._drop_nodes())
        return self._after(attr, lambda args, kw: self.invalidate())  # unknown: assume it changes anything

    def _after(self, fn: Callable[..., Any], drop: Callable[[tuple[Any, ...], dict[str, Any]], None]) -> Callable[..., Any]:
        def call(*args: Any, **kwargs: Any) -> Any:
            try:
                return fn(*args, **kwargs)
            finally:  # even a failed write may have committed (a lost connection at COMMIT)
                drop(args, kwargs)
                self.writes += 1
        return call

    def invalidate(self) -> None:
        """Forget every node and bundle."""
        with self._lock:
            self._generation += 1
            self._nodes.clear()
            self._bundles.clear()

    def _drop_node(self, spiffe_id: str) -> None:
        with self._lock:
            self._generation += 1
            self._nodes.pop(spiffe_id, None)

    def _drop_nodes(self) -> None:
        with self._lock:
            self._generation += 1
            self._nodes.clear()

    def _drop_bundle(self, trust_domain_id: str) -> None:
        with self._lock:
            self._generation += 1
            self._bundles.pop(trust_domain_id, None)

    def from_memory(self, name: str, args: tuple[Any, ...], kwargs: dict[str, Any]) -> tuple[bool, Any]:
        """(True, answer) when the call ``name(*args)`` can be answered from memory without
        blocking, so the caller need not hop to a thread; (False, None) otherwise."""
        if kwargs or len(args) != 1:
            return False, None
        if name == "fetch_bundle":
            with self._lock:
                hit = self._bundles.get(args[0])
            if hit is not None and self._clock() - hit[0] < BUNDLE_TTL:
                return True, _copy_bundle(hit[1])
        elif name in ("agent_node", "get_node_selectors"):
            node = self.cached_agent(args[0])
            if node is not None:
                return True, node if name == "agent_node" else node.selectors
        return False, None

    # --- attested nodes -------------------------------------------------------------------
    def cached_agent(self, spiffe_id: str) -> Optional[AttestedNode]:
        """The agent's node from memory without blocking, or None: then call ``agent_node``
        (off the event loop). None also when other servers' changes are due to be read."""
        if self._clock() >= self._next_poll:
            return None
        with self._lock:
            n = self._nodes.get(spiffe_id)
        return _copy_node(n) if n is not None else None

    def agent_node(self, spiffe_id: str) -> Optional[AttestedNode]:
        """The agent's attested node with its selectors (a copy), from memory when known."""
        self._poll_events()
        with self._lock:
            n = self._nodes.get(spiffe_id)
            generation = self._generation
        if n is not None:
            return _copy_node(n)
        fresh = self.store.fetch_attested_node(spiffe_id, with_selectors=True)
        if fresh is None:
            return None  # misses are not remembered: an agent attesting now must be found
        with self._lock:
            if generation == self._generation:
                self._nodes[spiffe_id] = fresh
                while len(self._nodes) > MAX_NODES:
                    self._nodes.popitem(last=False)
        return _copy_node(fresh)

    def get_node_selectors(self, spiffe_id: str, *, tolerate_stale: bool = False) -> list[Any]:
        node = self.agent_node(spiffe_id)
        if node is not None:
            return node.selectors
        return list(self.store.get_node_selectors(spiffe_id, tolerate_stale=tolerate_stale))

    def _poll_events(self) -> None:
        """Drop the nodes other servers changed (their node events). One poller at a time;
        the others go on with what is cached, as they would have a moment earlier."""
        if self._clock() < self._next_poll or not self._poll_lock.acquire(blocking=False):
            return
        try:
            if self._events is None:
                store = self.store
                events = EventTracker(lambda after: store.list_node_events(after, tolerate_stale=True),
                                      store.fetch_node_events, store.last_node_event_id)
                # Nothing is cached yet, so older events do not matter: start from the newest.
                events.advance(events.start())
                self._events = events
            else:
                poll = self._events.poll()
                if poll.keys:
                    with self._lock:
                        self._generation += 1
                        for key in poll.keys:
                            self._nodes.pop(key, None)
                self._events.advance(poll)
            self._next_poll = self._clock() + NODE_EVENTS_POLL
        finally:
            self._poll_lock.release()

    # --- bundles ----------------------------------------------------------------------------
    def fetch_bundle(self, trust_domain_id: str) -> Optional[Bundle]:
        now = self._clock()
        with self._lock:
            hit = self._bundles.get(trust_domain_id)
            generation = self._generation
        if hit is not None and now - hit[0] < BUNDLE_TTL:
            return _copy_bundle(hit[1])
        b = self.store.fetch_bundle(trust_domain_id)
        if b is None:
            return None  # as SPIRE's cache: misses are not remembered
        with self._lock:
            if generation == self._generation:
                self._bundles[trust_domain_id] = (now, b)
        return _copy_bundle(b)
