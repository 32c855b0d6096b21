"""The server's in-memory view of registration entries, kept fresh from the event log.

Agent sync asks "which entries is this agent authorized for?" many times a
minute; answering from memory keeps the database out of the hot path. The cache
loads once, then applies the datastore's entry events in order (idempotent, so an
event seen twice is harmless), which also picks up writes made by other servers
sharing the database. Event ids can become visible out of order on PostgreSQL and
MySQL; the datastore's EventTracker re-checks the ids it saw skipped, as SPIRE does.
"""

from __future__ import annotations

import gc
import threading
import time
from typing import Any, Iterable, NamedTuple

from ..common import log
from ..common.registration import Entry, Selector
from ..common.registration_proto import entry_to_proto
from ..common.spiffeid import TrustDomain, server_id
from .datastore.events import EventTracker


class EntryFlags(NamedTuple):
    admin: bool
    downstream: bool


class Authorized(NamedTuple):
    """An agent's authorized entries; ``version`` changes whenever they may have changed."""

    version: int
    entries: list[Entry]  # shared with the cache: read, never modify
    by_id: dict[str, Entry]  # the same entries by ID


class _Memo(NamedTuple):
    answer: Authorized
    selectors: frozenset[Selector]
    parents: frozenset[str]  # the IDs whose children are in the answer


_log = log.get("server.entry_cache")

# How many agents' answers are remembered between changes (oldest forgotten first). Agents sync
# in turn, so with more agents than this none would find its answer still there: sized like the
# peer cache (api/auth.py MAX_PEERS), about 1.5 KB an agent with ten entries.
AUTHORIZED_MEMO_AGENTS = 16384


class _Index:
    """The cache's maps. A load builds a new index and swaps it in whole, so queries never see
    half a load. Kept compact for a million entries: children are small dicts of the entries
    themselves (insertion-ordered, no second lookup in a walk), and only entries granting
    admin or downstream rights are indexed by SPIFFE ID (that is all ``flags_for`` asks)."""

    __slots__ = ("server_id", "entries", "children", "alias_by_selector", "flagged")

    def __init__(self, server_id: str) -> None:
        self.server_id = server_id
        self.entries: dict[str, Entry] = {}
        self.children: dict[str, dict[str, Entry]] = {}
        # Node alias entries (parent = the server) indexed by each of their selectors.
        self.alias_by_selector: dict[Selector, set[str]] = {}
        self.flagged: dict[str, dict[str, Entry]] = {}

    def put(self, e: Entry) -> None:
        self.put_all((e,))

    def put_all(self, batch: Iterable[Entry]) -> None:
        """Index each entry (a load puts a million: kept tight)."""
        entries, children, server = self.entries, self.children, self.server_id
        get_kids = children.get
        for e in batch:
            entry_id, parent = e.id, e.parent_id
            entries[entry_id] = e
            kids = get_kids(parent)
            if kids is None:
                children[parent] = {entry_id: e}
            else:
                kids[entry_id] = e
            if e.admin or e.downstream or parent == server:
                self._index_rare(e)

    def _index_rare(self, e: Entry) -> None:
        if e.admin or e.downstream:
            self.flagged.setdefault(e.spiffe_id, {})[e.id] = e
        if e.parent_id == self.server_id:
            for s in e.selectors:
                self.alias_by_selector.setdefault(s, set()).add(e.id)

    def drop(self, entry_id: str) -> Entry | None:
        old = self.entries.pop(entry_id, None)
        if old is None:
            return None
        _discard(self.flagged, old.spiffe_id, entry_id)
        _discard(self.children, old.parent_id, entry_id)
        if old.parent_id == self.server_id:
            for s in old.selectors:
                ids = self.alias_by_selector.get(s)
                if ids is not None:
                    ids.discard(entry_id)
                    if not ids:
                        del self.alias_by_selector[s]
        return old


def _discard(index: dict[str, dict[str, Entry]], key: str, entry_id: str) -> None:
    found = index.get(key)
    if found is not None:
        found.pop(entry_id, None)
        if not found:
            del index[key]


