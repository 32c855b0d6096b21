"""Agent KeyManager: holds the agent SVID key (and workload keys) by id."""

from __future__ import annotations

import threading
from typing import Optional

from cryptography.hazmat.primitives.asymmetric.types import PrivateKeyTypes

from ....common import telemetry
from ....common.keys import generate_key
from ....common.plugin import Plugin
from ....common.telemetry.names import AGENT_KM_GENERATE_KEY, AGENT_KM_GET_KEY


class AgentKeyManager(Plugin):
    TYPE = "KeyManager"

    def __init__(self) -> None:
        self._keys: dict[str, PrivateKeyTypes] = {}
        self._lock = threading.Lock()

    def generate_key(self, key_id: str, key_type: str = "ec-p256") -> PrivateKeyTypes:
        with telemetry.current().call(AGENT_KM_GENERATE_KEY):
            key = generate_key(key_type)
            with self._lock:
                self._keys[key_id] = key
                self._persist()
            return key

    def get_key(self, key_id: str) -> Optional[PrivateKeyTypes]:
        with telemetry.current().call(AGENT_KM_GET_KEY), self._lock:
            return self._keys.get(key_id)

    def _persist(self) -> None:
        """Memory keeps nothing; disk overrides."""
