"""SPIRE's ``server_key_manager.<op>`` call counters around the server's KeyManager.

As SPIRE's wrapper (pkg/common/telemetry/server/keymanager): generating a key counts as
``generate_key``, fetching one by id (ours hands the key, SPIRE's its public half) as
``get_public_key``, listing them as ``get_public_keys``. SPIRE also counts ``sign_data`` on
each signature through a plugin key; here the CA signs with the key object the KeyManager
handed out (cryptography's builders accept nothing else), so that counter is not emitted.
The proxy is the DataStore's (``common/telemetry/counted.py``).
"""

from __future__ import annotations

from typing import cast

from ....common.telemetry.counted import CountedProxy
from ....common.telemetry.metrics import Key
from ....common.telemetry.names import SERVER_KM_GENERATE_KEY, SERVER_KM_GET_PUBLIC_KEY, SERVER_KM_GET_PUBLIC_KEYS
from .base import KeyManager

COUNTED: dict[str, Key] = {
    "generate_key": SERVER_KM_GENERATE_KEY,
    "get_key": SERVER_KM_GET_PUBLIC_KEY,
    "get_public_key": SERVER_KM_GET_PUBLIC_KEY,
    "list_keys": SERVER_KM_GET_PUBLIC_KEYS,
}


def instrument(key_manager: KeyManager) -> KeyManager:
    return cast(KeyManager, CountedProxy(key_manager, COUNTED))
