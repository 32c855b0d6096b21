"""The server's entry cache: an agent's authorized entries are remembered until a change touches them."""

from __future__ import annotations

import dataclasses
from collections.abc import Iterator
from pathlib import Path

import pytest

from spire_py.common.registration import Entry, Selector
from spire_py.common.spiffeid import TrustDomain
from spire_py.server.cache import EntryCache
from spire_py.server.datastore import SQLDataStore

TD = "spiffe://example.org"
AGENT = TD + "/spire/agent/join_token/a"
OTHER = TD + "/spire/agent/join_token/b"
SERVER = TD + "/spire/server"


def _entry(path: str, parent: str, *sels: str) -> Entry:
    return Entry(spiffe_id=TD + path, parent_id=parent,
                 selectors=[Selector(*s.split(":", 1)) for s in (sels or ("unix:uid:1",))])


@pytest.fixture
def store(tmp_path: Path) -> Iterator[SQLDataStore]:
    s = SQLDataStore("sqlite3", str(tmp_path / "ds.sqlite3"))
    yield s
    s.close()


@pytest.fixture
def cache(store: SQLDataStore) -> EntryCache:
    c = EntryCache(store, TrustDomain("example.org"))
    c.load()
    return c


def test_nested_entries_are_authorized(store: SQLDataStore, cache: EntryCache) -> None:
    group = store.create_entry(_entry("/group", AGENT))
    child = store.create_entry(_entry("/child", TD + "/group"))
    store.create_entry(_entry("/theirs", OTHER))
    cache.refresh()
    assert {e.id for e in cache.authorized_entries(AGENT, [])} == {group.id, child.id}


def test_answer_is_reused_while_nothing_changes_for_the_agent(store: SQLDataStore, cache: EntryCache) -> None:
    store.create_entry(_entry("/w", AGENT))
    cache.refresh()
    first = cache.authorized(AGENT, [])
    assert cache.authorized(AGENT, []) is first
    store.create_entry(_entry("/elsewhere", OTHER))  # another agent's tree
    cache.refresh()
    assert cache.authorized(AGENT, []) is first


def test_a_fleet_syncing_in_turn_finds_its_answers_kept(store: SQLDataStore, cache: EntryCache) -> None:
    """Thousands of agents sync one after another: each finds the answer of its last sync (a
    memo of 1,024 agents, forgetting the oldest first, had none left for any of 5,000)."""
    agents = [f"{TD}/spire/agent/join_token/{i}" for i in range(5000)]
    store.create_entry(_entry("/shared", agents[0]))
    cache.refresh()
    first = [cache.authorized(a, []) for a in agents]
    again = [cache.authorized(a, []) for a in agents]
    assert sum(x is y for x, y in zip(first, again)) == len(agents)


def test_change_in_the_agents_tree_gives_a_new_answer(store: SQLDataStore, cache: EntryCache) -> None:
    store.create_entry(_entry("/group", AGENT))
    cache.refresh()
    first = cache.authorized(AGENT, [])
    nested = store.create_entry(_entry("/nested", TD + "/group"))
    cache.refresh()
    second = cache.authorized(AGENT, [])
    assert second.version != first.version and nested.id in second.by_id
    store.delete_entry(nested.id)
    cache.refresh()
    assert nested.id not in cache.authorized(AGENT, []).by_id


def test_entry_moved_away_leaves_the_answer(store: SQLDataStore, cache: EntryCache) -> None:
    e = store.create_entry(_entry("/w", AGENT))
    cache.refresh()
    assert e.id in cache.authorized(AGENT, []).by_id
    e.parent_id = OTHER
    store.update_entry(e, {"parent_id"})
    cache.refresh()
    assert e.id not in cache.authorized(AGENT, []).by_id
    assert e.id in cache.authorized(OTHER, []).by_id


def test_node_alias_change_reaches_agents_with_matching_selectors(store: SQLDataStore, cache: EntryCache) -> None:
    sel = [Selector("k8s_psat", "cluster:c1")]
    before = cache.authorized(AGENT, sel)
    alias = store.create_entry(_entry("/node", SERVER, "k8s_psat:cluster:c1"))
    under = store.create_entry(_entry("/pod", TD + "/node"))
    cache.refresh()
    after = cache.authorized(AGENT, sel)
    assert after.version != before.version and {alias.id, under.id} <= after.by_id.keys()
    assert not cache.authorized(AGENT, []).entries  # other selectors: other answer


def test_callers_get_copies_of_the_list(store: SQLDataStore, cache: EntryCache) -> None:
    store.create_entry(_entry("/w", AGENT))
    cache.refresh()
    cache.authorized_entries(AGENT, []).clear()
    assert len(cache.authorized_entries(AGENT, [])) == 1


def test_an_entrys_wire_form_is_kept_until_the_entry_changes(store: SQLDataStore, cache: EntryCache) -> None:
    from spire_py.common.registration_proto import entry_to_proto
    from spire_py.proto.spire.api.types import entry_pb2

    e = store.create_entry(_entry("/w", AGENT))
    cache.refresh()
    held = cache.get(e.id)
    assert held is not None
    pb = cache.entry_proto(held)
    assert pb == entry_to_proto(held) and cache.entry_proto(held) is pb
    mask = entry_pb2.EntryMask(spiffe_id=True, revision_number=True)
    masked = cache.entry_proto(held, mask)
    assert masked == entry_to_proto(held, mask) and masked != pb and cache.entry_proto(held, mask) is masked
    store.update_entry(dataclasses.replace(held, hint="new"), {"hint"})
    cache.refresh()
    fresh = cache.get(e.id)
    assert fresh is not None and fresh is not held
    assert cache.entry_proto(fresh).hint == "new"
    store.delete_entry(e.id)
    cache.refresh()
    assert e.id not in cache._protos
