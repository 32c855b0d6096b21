"""The root of every exception spire_py raises (as py-spiffe's ``spiffe/errors.py``).

Each area keeps its errors beside its code or in its own ``errors`` module
(``server/datastore/errors.py``, ``server/ca/errors.py``); all of them derive from
:class:`SpireError`, so a caller can tell our refusals from a bug in a library. Classes
that were ``ValueError``, ``RuntimeError`` or ``ConnectionError`` before keep that base:
every ``except`` that caught them still does.
"""

from __future__ import annotations


class SpireError(Exception):
    """An error spire_py raised on purpose; the message says what was wrong and with which input."""
