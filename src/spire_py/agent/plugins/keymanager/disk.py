"""KeyManager "disk" (agent): keys persisted in ``directory``/keys.json (0600, atomic)."""

from __future__ import annotations

import json
import os
from dataclasses import dataclass

from cryptography.hazmat.primitives import serialization

from ....common.files import atomic_write
from ....common.plugin import EXACT_STR, Field, PluginConfigError, PluginContext, Schema, register
from .base import AgentKeyManager

KEYS_FILE = "keys.json"


@dataclass
class DiskKeyManagerConfig:
    directory: str


@register("agent")
class DiskKeyManager(AgentKeyManager):
    NAME = "disk"
    CONFIG = Schema([Field("directory", EXACT_STR)])
    CONFIG_TYPE = DiskKeyManagerConfig

    def __init__(self, directory: str) -> None:
        super().__init__()
        self.path = os.path.join(directory, KEYS_FILE)
        self._load()

    @classmethod
    def validate(cls, config: DiskKeyManagerConfig, ctx: PluginContext) -> None:
        if not config.directory:
            raise PluginConfigError("directory must be configured", "directory")

    @classmethod
    def from_config(cls, config: DiskKeyManagerConfig, ctx: PluginContext) -> "DiskKeyManager":
        directory = os.path.abspath(config.directory)
        os.makedirs(directory, mode=0o700, exist_ok=True)
        return cls(directory)

    def _load(self) -> None:
        try:
            with open(self.path) as f:
                raw = json.load(f)
        except FileNotFoundError:
            return
        except ValueError as exc:
            raise PluginConfigError(f"cannot read {self.path}: {exc}", "directory") from None
        for key_id, pem in raw.get("keys", {}).items():
            self._keys[key_id] = serialization.load_pem_private_key(pem.encode(), None)

    def _persist(self) -> None:
        keys = {
            kid: k.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                 serialization.NoEncryption()).decode()
            for kid, k in self._keys.items()
        }
        atomic_write(self.path, json.dumps({"keys": keys}).encode(), 0o600)
