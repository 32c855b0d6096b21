"""Counting what reference cycles keep alive: objects of a kind created while the cyclic
collector is off and still there afterwards are held by a cycle (reference counting freed the rest)."""

from __future__ import annotations

import gc
from contextlib import contextmanager
from typing import Callable, Iterator


def _count(kind: type) -> int:
    return sum(1 for o in gc.get_objects() if type(o) is kind)


@contextmanager
def collector_off(kind: type) -> Iterator[Callable[[], int]]:
    """``with collector_off(Stream) as left: ...; left()``: how many more ``kind`` objects are
    alive than at entry, with the collector off inside the block."""
    gc.collect()
    before = _count(kind)
    gc.disable()
    try:
        yield lambda: _count(kind) - before
    finally:
        gc.enable()
