"""Following an events table when ids can become visible out of order.

Every change to an entry (or node) writes an event row in the same transaction;
caches follow the table by id. On PostgreSQL and MySQL an id is handed out when
a transaction inserts, not when it commits, so with concurrent writers (one
server's threads, or several servers on one database) id 11 can be visible
while id 10 is still in flight. A reader that only asks for ids above the last
one it saw would miss 10 for good. As SPIRE does (its eventTracker), every id
jumped over is remembered and asked for again until it shows up or an
``event_timeout`` has passed (a transaction that rolled back leaves a hole that
never fills). The same is done at start for ids just below the last one, and
only for the ids just below a visible one (see GAP_WINDOW).

The tracker is two-phase: ``poll()`` reads and returns what changed, and
``advance()`` moves on only once the caller has applied it, so a failed read
of the changed records is simply retried on the next poll.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

# SPIRE's default experimental.event_timeout: how long a skipped id is waited for.
DEFAULT_EVENT_TIMEOUT = 15 * 60.0
# Skipped ids are asked for at most this often (each ask is one indexed query).
RECHECK_INTERVAL = 1.0
# Of a run of missing ids (at start: below the newest id), only this many just
# below the next visible id are watched. In-flight transactions are bounded by
# how many can be open at once; longer runs are rolled-back or pruned ids (an
# emptied table whose ids go on from where they were, say).
GAP_WINDOW = 256

Event = tuple[int, str]  # (event id, key: entry id or SPIFFE ID)


@dataclass
class Poll:
    """What one poll found: the keys to re-read, and the tracker state to move to."""

    keys: set[str]
    last_id: int
    skipped: dict[int, float] = field(default_factory=dict)


class EventTracker:
    def __init__(
        self,
        list_events: Callable[[int], list[Event]],
        fetch_events: Callable[[Sequence[int]], list[Event]],
        last_event_id: Callable[[], int],
        *,
        event_timeout: float = DEFAULT_EVENT_TIMEOUT,
        recheck_interval: float = RECHECK_INTERVAL,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._list = list_events  # events with id > the argument, in id order
        self._fetch = fetch_events  # the events among the given ids that exist now
        self._last_event_id = last_event_id
        self.event_timeout = event_timeout
        self.recheck_interval = recheck_interval
        self._clock = clock
        self.last_id = 0
        self.skipped: dict[int, float] = {}  # event id -> when it was first found missing
        self._last_recheck = float("-inf")

    def start(self) -> Poll:
        """The position to load from: the newest id now, with the holes just below it.

        Read this before loading the records themselves; anything committed after
        it is picked up by the next poll.
        """
        last = self._last_event_id()
        low = max(0, last - GAP_WINDOW)
        present = {i for i, _ in self._list(low)}
        now = self._clock()
        holes = {i: now for i in range(low + 1, last) if i not in present}
        return Poll(keys=set(), last_id=last, skipped=holes)

    def poll(self) -> Poll:
        """New events since the last id, and skipped ids that have appeared since."""
        now = self._clock()
        skipped = {i: t for i, t in self.skipped.items() if now - t <= self.event_timeout}
        keys: set[str] = set()
        last = self.last_id
        for event_id, key in self._list(last):
            for missing in range(max(last + 1, event_id - GAP_WINDOW), event_id):
                skipped[missing] = now
            keys.add(key)
            last = max(last, event_id)
        if skipped and now - self._last_recheck >= self.recheck_interval:
            self._last_recheck = now
            for event_id, key in self._fetch(sorted(i for i in skipped if i < self.last_id)):
                keys.add(key)
                skipped.pop(event_id, None)
        return Poll(keys=keys, last_id=last, skipped=skipped)

    def advance(self, poll: Poll) -> None:
        """Move to the state a poll found, once its keys have been applied."""
        self.last_id = poll.last_id
        self.skipped = poll.skipped
