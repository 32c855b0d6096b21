"""KeyManager "memory" (server): keys live in process memory and die with it.

A restarted server therefore cannot reuse its CA keys and prepares a new CA,
as SPIRE's memory KeyManager does. The "disk" KeyManager extends this class.
"""

from __future__ import annotations

import threading
from dataclasses import dataclass
from typing import Optional

from ....common.errors import SpireError
from ....common.keys import KeyTypeError, PrivateKey, PublicKey, generate_key, key_type_of
from ....common.plugin import Plugin, register


@dataclass(frozen=True)
class KeyInfo:
    key_id: str
    key_type: str
    public_key: PublicKey


class KeyManagerError(SpireError, RuntimeError):
    """A key could not be generated or stored."""


@register("server")
class MemoryKeyManager(Plugin):
    """Sync API; the server calls it from its thread pool."""

    TYPE = "KeyManager"
    NAME = "memory"

    def __init__(self) -> None:
        self._keys: dict[str, PrivateKey] = {}
        self._lock = threading.Lock()

    def generate_key(self, key_id: str, key_type: str) -> PrivateKey:
        """A new key of ``key_type`` under ``key_id``, replacing any key with that id."""
        if not key_id:
            raise KeyManagerError("key id is required")
        try:
            key = generate_key(key_type)
        except KeyTypeError as exc:
            raise KeyManagerError(str(exc)) from None
        with self._lock:
            previous = self._keys.get(key_id)
            self._keys[key_id] = key
            try:
                self._persist()
            except BaseException:
                # Keep memory and storage in agreement when the write fails.
                if previous is None:
                    del self._keys[key_id]
                else:
                    self._keys[key_id] = previous
                raise
        return key

    def get_key(self, key_id: str) -> Optional[PrivateKey]:
        with self._lock:
            return self._keys.get(key_id)

    def get_public_key(self, key_id: str) -> Optional[PublicKey]:
        key = self.get_key(key_id)
        return key.public_key() if key is not None else None

    def list_keys(self) -> list[KeyInfo]:
        with self._lock:
            items = sorted(self._keys.items())
        return [KeyInfo(kid, key_type_of(k), k.public_key()) for kid, k in items]

    def _persist(self) -> None:
        """Called with the lock held after a change; memory keeps nothing."""
