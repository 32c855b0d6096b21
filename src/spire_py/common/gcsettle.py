"""The garbage collector set for a long-running daemon that serves many connections.

CPython collects its youngest generation after every 700 net allocations of container objects.
A server handling hundreds of RPCs a second reaches that hundreds of times a second, and each
such collection promotes whatever the requests in flight hold at that moment; those promotions
pile up in the oldest generation until a full collection, which walks every connection's
long-lived state (hundreds of milliseconds with thousands of agents connected) while the event
loop waits. Collecting the young generation after 50,000 allocations instead promotes about
70 times less, so full collections become rare. The objects start-up made (modules, plugins,
the CA, the first caches) live as long as the process: ``gc.freeze()`` keeps them out of full
collections altogether. Reference counting still frees everything that is not in a cycle at
once; cycles wait a little longer. The server settles this way; the agent only freezes (its
Workload API measured better at CPython's pace: see agent.py and benchmarks/README.md).
"""

from __future__ import annotations

import gc

# Net container allocations before the youngest generation is collected (CPython's default: 700).
YOUNG_THRESHOLD = 50_000


def settle(young: int = YOUNG_THRESHOLD) -> None:
    """Once start-up is done: freeze what it made and collect the young generation after
    ``young`` allocations."""
    gc.freeze()
    _, middle, old = gc.get_threshold()
    gc.set_threshold(young, middle, old)
