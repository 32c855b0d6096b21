"""The server's in-memory view of registration entries, kept fresh from the event log.

Agent sync asks "which entries is this agent authorized for?" many times a
minute; answering from memory keeps the database out of the hot path. The cache
loads once, then applies the datastore's entry events in order (idempotent, so an
event seen twice is harmless), which also picks up writes made by other servers
sharing the database.
"""

from __future__ import annotations

import threading
from collections import defaultdict
from typing import Any, Iterable, NamedTuple

from ..common.spiffeid import TrustDomain, server_id
from .datastore.models import Entry, Selector


class EntryFlags(NamedTuple):
    admin: bool
    downstream: bool


class EntryCache:
    def __init__(self, datastore: Any, trust_domain: TrustDomain) -> None:
        self.ds = datastore
        self.server_id = str(server_id(trust_domain))
        self._lock = threading.RLock()
        self.entries: dict[str, Entry] = {}
        self.children: dict[str, set[str]] = defaultdict(set)
        # Node alias entries (parent = the server) indexed by each of their selectors.
        self.alias_by_selector: dict[Selector, set[str]] = defaultdict(set)
        self.by_spiffe_id: dict[str, set[str]] = defaultdict(set)
        self.last_event_id = 0
        self.loaded = False

    # --- loading -------------------------------------------------------------
    def load(self) -> None:
        events = self.ds.list_entry_events(0)
        last = events[-1][0] if events else 0
        entries: list[Entry] = []
        token = ""
        while True:
            page, token = self.ds.list_entries(page_token=token, page_size=5000)
            entries.extend(page)
            if not token:
                break
        with self._lock:
            self.entries.clear()
            self.children.clear()
            self.alias_by_selector.clear()
            self.by_spiffe_id.clear()
            for e in entries:
                self._put(e)
            self.last_event_id = last
            self.loaded = True

    def refresh(self) -> int:
        """Apply new events; returns how many entries changed."""
        if not self.loaded:
            self.load()
            return len(self.entries)
        events = self.ds.list_entry_events(self.last_event_id)
        if not events:
            return 0
        ids = sorted({entry_id for _, entry_id in events})
        fresh = self.ds.fetch_entries(ids)
        with self._lock:
            for entry_id in ids:
                self._drop(entry_id)
                e = fresh.get(entry_id)
                if e is not None:
                    self._put(e)
            self.last_event_id = max(self.last_event_id, events[-1][0])
        return len(ids)

    def _put(self, e: Entry) -> None:
        self.entries[e.id] = e
        self.children[e.parent_id].add(e.id)
        self.by_spiffe_id[e.spiffe_id].add(e.id)
        if e.parent_id == self.server_id:
            for s in e.selectors:
                self.alias_by_selector[s].add(e.id)

    def _drop(self, entry_id: str) -> None:
        old = self.entries.pop(entry_id, None)
        if old is None:
            return
        same = self.by_spiffe_id.get(old.spiffe_id)
        if same is not None:
            same.discard(entry_id)
            if not same:
                del self.by_spiffe_id[old.spiffe_id]
        kids = self.children.get(old.parent_id)
        if kids is not None:
            kids.discard(entry_id)
            if not kids:
                del self.children[old.parent_id]
        if old.parent_id == self.server_id:
            for s in old.selectors:
                ids = self.alias_by_selector.get(s)
                if ids is not None:
                    ids.discard(entry_id)
                    if not ids:
                        del self.alias_by_selector[s]

    # --- queries -------------------------------------------------------------
    def aliases_for(self, node_selectors: Iterable[Selector]) -> list[Entry]:
        """Node alias entries whose selectors are all among the agent's node selectors."""
        have = set(node_selectors)
        out: dict[str, Entry] = {}
        with self._lock:
            for s in have:
                for entry_id in self.alias_by_selector.get(s, ()):
                    e = self.entries[entry_id]
                    if entry_id not in out and set(e.selectors) <= have:
                        out[entry_id] = e
        return list(out.values())

    def authorized_entries(self, agent_id: str, node_selectors: Iterable[Selector]) -> list[Entry]:
        """Everything an agent may mint: its node aliases and every entry descending from it or them."""
        with self._lock:
            result: dict[str, Entry] = {}
            aliases = self.aliases_for(node_selectors)
            for a in aliases:
                result[a.id] = a
            parents = [agent_id] + [a.spiffe_id for a in aliases]
            seen_parents = set(parents)
            while parents:
                parent = parents.pop()
                for entry_id in self.children.get(parent, ()):
                    e = self.entries[entry_id]
                    if entry_id in result:
                        continue
                    result[entry_id] = e
                    if e.spiffe_id not in seen_parents:
                        seen_parents.add(e.spiffe_id)
                        parents.append(e.spiffe_id)
            return list(result.values())

    def flags_for(self, spiffe_id: str) -> "EntryFlags":
        """Whether any entry for this SPIFFE ID grants admin or downstream rights."""
        with self._lock:
            entries = [self.entries[i] for i in self.by_spiffe_id.get(spiffe_id, ())]
        return EntryFlags(any(e.admin for e in entries), any(e.downstream for e in entries))

    def get(self, entry_id: str) -> Entry | None:
        with self._lock:
            return self.entries.get(entry_id)