class EntryCache:
    def __init__(self, datastore: Any, trust_domain: TrustDomain) -> None:
        self.ds = datastore
        self.server_id = str(server_id(trust_domain))
        self._lock = threading.RLock()
        # One refresh at a time: two interleaved ones could apply an older read last.
        self._refresh_lock = threading.Lock()
        # The frequent scan for new events may read a replica (ro_connection_string), as SPIRE's does.
        self.events = EventTracker(lambda after: datastore.list_entry_events(after, tolerate_stale=True),
                                   datastore.fetch_entry_events, datastore.last_entry_event_id)
        self._ix = _Index(self.server_id)
        self.last_event_id = 0
        self.loaded = False
        # Agents' answers, kept until a change touches their tree: a sync with nothing changed
        # for that agent does not walk its entries again.
        self._memo: dict[str, _Memo] = {}
        self._versions = 0
        # Each synced entry's wire form, per output mask, while the entry is unchanged: agents
        # syncing every 5 s re-encoded the same entries on every sync.
        self._protos: dict[str, tuple[Entry, dict[bytes, Any]]] = {}

    @property
    def entries(self) -> dict[str, Entry]:
        """Every cached entry by ID (read, never modify)."""
        return self._ix.entries

    # --- loading -------------------------------------------------------------
    def load(self) -> None:
        with self._refresh_lock:
            self._load()

    def _load(self) -> None:
        started = time.monotonic()
        start = self.events.start()  # read before the entries: later changes arrive as events
        index = _Index(self.server_id)
        # A million entries are millions of new objects, none of them garbage: collecting while
        # they arrive would traverse them again and again (the server freezes them once started).
        collecting = gc.isenabled()
        gc.disable()
        try:
            for batch in self.ds.list_entries_in_batches():
                index.put_all(batch)
        finally:
            if collecting:
                gc.enable()
        with self._lock:
            self._ix = index
            self.events.advance(start)
            self.last_event_id = self.events.last_id
            self.loaded = True
            self._memo.clear()
            self._protos.clear()
        _log.info("Entry cache loaded", extra=log.fields(
            count=len(index.entries), elapsed_ms=round((time.monotonic() - started) * 1000)))

    def refresh(self) -> int:
        """Apply new events; returns how many entries changed."""
        with self._refresh_lock:
            return self._refresh()

    def _refresh(self) -> int:
        if not self.loaded:
            self._load()
            return len(self._ix.entries)
        poll = self.events.poll()
        ids = sorted(poll.keys)
        if not ids:
            self.events.advance(poll)
            return 0
        fresh = self.ds.fetch_entries(ids)
        with self._lock:
            touched: set[str] = set()
            for entry_id in ids:
                self._protos.pop(entry_id, None)
                old = self._ix.drop(entry_id)
                e = fresh.get(entry_id)
                if e is not None:
                    self._ix.put(e)
                touched.update(x.parent_id for x in (old, e) if x is not None)
            self._forget(touched)
            self.events.advance(poll)
            self.last_event_id = self.events.last_id
        return len(ids)

    def _forget(self, touched_parents: set[str]) -> None:
        """Drop the answers a change under ``touched_parents`` may alter. A node alias (parent:
        the server) can match any agent's selectors, so changing one drops them all."""
        if self.server_id in touched_parents:
            self._memo.clear()
            return
        for agent in [a for a, m in self._memo.items() if not m.parents.isdisjoint(touched_parents)]:
            del self._memo[agent]

    # --- queries -------------------------------------------------------------
    def aliases_for(self, node_selectors: Iterable[Selector]) -> list[Entry]:
        """Node alias entries whose selectors are all among the agent's node selectors."""
        have = set(node_selectors)
        out: dict[str, Entry] = {}
        with self._lock:
            ix = self._ix
            for s in have:
                for entry_id in ix.alias_by_selector.get(s, ()):
                    e = ix.entries[entry_id]
                    if entry_id not in out and set(e.selectors) <= have:
                        out[entry_id] = e
        return list(out.values())

    def authorized_entries(self, agent_id: str, node_selectors: Iterable[Selector]) -> list[Entry]:
        """Everything an agent may mint: its node aliases and every entry descending from it or them."""
        return list(self.authorized(agent_id, node_selectors).entries)

    def authorized(self, agent_id: str, node_selectors: Iterable[Selector]) -> Authorized:
        """``authorized_entries`` with a version, remembered until a change touches the agent's tree."""
        selectors = frozenset(node_selectors)
        with self._lock:
            memo = self._memo.get(agent_id)
            if memo is not None and memo.selectors == selectors:
                return memo.answer
            by_id, parents = self._walk(agent_id, selectors)
            self._versions += 1
            answer = Authorized(self._versions, list(by_id.values()), by_id)
            self._memo.pop(agent_id, None)
            while len(self._memo) >= AUTHORIZED_MEMO_AGENTS:
                self._memo.pop(next(iter(self._memo)))
            self._memo[agent_id] = _Memo(answer, selectors, frozenset(parents))
            return answer

    def _walk(self, agent_id: str, node_selectors: frozenset[Selector]) -> tuple[dict[str, Entry], set[str]]:
        with self._lock:
            children = self._ix.children
            result: dict[str, Entry] = {}
            aliases = self.aliases_for(node_selectors)
            for a in aliases:
                result[a.id] = a
            parents = [agent_id] + [a.spiffe_id for a in aliases]
            seen_parents = set(parents)
            while parents:
                parent = parents.pop()
                for entry_id, e in children.get(parent, {}).items():
                    if entry_id in result:
                        continue
                    result[entry_id] = e
                    if e.spiffe_id not in seen_parents:
                        seen_parents.add(e.spiffe_id)
                        parents.append(e.spiffe_id)
            return result, seen_parents

    def entry_proto(self, e: Entry, mask: Any = None) -> Any:
        """``entry_to_proto(e, mask)``, kept while the cache holds this very entry. The message
        is shared: copy it into a response (as repeated fields do), never modify it."""
        key = b"" if mask is None else mask.SerializeToString(deterministic=True)
        with self._lock:
            hit = self._protos.get(e.id)
            if hit is not None and hit[0] is e and key in hit[1]:
                return hit[1][key]
        pb = entry_to_proto(e, mask)
        with self._lock:
            if self._ix.entries.get(e.id) is e:  # only what the cache holds, dropped with it
                kept = self._protos.get(e.id)
                if kept is None or kept[0] is not e:
                    kept = self._protos[e.id] = (e, {})
                if len(kept[1]) < 4:  # a few masks (agents send one)
                    kept[1][key] = pb
        return pb

    def flags_for(self, spiffe_id: str) -> "EntryFlags":
        """Whether any entry for this SPIFFE ID grants admin or downstream rights."""
        with self._lock:
            entries = list(self._ix.flagged.get(spiffe_id, {}).values())
        return EntryFlags(any(e.admin for e in entries), any(e.downstream for e in entries))

    def get(self, entry_id: str) -> Entry | None:
        with self._lock:
            return self._ix.entries.get(entry_id)
