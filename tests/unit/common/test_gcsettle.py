"""common/gcsettle.py: start-up objects frozen, the young generation collected less often."""

from __future__ import annotations

import gc

from spire_py.common import gcsettle


def test_settle_freezes_startup_objects_and_raises_the_young_threshold():
    before = gc.get_threshold()
    made_at_startup = [object() for _ in range(10)], {"plugin": [1, 2, 3]}
    try:
        gc.unfreeze()
        assert gc.get_freeze_count() == 0
        gcsettle.settle()
        assert gc.get_freeze_count() > 0  # what exists now (made_at_startup too) is out of full passes
        young, middle, old = gc.get_threshold()
        assert young == gcsettle.YOUNG_THRESHOLD > before[0]
        assert (middle, old) == before[1:]  # only the young generation's pace changes
        assert gc.isenabled()
    finally:
        gc.unfreeze()
        gc.set_threshold(*before)
    assert made_at_startup
