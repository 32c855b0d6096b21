"""SPIRE's ``server_key_manager.<op>`` call counters around the server's KeyManager.

As SPIRE's wrapper (pkg/common/telemetry/server/keymanager): generating a key counts as
``generate_key``, fetching one by id (ours hands the key, SPIRE's its public half) as
``get_public_key``, listing them as ``get_public_keys``. SPIRE also counts ``sign_data`` on
each signature through a plugin key; here the CA signs with the key object the KeyManager
handed out (cryptography's builders accept nothing else), so that counter is not emitted.
Called from the server's thread pool: recording takes a lock, as the DataStore's does.
"""

from __future__ import annotations

import functools
import threading
import time
from typing import Any, Callable, cast

from grpclib.const import Status

from ....common import telemetry
from ....common.telemetry.metrics import Key
from ....common.telemetry.names import SERVER_KM_GENERATE_KEY, SERVER_KM_GET_PUBLIC_KEY, SERVER_KM_GET_PUBLIC_KEYS
from .base import KeyManager

COUNTED: dict[str, Key] = {
    "generate_key": SERVER_KM_GENERATE_KEY,
    "get_key": SERVER_KM_GET_PUBLIC_KEY,
    "get_public_key": SERVER_KM_GET_PUBLIC_KEY,
    "list_keys": SERVER_KM_GET_PUBLIC_KEYS,
}


class InstrumentedKeyManager:
    """Delegates to ``inner``; the methods in ``COUNTED`` count with their status and latency."""

    def __init__(self, inner: KeyManager) -> None:
        self._inner = inner
        self._lock = threading.Lock()
        for name, key in COUNTED.items():
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
            except BaseException as exc:
                code = getattr(exc, "status", None)
                status = code if isinstance(code, Status) else Status.UNKNOWN
                raise
            finally:
                with lock:
                    metrics.call_counter(key).done(started, status)
        return call

    def __getattr__(self, name: str) -> Any:
        # Only reached for what __init__ did not set: uncounted methods and attributes.
        return getattr(self._inner, name)


def instrument(key_manager: KeyManager) -> KeyManager:
    return cast(KeyManager, InstrumentedKeyManager(key_manager))
