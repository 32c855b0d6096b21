"""The agent cache answers Workload API lookups from an index that follows every change."""

from __future__ import annotations

from spire_py.agent.cache import WorkloadCache
from spire_py.common.registration import Entry, Selector
from spire_py.common.spiffeid import TrustDomain

TD = "spiffe://example.org"
AGENT = TD + "/spire/agent/join_token/t"


def _entry(eid: str, *sels: str, parent: str = AGENT, expires_at: int = 0) -> Entry:
    return Entry(id=eid, spiffe_id=f"{TD}/w/{eid}", parent_id=parent,
                 selectors=[Selector(*s.split(":", 1)) for s in sels], expires_at=expires_at)


def _cache(*entries: Entry) -> WorkloadCache:
    return WorkloadCache(TrustDomain("example.org"), agent_id=AGENT, entries={e.id: e for e in entries})


def _ids(cache: WorkloadCache, *sels: str) -> list[str]:
    return [e.id for e in cache.entries_for([Selector(*s.split(":", 1)) for s in sels])]


def test_entries_whose_selectors_are_all_held_match() -> None:
    cache = _cache(_entry("a", "unix:uid:1"), _entry("b", "unix:uid:1", "unix:gid:2"), _entry("c", "unix:uid:3"))
    assert _ids(cache, "unix:uid:1") == ["a"]
    assert _ids(cache, "unix:uid:1", "unix:gid:2", "unix:user:x") == ["a", "b"]
    assert _ids(cache, "unix:gid:2") == []


def test_only_this_nodes_unexpired_entries_match() -> None:
    cache = _cache(_entry("mine", "unix:uid:1"), _entry("theirs", "unix:uid:1", parent=TD + "/spire/agent/x/y"),
                   _entry("old", "unix:uid:1", expires_at=1))
    assert _ids(cache, "unix:uid:1") == ["mine"]


def test_index_follows_a_replaced_dict_and_in_place_changes() -> None:
    cache = _cache(_entry("a", "unix:uid:1"))
    assert _ids(cache, "unix:uid:1") == ["a"]
    cache.entries = {"b": _entry("b", "unix:uid:1")}  # what the sync loop does
    assert _ids(cache, "unix:uid:1") == ["b"]
    cache.entries["c"] = _entry("c", "unix:uid:1")  # added in place
    assert _ids(cache, "unix:uid:1") == ["b", "c"]
    cache.entries["c"] = _entry("c", "unix:uid:9")  # replaced in place, then published
    cache.version += 1
    assert _ids(cache, "unix:uid:1") == ["b"]


def test_entries_below_the_agents_own_entries_are_on_this_node() -> None:
    alias = Entry(id="alias", spiffe_id=TD + "/host", parent_id=AGENT, selectors=[Selector("x", "y")])
    cache = _cache(alias, _entry("w", "unix:uid:1", parent=TD + "/host"))
    assert TD + "/host" in cache.identity_parents()
    assert _ids(cache, "unix:uid:1") == ["w"]
