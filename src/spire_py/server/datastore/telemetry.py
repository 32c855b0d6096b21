"""SPIRE's ``datastore.<object>.<op>`` call counters around every DataStore method.

The server wraps its DataStore once, when the catalog loads it (``instrument``); every
caller (API handlers, the CA journal, pruning, the entry cache, the join_token attestor)
then counts without knowing it. Methods are called from the server's thread pool, so the
recording takes a lock: a counter update (``value += 1``) is not atomic across threads.
A method ``names.DATASTORE`` does not name is passed through uncounted.
"""

from __future__ import annotations

import functools
import threading
import time
from typing import Any, Callable, cast

from grpclib.const import Status

from ...common import telemetry
from ...common.telemetry.metrics import Key
from ...common.telemetry.names import DATASTORE
from .api import DataStore
from .errors import DataStoreError

class InstrumentedDataStore:
    """Delegates to ``inner``; each method named in ``names.DATASTORE`` is counted with its status and
    latency (``datastore.<object>.<op>`` and ``...elapsed_time``)."""

    def __init__(self, inner: DataStore) -> None:
        self._inner = inner
        self._lock = threading.Lock()
        for name, key in DATASTORE.items():
            method = getattr(inner, name, None)
            if callable(method):
                setattr(self, name, self._counted(method, key))

    def _counted(self, method: Callable[..., Any], key: Key) -> Callable[..., Any]:
        lock = self._lock

        @functools.wraps(method)
        def call(*args: Any, **kwargs: Any) -> Any:
            metrics = telemetry.current()
            if not metrics.enabled:
                return method(*args, **kwargs)
            started = time.monotonic()
            status = Status.OK
            try:
                return method(*args, **kwargs)
            except DataStoreError as exc:
                status = Status(exc.grpc_code)
                raise
            except BaseException:
                status = Status.UNKNOWN
                raise
            finally:
                with lock:
                    metrics.call_counter(key).done(started, status)
        return call

    def __getattr__(self, name: str) -> Any:
        # Only reached for what __init__ did not set: uncounted methods and attributes.
        return getattr(self._inner, name)


def instrument(datastore: DataStore) -> DataStore:
    return cast(DataStore, InstrumentedDataStore(datastore))
