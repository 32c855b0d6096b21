"""CachedDataStore: agents' nodes and bundles from memory, every write through it drops what it
changed, other servers' node writes arrive as node events, and a read racing a write never
stores what it read before the write."""

from __future__ import annotations

from typing import Any

import pytest

from spire_py.common.registration import Selector
from spire_py.server.datastore import SQLDataStore, cached
from spire_py.server.datastore.cached import CachedDataStore
from spire_py.server.datastore.models import AttestedNode, Bundle

AGENT = "spiffe://example.org/spire/agent/join_token/a"
OTHER = "spiffe://example.org/spire/agent/join_token/b"
TD = "spiffe://example.org"


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


@pytest.fixture
def clock() -> Clock:
    return Clock()


@pytest.fixture
def db(store: SQLDataStore, clock: Clock) -> CachedDataStore:
    store.create_attested_node(AttestedNode(AGENT, "join_token", "1", 2**31))
    store.set_node_selectors(AGENT, [Selector("a", "1")])
    return CachedDataStore(store, clock=clock)


class Counting:
    """The real store, counting node reads."""

    def __init__(self, store: SQLDataStore) -> None:
        self.store, self.reads = store, 0

    def fetch_attested_node(self, spiffe_id: str, with_selectors: bool = False) -> Any:
        self.reads += 1
        return self.store.fetch_attested_node(spiffe_id, with_selectors)

    def __getattr__(self, name: str) -> Any:
        return getattr(self.store, name)


def test_an_agents_node_and_selectors_are_read_once(store: SQLDataStore, clock: Clock) -> None:
    store.create_attested_node(AttestedNode(AGENT, "join_token", "1", 2**31))
    store.set_node_selectors(AGENT, [Selector("a", "1")])
    counting = Counting(store)
    db = CachedDataStore(counting, clock=clock)
    assert db.cached_agent(AGENT) is None  # nothing known yet: the caller must read
    node = db.agent_node(AGENT)
    assert node is not None and node.cert_serial_number == "1" and node.selectors == [Selector("a", "1")]
    assert db.get_node_selectors(AGENT) == [Selector("a", "1")]
    again = db.cached_agent(AGENT)
    assert again == node and counting.reads == 1
    again.selectors.append(Selector("x", "y"))  # callers get copies
    assert db.get_node_selectors(AGENT) == [Selector("a", "1")]


@pytest.mark.parametrize("write", [
    lambda db: db.update_attested_node(AttestedNode(AGENT, cert_serial_number="", new_cert_serial_number=""),
                                       {"cert_serial_number", "new_cert_serial_number"}),  # ban
    lambda db: db.delete_attested_node(AGENT),  # evict
    lambda db: db.update_attested_node(AttestedNode(AGENT, cert_serial_number="2", cert_not_after=2**31),
                                       {"cert_serial_number", "cert_not_after"}),  # re-attestation, renewal
    lambda db: db.prune_attested_expired_nodes(2**32, include_non_reattestable=True),  # expiry
])
def test_each_node_write_through_it_is_seen_by_the_next_lookup(db: CachedDataStore, write: Any) -> None:
    before = db.agent_node(AGENT)
    write(db)
    after = db.cached_agent(AGENT) or db.agent_node(AGENT)
    assert after != before
    assert after == db.store.fetch_attested_node(AGENT, with_selectors=True)


def test_new_selectors_are_seen_by_the_next_lookup(db: CachedDataStore) -> None:
    assert db.get_node_selectors(AGENT) == [Selector("a", "1")]
    db.set_node_selectors(AGENT, [Selector("b", "2")])
    assert db.get_node_selectors(AGENT) == [Selector("b", "2")]


def test_other_servers_node_writes_arrive_as_node_events(db: CachedDataStore, clock: Clock) -> None:
    assert db.agent_node(AGENT) is not None
    db.store.update_attested_node(AttestedNode(AGENT), {"cert_serial_number", "new_cert_serial_number"})  # a peer bans it
    stale = db.cached_agent(AGENT)  # within NODE_EVENTS_POLL: what this server knew
    assert stale is not None and not stale.banned
    clock.now += cached.NODE_EVENTS_POLL
    assert db.cached_agent(AGENT) is None  # the events are due: the caller reads them
    node = db.agent_node(AGENT)
    assert node is not None and node.banned
    db.store.delete_attested_node(AGENT)  # a peer evicts it
    clock.now += cached.NODE_EVENTS_POLL
    assert db.agent_node(AGENT) is None


