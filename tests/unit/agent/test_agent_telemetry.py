"""The agent's cache and key metrics under SPIRE's keys: jwt_svid_cache_size, the LRU entry
counters, expiring/outdated SVID samples, tainted authority processing, agent_key_manager."""

from __future__ import annotations

import base64
import json
import time
from collections.abc import Iterator
from dataclasses import replace

import pytest

from spire_py.agent import sync
from spire_py.agent.jwt_cache import CachedJWT, JWTSVIDCache
from spire_py.agent.plugins.keymanager.memory import MemoryKeyManager
from spire_py.agent.sync import (EntryChanges, count_entry_changes, count_tainted_x509, drop_tainted_jwts,
                                 set_sync_stats)
from spire_py.common.registration import Entry
from spire_py.common.telemetry import metrics
from tests.unit.agent.test_svid_cache_bound import AGENT, mint, setup, uid


@pytest.fixture
def recorded() -> Iterator[metrics.Metrics]:
    m = metrics.Metrics("spire_agent")
    metrics.set_current(m)
    yield m
    metrics.set_current(metrics.NULL)


def got(m: metrics.Metrics) -> dict[str, float]:
    """Dotted name (labels joined after '|') -> counter/gauge value or sample count."""
    out = {}
    for s in m.series():
        name = ".".join(s.name) + "".join(f"|{k}={v}" for k, v in s.labels)
        out[name] = s.count if s.kind == metrics.SAMPLE else s.value
    return out


def sums(m: metrics.Metrics) -> dict[str, float]:
    return {".".join(s.name): s.sum for s in m.series() if s.kind == metrics.SAMPLE}


def token(kid: str) -> str:
    head = base64.urlsafe_b64encode(json.dumps({"alg": "ES256", "kid": kid}).encode()).rstrip(b"=").decode()
    return f"{head}.e30.sig"


def test_jwt_svid_cache_size_follows_puts_prunes_and_taints(recorded) -> None:
    now = time.time()
    cache = JWTSVIDCache(clock=lambda: now)
    cache.put("spiffe://example.org/a", ["x"], CachedJWT(token("k1"), "spiffe://example.org/a", int(now) + 60, int(now)))
    cache.put("spiffe://example.org/b", ["x"], CachedJWT(token("k2"), "spiffe://example.org/b", int(now) + 60, int(now)))
    assert got(recorded)["spire_agent.jwt_svid_cache_size"] == 2
    assert cache.drop_signed_by({"k1"}) == 1
    assert got(recorded)["spire_agent.jwt_svid_cache_size"] == 1
    cache.prune()
    assert got(recorded)["spire_agent.jwt_svid_cache_size"] == 1  # nothing expired yet


def test_entry_changes_count_added_removed_and_updated(recorded) -> None:
    a = Entry(id="a", spiffe_id="spiffe://example.org/a", parent_id=AGENT, selectors=[uid(1)])
    b = Entry(id="b", spiffe_id="spiffe://example.org/b", parent_id=AGENT, selectors=[uid(2)])
    c = Entry(id="c", spiffe_id="spiffe://example.org/c", parent_id=AGENT, selectors=[uid(3)])
    count_entry_changes({}, {"a": a, "b": b})
    count_entry_changes({"a": a, "b": b}, {"a": a, "b": replace(b, revision_number=2), "c": c})
    count_entry_changes({"a": a, "c": c}, {"a": a})
    g = got(recorded)
    assert (g["spire_agent.lru_cache_entry_add"], g["spire_agent.lru_cache_entry_update"],
            g["spire_agent.lru_cache_entry_remove"]) == (3, 1, 1)
    same = {"a": a}
    assert count_entry_changes(same, same) == (0, 0, 0)  # an unchanged sync (same dict) costs nothing


def test_sync_stats_gauges_are_spires(recorded) -> None:
    set_sync_stats(EntryChanges(added=2, updated=1, removed=3), entries=7, bundles=2)
    g = got(recorded)
    assert {k: v for k, v in g.items() if k.startswith("spire_agent.sync_")} == {
        "spire_agent.sync_entries_total": 7, "spire_agent.sync_entries_missing": 2,
        "spire_agent.sync_entries_stale": 1, "spire_agent.sync_entries_dropped": 3,
        "spire_agent.sync_bundles_total": 2}


async def test_a_sync_samples_expiring_and_outdated_svids(recorded, monkeypatch) -> None:
    cache, server, rev = setup(3, 10)
    await mint(cache, server, rev)
    assert "spire_agent.cache_manager.expiring_svids" not in got(recorded)  # nothing to renew: no sample
    cache.entries["e0"] = server.entries["e0"] = replace(cache.entries["e0"], revision_number=5)
    await mint(cache, server, rev)
    assert got(recorded)["spire_agent.cache_manager.outdated_svids"] == 1
    assert sums(recorded)["spire_agent.cache_manager.outdated_svids"] == 1
    real = time.time
    monkeypatch.setattr(sync.time, "time", lambda: real() + 40 * 60)  # past half of the 1 h SVIDs
    await mint(cache, server, rev)
    assert sums(recorded)["spire_agent.cache_manager.expiring_svids"] == 3
    assert len(server.signed) == 3 + 1 + 3


async def test_newly_tainted_authorities_are_processed_and_sampled(recorded) -> None:
    cache, server, rev = setup(2, 10)
    await mint(cache, server, rev)
    assert count_tainted_x509(cache, [server.root]) == 2
    assert count_tainted_x509(cache, []) == 0
    g = got(recorded)
    assert g["spire_agent.cache_manager.workload.process_tainted_x509_svids|status=OK"] == 2
    assert sums(recorded)["spire_agent.cache_manager.tainted_x509_svids.workload"] == 2

    now = int(time.time())
    cache.jwt_svids.put("spiffe://example.org/w0", ["x"], CachedJWT(token("k1"), "spiffe://example.org/w0", now + 60, now))
    assert drop_tainted_jwts(cache, {"k1"}, new=True) == 1
    assert drop_tainted_jwts(cache, {"k1"}, new=False) == 0  # seen before: dropped silently, not counted
    g = got(recorded)
    assert g["spire_agent.cache_manager.workload.process_tainted_jwt_svids|status=OK"] == 1
    assert sums(recorded)["spire_agent.cache_manager.tainted_jwt_svids.workload"] == 1


def test_agent_key_manager_calls_are_counted(recorded) -> None:
    km = MemoryKeyManager()
    km.generate_key("agent-svid-A", "ec-p256")
    assert km.get_key("agent-svid-A") is not None
    assert km.get_key("missing") is None
    g = got(recorded)
    assert g["spire_agent.agent_key_manager.generate_key|status=OK"] == 1
    assert g["spire_agent.agent_key_manager.get_key|status=OK"] == 2
    assert g["spire_agent.agent_key_manager.generate_key.elapsed_time|status=OK"] == 1


def test_a_rate_limited_call_counts_with_its_full_method(recorded) -> None:
    from grpclib.exceptions import GRPCError

    from spire_py.agent.workloadapi.ratelimit import WorkloadRateLimiter

    limiter = WorkloadRateLimiter({"fetch_jwt_svid": 1}, clock=lambda: 100.0)
    limiter.check("FetchJWTSVID", [uid(1)])
    assert not got(recorded)  # allowed: nothing counted
    with pytest.raises(GRPCError):
        limiter.check("FetchJWTSVID", [uid(1)])
    assert got(recorded) == {"spire_agent.workload_api.rate_limit_exceeded|method=/SpiffeWorkloadAPI/FetchJWTSVID": 1}
