"""A proxy that counts chosen methods of an object as SPIRE's call counters.

The server wraps its DataStore and KeyManager once, when the catalog loads them; every
caller then counts without knowing it. The methods run on the server's thread pool, so
recording takes a lock (a counter update, ``value += 1``, is not atomic across threads).
Attributes the table does not name pass through uncounted.
"""

from __future__ import annotations

import functools
import threading
import time
from typing import Any, Callable, Mapping

from grpclib.const import Status

from .metrics import Key, current


def status_attribute(exc: BaseException) -> Status:
    """The gRPC status an exception carries in ``status`` (a GRPCError's), else Unknown."""
    code = getattr(exc, "status", None)
    return code if isinstance(code, Status) else Status.UNKNOWN


class CountedProxy:
    """Delegates to ``inner``; each method named in ``keys`` counts under its key with the
    status ``status_of`` gives its exception (OK when it returns) and its latency."""

    def __init__(self, inner: Any, keys: Mapping[str, Key],
                 status_of: Callable[[BaseException], Status] = status_attribute) -> None:
        self._inner = inner
        lock = threading.Lock()
        for name, key in keys.items():
            method = getattr(inner, name, None)
            if callable(method):
                setattr(self, name, _counted(method, key, lock, status_of))

    def __getattr__(self, name: str) -> Any:
        # Only reached for what __init__ did not set: uncounted methods and attributes.
        return getattr(self._inner, name)


def _counted(method: Callable[..., Any], key: Key, lock: threading.Lock,
             status_of: Callable[[BaseException], Status]) -> Callable[..., Any]:
    @functools.wraps(method)
    def call(*args: Any, **kwargs: Any) -> Any:
        metrics = current()
        if not metrics.enabled:
            return method(*args, **kwargs)
        started = time.monotonic()
        status = Status.OK
        try:
            return method(*args, **kwargs)
        except BaseException as exc:
            status = status_of(exc)
            raise
        finally:
            with lock:
                metrics.call_counter(key).done(started, status)
    return call
