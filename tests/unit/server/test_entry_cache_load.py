"""The entry cache after a restart: loaded in batches of compact entries, it answers agents'
syncs exactly as a cache that followed every write through the event log, and as the rule
says (node aliases the agent's selectors satisfy, then every descendant)."""

from __future__ import annotations

import gc
import logging
from collections.abc import Iterator, Sequence
from pathlib import Path

import pytest

from spire_py.common.registration import Entry, Selector
from spire_py.common.registration_proto import entry_to_proto
from spire_py.common.spiffeid import TrustDomain
from spire_py.proto.spire.api.types import entry_pb2
from spire_py.server.cache import EntryCache
from spire_py.server.datastore import SQLDataStore
from tests.unit.helpers.datastore import TD
from tests.unit.helpers.entries import AGENT, NODE_SELECTORS, OTHER, SERVER, create_mixed_entries

# Who syncs, with which node selectors: direct and nested entries, aliases matched or not.
SYNCS: list[tuple[str, list[Selector]]] = [
    (AGENT, []), (AGENT, NODE_SELECTORS), (AGENT, NODE_SELECTORS[:1]), (OTHER, []), (OTHER, NODE_SELECTORS),
    (TD + "/group", []), (TD + "/spire/agent/join_token/nobody", []),
]
MASKS = [None, entry_pb2.EntryMask(spiffe_id=True, selectors=True, revision_number=True, dns_names=True)]


@pytest.fixture
def store(tmp_path: Path) -> Iterator[SQLDataStore]:
    s = SQLDataStore("sqlite3", str(tmp_path / "ds.sqlite3"))
    yield s
    s.close()


def _by_rule(entries: Sequence[Entry], agent: str, node_selectors: Sequence[Selector]) -> dict[str, Entry]:
    """The authorized entries as SPIRE defines them, computed the slow obvious way."""
    have = set(node_selectors)
    out = {e.id: e for e in entries if e.parent_id == SERVER and set(e.selectors) <= have}
    parents = {agent} | {e.spiffe_id for e in out.values()}
    grew = True
    while grew:
        grew = False
        for e in entries:
            if e.parent_id in parents and e.id not in out:
                out[e.id] = e
                parents.add(e.spiffe_id)
                grew = True
    return out


def _wire(cache: EntryCache, entries: Sequence[Entry], mask: entry_pb2.EntryMask | None) -> dict[str, bytes]:
    return {e.id: cache.entry_proto(e, mask).SerializeToString(deterministic=True) for e in entries}


def test_a_restarted_cache_answers_syncs_as_the_one_that_followed_every_write(store: SQLDataStore) -> None:
    followed = EntryCache(store, TrustDomain("example.org"))
    followed.load()  # empty: every entry then arrives through the event log (fetch_entries)
    create_mixed_entries(store)
    followed.refresh()
    restarted = EntryCache(store, TrustDomain("example.org"))
    restarted.load()  # a restart: every entry read in batches
    listed, _ = store.list_entries()
    assert restarted.entries == followed.entries == {e.id: e for e in listed}
    for mask in MASKS:
        for agent, node_selectors in SYNCS:
            want = {i: entry_to_proto(e, mask).SerializeToString(deterministic=True)
                    for i, e in _by_rule(listed, agent, node_selectors).items()}
            for cache in (restarted, followed):
                answer = cache.authorized(agent, node_selectors)
                assert answer.by_id.keys() == want.keys(), (agent, node_selectors)
                assert _wire(cache, answer.entries, mask) == want, (agent, node_selectors)
    assert _by_rule(listed, AGENT, NODE_SELECTORS)  # the case is not vacuous
    for sid in {e.spiffe_id for e in listed}:
        mine = [e for e in listed if e.spiffe_id == sid]
        expected = (any(e.admin for e in mine), any(e.downstream for e in mine))
        assert tuple(restarted.flags_for(sid)) == tuple(followed.flags_for(sid)) == expected, sid


def test_a_restarted_cache_follows_later_writes(store: SQLDataStore) -> None:
    create_mixed_entries(store)
    cache = EntryCache(store, TrustDomain("example.org"))
    cache.load()
    before = cache.authorized(AGENT, NODE_SELECTORS)
    alias = next(e for e in cache.entries.values() if e.parent_id == SERVER and len(e.selectors) == 1)
    store.delete_entry(alias.id)
    admin = next(e for e in cache.entries.values() if e.admin and e.parent_id == AGENT)
    store.delete_entry(admin.id)
    cache.refresh()
    after = cache.authorized(AGENT, NODE_SELECTORS)
    assert after.version != before.version
    assert alias.id not in after.by_id and not any(e.parent_id == alias.spiffe_id for e in after.entries)
    assert cache.flags_for(admin.spiffe_id).admin is False
    listed, _ = store.list_entries()
    assert after.by_id.keys() == _by_rule(listed, AGENT, NODE_SELECTORS).keys()


def test_the_load_logs_its_count_and_leaves_garbage_collection_as_it_was(
        store: SQLDataStore, caplog: pytest.LogCaptureFixture) -> None:
    remaining = create_mixed_entries(store)
    cache = EntryCache(store, TrustDomain("example.org"))
    with caplog.at_level(logging.INFO, logger="spire_py.server.entry_cache"):
        cache.load()
    assert gc.isenabled()
    loaded = [r for r in caplog.records if r.getMessage() == "Entry cache loaded"]
    assert len(loaded) == 1 and loaded[0].fields["count"] == len(remaining)  # type: ignore[attr-defined]
    gc.disable()
    try:
        EntryCache(store, TrustDomain("example.org")).load()
        assert not gc.isenabled()
    finally:
        gc.enable()
