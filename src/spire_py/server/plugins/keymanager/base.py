"""What the server asks of a KeyManager (the CA's keys by id), as SPIRE's plugin type.

Synchronous: the CA manager calls it from the server's thread pool.
"""

from __future__ import annotations

from typing import Optional, Protocol, runtime_checkable

from ....common.keys import PrivateKey, PublicKey


@runtime_checkable
class KeyManager(Protocol):
    def generate_key(self, key_id: str, key_type: str) -> PrivateKey:
        """A new key of ``key_type`` under ``key_id``, replacing any key with that id."""
        ...

    def get_key(self, key_id: str) -> Optional[PrivateKey]: ...

    def get_public_key(self, key_id: str) -> Optional[PublicKey]: ...

    async def close(self) -> None: ...
