"""What the agent keeps in data_dir across restarts: its SVID and the trust bundle.

Written atomically with 0600 permissions, so a kill -9 at any point leaves the
previous or the new state, never half of one. The SVID's private key lives in the
KeyManager (the "disk" one persists it; with "memory" a restart re-attests).
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass
from typing import Optional

from cryptography import x509

from ..common.files import atomic_write
from ..common.x509util import certs_to_der_chain

SVID_FILE = "agent_svid.der"
BUNDLE_FILE = "bundle.der"
STATE_FILE = "agent_state.json"


def load_der_chain(data: bytes) -> list[x509.Certificate]:
    """Parse concatenated DER certificates (SPIRE's on-disk and Workload API form)."""
    certs = []
    rest = data
    while rest:
        # Each DER certificate is a SEQUENCE: read its length to split the blob.
        if rest[0] != 0x30 or len(rest) < 2:
            raise ValueError("not a DER certificate sequence")
        first = rest[1]
        if first < 0x80:
            size, hdr = first, 2
        else:
            n = first & 0x7F
            size, hdr = int.from_bytes(rest[2 : 2 + n], "big"), 2 + n
        certs.append(x509.load_der_x509_certificate(rest[: hdr + size]))
        rest = rest[hdr + size :]
    return certs


@dataclass
class AgentState:
    svid: list[x509.Certificate]
    key_id: str
    reattestable: bool


class AgentStorage:
    def __init__(self, data_dir: str) -> None:
        self.dir = data_dir  # created (0700) by the first atomic write

    def _path(self, name: str) -> str:
        return os.path.join(self.dir, name)

    def load_bundle(self) -> Optional[list[x509.Certificate]]:
        try:
            with open(self._path(BUNDLE_FILE), "rb") as f:
                return load_der_chain(f.read()) or None
        except FileNotFoundError:
            return None

    def store_bundle(self, roots: list[x509.Certificate]) -> None:
        atomic_write(self._path(BUNDLE_FILE), certs_to_der_chain(roots), 0o600)

    def load_state(self) -> Optional[AgentState]:
        try:
            with open(self._path(SVID_FILE), "rb") as f:
                chain = load_der_chain(f.read())
            with open(self._path(STATE_FILE)) as f:
                meta = json.load(f)
        except (FileNotFoundError, ValueError):
            return None
        if not chain:
            return None
        return AgentState(chain, meta.get("key_id", ""), bool(meta.get("reattestable", False)))

    def store_state(self, state: AgentState) -> None:
        # SVID first, then the metadata naming its key: a crash between them leaves
        # a state whose key does not match the SVID, which the agent detects and re-attests.
        atomic_write(self._path(SVID_FILE), certs_to_der_chain(state.svid), 0o600)
        atomic_write(self._path(STATE_FILE), json.dumps({"key_id": state.key_id, "reattestable": state.reattestable}).encode(), 0o600)

    def clear_state(self) -> None:
        for name in (SVID_FILE, STATE_FILE):
            try:
                os.unlink(self._path(name))
            except FileNotFoundError:
                pass
