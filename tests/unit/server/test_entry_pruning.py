"""Expired registration entries are pruned every five minutes, as SPIRE's registration manager:
an entry whose expires_at has passed goes (and leaves the entry cache), one without expiry or
not yet expired stays; each pass counts as registration_entry.manager.prune."""

from __future__ import annotations

import time
from collections.abc import Iterator

import pytest

from spire_py.common.telemetry import metrics
from spire_py.server.core import ServerCore
from spire_py.server.datastore.telemetry import instrument
from spire_py.server.pruning import ENTRY_PRUNE_INTERVAL, EntryPruner
from tests.unit.helpers.datastore import entry
from tests.unit.server.test_node_pruning import Clock, core  # noqa: F401  (core is a fixture)


@pytest.fixture
def recorded() -> Iterator[metrics.Metrics]:
    m = metrics.Metrics("spire_server")
    metrics.set_current(m)
    yield m
    metrics.set_current(metrics.NULL)


def counted(m: metrics.Metrics, name: str) -> float:
    return sum(s.value for s in m.series() if ".".join(s.name) == name and s.kind == metrics.COUNTER)


async def test_expired_entries_are_pruned_every_five_minutes(recorded, core: ServerCore) -> None:  # noqa: F811
    ds = core.datastore
    now = int(time.time())
    expired = ds.create_entry(entry("/expired", expires_at=now - 10))
    later = ds.create_entry(entry("/later", expires_at=now + 3600))
    forever = ds.create_entry(entry("/forever"))
    await core.refresh_cache()
    clock = Clock()
    pruner = EntryPruner(core, clock)
    assert await pruner.tick() == 0  # not yet: SPIRE's first pass is one period after start
    assert ds.fetch_entry(expired.id) is not None
    clock.now += ENTRY_PRUNE_INTERVAL
    assert await pruner.tick() == 1
    assert [ds.fetch_entry(e.id) is not None for e in (expired, later, forever)] == [False, True, True]
    assert expired.id not in core.cache.entries
    assert await pruner.tick() == 0  # the next pass is five minutes on
    assert counted(recorded, "spire_server.registration_entry.manager.prune") == 1


async def test_the_datastore_prune_is_counted(recorded, core: ServerCore) -> None:  # noqa: F811
    core.datastore = instrument(core.datastore)
    assert await EntryPruner(core).prune() == 0
    assert counted(recorded, "spire_server.datastore.registration_entry.prune") == 1
    assert counted(recorded, "spire_server.registration_entry.manager.prune") == 1
