"""EventTracker: following the entry events table when ids commit out of order."""

from __future__ import annotations

from collections.abc import Sequence

import pytest
from sqlalchemy import insert

from spire_py.server.datastore import SQLDataStore
from spire_py.server.datastore import schema as s
from spire_py.server.datastore.events import GAP_WINDOW, EventTracker



class FakeEvents:
    """An events table where the test decides which ids are visible."""

    def __init__(self) -> None:
        self.rows: dict[int, str] = {}
        self.fetched: list[list[int]] = []

    def list(self, after: int) -> list[tuple[int, str]]:
        return sorted((i, k) for i, k in self.rows.items() if i > after)

    def fetch(self, ids: Sequence[int]) -> list[tuple[int, str]]:
        self.fetched.append(list(ids))
        return sorted((i, self.rows[i]) for i in ids if i in self.rows)

    def last(self) -> int:
        return max(self.rows, default=0)


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def tracker(ev: FakeEvents, clock: Clock, timeout: float = 60) -> EventTracker:
    t = EventTracker(ev.list, ev.fetch, ev.last, event_timeout=timeout, recheck_interval=0, clock=clock)
    t.advance(t.start())
    return t


def step(t: EventTracker) -> set[str]:
    p = t.poll()
    t.advance(p)
    return p.keys


def test_a_skipped_id_that_commits_later_is_not_missed() -> None:
    ev, clock = FakeEvents(), Clock()
    t = tracker(ev, clock)
    ev.rows[2] = "b"  # id 1 is still in flight
    assert step(t) == {"b"} and set(t.skipped) == {1}
    assert step(t) == set()
    ev.rows[1] = "a"  # ...and commits
    assert step(t) == {"a"} and t.skipped == {}


def test_a_hole_that_never_fills_is_dropped_after_the_event_timeout() -> None:
    ev, clock = FakeEvents(), Clock()
    t = tracker(ev, clock, timeout=60)
    ev.rows[3] = "c"
    step(t)
    assert set(t.skipped) == {1, 2}
    clock.now += 61
    step(t)
    assert t.skipped == {}
    ev.rows[1] = "too-late"
    assert step(t) == set()


def test_holes_just_below_the_start_position_are_watched() -> None:
    ev, clock = FakeEvents(), Clock()
    ev.rows.update({1: "a", 3: "c", 4: "d"})  # 2 in flight while the cache loads
    t = tracker(ev, clock)
    assert t.last_id == 4 and set(t.skipped) == {2}
    ev.rows[2] = "b"
    assert step(t) == {"b"}
    # Only the last GAP_WINDOW ids are considered at start.
    ev2 = FakeEvents()
    ev2.rows[GAP_WINDOW + 50] = "x"
    assert min(tracker(ev2, Clock()).skipped) == 51


def test_a_long_run_of_missing_ids_is_watched_only_near_its_top() -> None:
    """An empty events table (all pruned) whose ids go on from 10 000: not 10 000 holes."""
    ev, clock = FakeEvents(), Clock()
    t = tracker(ev, clock)
    ev.rows[10_000] = "x"
    assert step(t) == {"x"}
    assert len(t.skipped) == GAP_WINDOW and min(t.skipped) == 10_000 - GAP_WINDOW


def test_nothing_is_lost_when_applying_a_poll_fails() -> None:
    ev, clock = FakeEvents(), Clock()
    t = tracker(ev, clock)
    ev.rows[1] = "a"
    assert t.poll().keys == {"a"}  # the caller failed to apply it: no advance
    assert step(t) == {"a"}
    assert step(t) == set()


def test_skipped_ids_are_asked_for_at_most_once_per_interval() -> None:
    ev, clock = FakeEvents(), Clock()
    t = EventTracker(ev.list, ev.fetch, ev.last, recheck_interval=5, clock=clock)
    t.advance(t.start())
    ev.rows[3] = "c"
    step(t)
    step(t)
    step(t)
    assert len(ev.fetched) == 1
    clock.now += 5
    step(t)
    assert len(ev.fetched) == 2


def test_out_of_order_commit_on_the_real_database(store: SQLDataStore) -> None:  # noqa: F811
    """Two transactions: the later id commits first, the earlier one after the cache read."""
    if store.database_type == "sqlite3":
        pytest.skip("sqlite3 has one writer at a time: ids are visible in commit order")
    t = EventTracker(store.list_entry_events, store.fetch_entry_events, store.last_entry_event_id,
                     recheck_interval=0)
    t.advance(t.start())
    ev = s.registered_entries_events
    with store.engine.connect() as slow, store.engine.connect() as fast:
        slow_tx = slow.begin()
        slow.execute(insert(ev).values(entry_id="slow", created_at=1))
        with fast.begin():
            fast.execute(insert(ev).values(entry_id="fast", created_at=1))
        assert step(t) == {"fast"}
        slow_id = t.last_id - 1
        assert slow_id in t.skipped
        slow_tx.commit()
    assert step(t) == {"slow"} and slow_id not in t.skipped


def test_store_event_queries(store: SQLDataStore) -> None:  # noqa: F811
    ev = s.registered_entries_events
    with store.engine.begin() as c:
        for i in (3, 5, 9):
            c.execute(insert(ev).values(id=i, entry_id=f"e{i}", created_at=1))
    assert store.last_entry_event_id() == 9
    assert store.fetch_entry_events([9, 4, 3, 4]) == [(3, "e3"), (9, "e9")]
    assert store.list_entry_events(3, less_than_id=9) == [(5, "e5")]