def test_a_read_racing_a_write_is_not_kept(store: SQLDataStore, clock: Clock) -> None:
    store.create_attested_node(AttestedNode(AGENT, "join_token", "1", 2**31))
    db = CachedDataStore(store, clock=clock)
    db.agent_node(OTHER)  # starts following events

    class Racing(Counting):
        def fetch_attested_node(self, spiffe_id: str, with_selectors: bool = False) -> Any:
            node = super().fetch_attested_node(spiffe_id, with_selectors)  # the old row...
            db.update_attested_node(AttestedNode(AGENT), {"cert_serial_number"})  # ...then a ban commits
            return node

    db.store = Racing(store)
    assert db.agent_node(AGENT) is not None  # this caller saw the old row
    db.store = store
    node = db.cached_agent(AGENT) or db.agent_node(AGENT)
    assert node is not None and node.banned  # but it was not remembered


def test_unknown_agents_are_not_remembered(db: CachedDataStore) -> None:
    assert db.agent_node(OTHER) is None
    db.create_attested_node(AttestedNode(OTHER, "join_token", "9", 2**31))
    node = db.cached_agent(OTHER) or db.agent_node(OTHER)
    assert node is not None and node.cert_serial_number == "9"


def test_bundles_are_kept_a_second_and_dropped_by_writes_through_it(db: CachedDataStore, clock: Clock) -> None:
    db.create_bundle(Bundle(TD, [b"root-1"]))
    assert db.fetch_bundle(TD).x509_authorities == [b"root-1"]  # type: ignore[union-attr]
    db.append_bundle(Bundle(TD, [b"root-2"]))
    assert db.fetch_bundle(TD).x509_authorities == [b"root-1", b"root-2"]  # type: ignore[union-attr]
    db.store.set_bundle(Bundle(TD, [b"root-3"]))  # another server
    assert db.fetch_bundle(TD).x509_authorities == [b"root-1", b"root-2"]  # type: ignore[union-attr]
    clock.now += cached.BUNDLE_TTL
    assert db.fetch_bundle(TD).x509_authorities == [b"root-3"]  # type: ignore[union-attr]
    db.delete_bundle(TD)
    assert db.fetch_bundle(TD) is None


def test_a_write_method_it_does_not_know_drops_everything(db: CachedDataStore) -> None:
    db.create_bundle(Bundle(TD, [b"root-1"]))
    assert db.fetch_bundle(TD) is not None and db.agent_node(AGENT) is not None
    db.store.some_new_write = lambda: None  # type: ignore[attr-defined]
    db.some_new_write()
    assert db.cached_agent(AGENT) is None and db._bundles == {}
    assert db.count_attested_nodes() == 1  # reads pass through untouched


def test_what_memory_holds_is_answered_without_blocking(db: CachedDataStore, clock: Clock) -> None:
    assert db.from_memory("fetch_bundle", (TD,), {}) == (False, None)
    assert db.from_memory("agent_node", (AGENT,), {}) == (False, None)
    db.create_bundle(Bundle(TD, [b"root-1"]))
    writes = db.writes
    db.fetch_bundle(TD)
    node = db.agent_node(AGENT)
    assert db.writes == writes  # reads are not writes
    hit, bundle = db.from_memory("fetch_bundle", (TD,), {})
    assert hit and bundle.x509_authorities == [b"root-1"]
    assert db.from_memory("agent_node", (AGENT,), {}) == (True, node)
    assert db.from_memory("get_node_selectors", (AGENT,), {}) == (True, [Selector("a", "1")])
    assert db.from_memory("count_attested_nodes", (), {}) == (False, None)
    clock.now += cached.BUNDLE_TTL
    assert db.from_memory("fetch_bundle", (TD,), {}) == (False, None)
