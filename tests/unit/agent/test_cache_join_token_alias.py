"""The agent serves workloads registered under a join token's alias (SPIRE's quickstart:
`token generate -spiffeID spiffe://td/host` then `entry create -parentID spiffe://td/host ...`).
Found by the Molecule fleet: the alias entry is parented by the agent ID, not by the server."""

from __future__ import annotations

from spire_py.agent.cache import WorkloadCache
from spire_py.common.registration import Entry, Selector
from spire_py.common.spiffeid import TrustDomain

TD = TrustDomain.parse("example.org")
AGENT = "spiffe://example.org/spire/agent/join_token/abc"
UID = [Selector("unix", "uid:2001")]


def _cache(*entries: Entry) -> WorkloadCache:
    cache = WorkloadCache(TD, agent_id=AGENT)
    cache.entries = {e.id: e for e in entries}
    return cache


def test_workload_under_a_join_token_alias_is_served() -> None:
    alias = Entry(id="a", spiffe_id="spiffe://example.org/host/agent1", parent_id=AGENT,
                  selectors=[Selector("spiffe_id", AGENT)])
    workload = Entry(id="w", spiffe_id="spiffe://example.org/workload", parent_id=alias.spiffe_id, selectors=UID)
    cache = _cache(alias, workload)
    assert "spiffe://example.org/host/agent1" in cache.identity_parents()
    assert [e.id for e in cache.entries_for(UID)] == ["w"]


def test_workload_under_another_agents_alias_is_not_served() -> None:
    other = Entry(id="w", spiffe_id="spiffe://example.org/workload", parent_id="spiffe://example.org/host/agent2",
                  selectors=UID)
    assert _cache(other).entries_for(UID) == []


def test_nested_parents_are_followed_to_any_depth() -> None:
    chain = [Entry(id="e0", spiffe_id="spiffe://example.org/n0", parent_id=AGENT, selectors=[Selector("x", "y")])]
    for i in range(1, 4):
        chain.append(Entry(id=f"e{i}", spiffe_id=f"spiffe://example.org/n{i}", parent_id=chain[-1].spiffe_id,
                           selectors=[Selector("x", "y")]))
    leaf = Entry(id="w", spiffe_id="spiffe://example.org/leaf", parent_id=chain[-1].spiffe_id, selectors=UID)
    assert [e.id for e in _cache(*chain, leaf).entries_for(UID)] == ["w"]
