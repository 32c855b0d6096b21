"""KeyManager "disk" (server): every key in one JSON file at ``keys_path``.

The file has SPIRE's layout, ``{"keys": {"<key id>": "<base64 PKCS#8 DER>"}}``, so a
Go SPIRE server's keys file can be read; PEM strings are accepted on load too.
It is rewritten atomically with mode 0600 on every change and reloaded at
configure, so CA keys survive a restart.
"""

from __future__ import annotations

import base64
import binascii
import json
import os
from dataclasses import dataclass

from ....common.files import atomic_write
from ....common.keys import KeyTypeError, load_private_key, private_key_to_der
from ....common.plugin import EXACT_STR, Field, PluginConfigError, PluginContext, Schema, register
from .memory import KeyManagerError, MemoryKeyManager


@dataclass
class DiskKeyManagerConfig:
    keys_path: str


@register("server")
class DiskKeyManager(MemoryKeyManager):
    NAME = "disk"
    CONFIG = Schema([Field("keys_path", EXACT_STR, default="")])
    CONFIG_TYPE = DiskKeyManagerConfig

    def __init__(self, keys_path: str) -> None:
        super().__init__()
        self.keys_path = keys_path
        self._load()

    @classmethod
    def validate(cls, config: DiskKeyManagerConfig, ctx: PluginContext) -> None:
        if not config.keys_path:
            raise PluginConfigError("keys_path is required", "keys_path")

    @classmethod
    def from_config(cls, config: DiskKeyManagerConfig, ctx: PluginContext) -> "DiskKeyManager":
        try:
            return cls(os.path.abspath(config.keys_path))
        except KeyManagerError as exc:
            raise PluginConfigError(str(exc), "keys_path") from None

    def _load(self) -> None:
        try:
            with open(self.keys_path, "rb") as f:
                raw = f.read()
        except FileNotFoundError:
            return
        except OSError as exc:
            raise KeyManagerError(f"unable to read keys file {self.keys_path}: {exc}") from None
        try:
            doc = json.loads(raw)
            entries = doc.get("keys") or {}
            if not isinstance(entries, dict):
                raise ValueError('"keys" is not an object')
        except (ValueError, AttributeError) as exc:
            raise KeyManagerError(f"unable to decode keys JSON {self.keys_path}: {exc}") from None
        for key_id, value in entries.items():
            try:
                if not isinstance(value, str):
                    raise KeyTypeError("key is not a string")
                data = value.encode() if "-----BEGIN" in value else base64.b64decode(value, validate=True)
                self._keys[key_id] = load_private_key(data)
            except (KeyTypeError, binascii.Error, ValueError) as exc:
                raise KeyManagerError(f'unable to parse key "{key_id}" in {self.keys_path}: {exc}') from None

    def _persist(self) -> None:
        doc = {"keys": {kid: base64.b64encode(private_key_to_der(k)).decode()
                        for kid, k in sorted(self._keys.items())}}
        try:
            atomic_write(self.keys_path, json.dumps(doc, indent="\t").encode(), 0o600)
        except OSError as exc:
            raise KeyManagerError(f"unable to write entries: {exc}") from None
