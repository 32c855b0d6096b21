"""The CA journal: what the server needs to pick its CA up again after a restart.

It records, per slot, the certificates (never private keys: those stay in the
KeyManager under the slot's key id), the JWT key id and public key, the status,
and the authorities published to the bundle and not yet expired. The bytes go
to a ``manager.JournalStore`` (the datastore's ca_journals table, one row per
server keyed by its signing CA's authority ID) as versioned JSON.
"""

from __future__ import annotations

import base64
import binascii
import json
from dataclasses import dataclass, field
from typing import Any, Optional

from cryptography import x509
from cryptography.hazmat.primitives import serialization

from .errors import JournalError
from .slots import SLOT_IDS, STATUSES, JWTKeySlot, X509CASlot

VERSION = 1


@dataclass
class X509CAEntry:
    slot_id: str
    issued_at: float
    status: str
    chain: list[x509.Certificate]  # the CA certificate first
    upstream: bool
    upstream_roots: list[x509.Certificate] = field(default_factory=list)


@dataclass
class JWTKeyEntry:
    slot_id: str
    issued_at: float
    status: str
    kid: str
    not_after: float
    public_key: bytes  # SPKI DER


@dataclass
class JournalData:
    current_x509: str = "A"
    current_jwt: str = "A"
    x509_cas: dict[str, X509CAEntry] = field(default_factory=dict)
    jwt_keys: dict[str, JWTKeyEntry] = field(default_factory=dict)
    # Published authorities, record form: DER certificates, (kid, SPKI DER, expires_at).
    x509_authorities: list[bytes] = field(default_factory=list)
    jwt_authorities: list[tuple[str, bytes, int]] = field(default_factory=list)


def _b64(der: bytes) -> str:
    return base64.b64encode(der).decode()


def _unb64(value: Any, what: str) -> bytes:
    if not isinstance(value, str):
        raise JournalError(f"{what} is not a base64 string")
    try:
        return base64.b64decode(value, validate=True)
    except (binascii.Error, ValueError):
        raise JournalError(f"{what} is not base64") from None


def _der(cert: x509.Certificate) -> str:
    return _b64(cert.public_bytes(serialization.Encoding.DER))


def _cert(value: Any, what: str) -> x509.Certificate:
    try:
        return x509.load_der_x509_certificate(_unb64(value, what))
    except ValueError as exc:
        raise JournalError(f"{what} is not a DER certificate: {exc}") from None


def encode(current_x509: str, x509_slots: dict[str, X509CASlot], current_jwt: str,
           jwt_slots: dict[str, JWTKeySlot], x509_authorities: list[bytes],
           jwt_authorities: list[tuple[str, bytes, int]]) -> bytes:
    x509s = {}
    for sid, s in x509_slots.items():
        if s.cert is None:
            continue
        x509s[sid] = {"issued_at": s.issued_at, "status": s.status, "chain": [_der(c) for c in s.chain],
                      "upstream": bool(s.upstream_chain), "upstream_roots": [_der(c) for c in s.upstream_roots]}
    jwts = {}
    for sid, j in jwt_slots.items():
        if j.key is None:
            continue
        pub = j.key.public_key().public_bytes(serialization.Encoding.DER,
                                              serialization.PublicFormat.SubjectPublicKeyInfo)
        jwts[sid] = {"issued_at": j.issued_at, "status": j.status, "kid": j.kid, "not_after": j.not_after,
                     "public_key": _b64(pub)}
    doc = {
        "version": VERSION,
        "x509_ca": {"current": current_x509, "slots": x509s},
        "jwt_key": {"current": current_jwt, "slots": jwts},
        "bundle": {"x509_authorities": [_b64(d) for d in x509_authorities],
                   "jwt_authorities": [[kid, _b64(d), int(exp)] for kid, d, exp in jwt_authorities]},
    }
    return json.dumps(doc, sort_keys=True).encode()


def _slot_id(value: Any, what: str) -> str:
    if value not in SLOT_IDS:
        raise JournalError(f'{what}: unknown slot "{value}"')
    return str(value)


def _status(value: Any, what: str) -> str:
    if value not in STATUSES:
        raise JournalError(f'{what}: unknown status "{value}"')
    return str(value)


def decode(raw: bytes) -> JournalData:
    try:
        doc = json.loads(raw)
    except (ValueError, UnicodeDecodeError) as exc:
        raise JournalError(f"journal is not JSON: {exc}") from None
    if not isinstance(doc, dict) or doc.get("version") != VERSION:
        raise JournalError(f"unsupported journal version {doc.get('version') if isinstance(doc, dict) else None!r}")
    try:
        out = JournalData()
        xs, js, b = doc["x509_ca"], doc["jwt_key"], doc["bundle"]
        out.current_x509 = _slot_id(xs["current"], "x509_ca.current")
        for sid, e in xs["slots"].items():
            what = f"x509_ca.slots.{sid}"
            chain = [_cert(c, f"{what}.chain") for c in e["chain"]]
            if not chain:
                raise JournalError(f"{what}: empty chain")
            out.x509_cas[_slot_id(sid, what)] = X509CAEntry(
                sid, float(e["issued_at"]), _status(e["status"], what), chain, bool(e["upstream"]),
                [_cert(c, f"{what}.upstream_roots") for c in e.get("upstream_roots", [])])
        out.current_jwt = _slot_id(js["current"], "jwt_key.current")
        for sid, e in js["slots"].items():
            what = f"jwt_key.slots.{sid}"
            out.jwt_keys[_slot_id(sid, what)] = JWTKeyEntry(
                sid, float(e["issued_at"]), _status(e["status"], what), str(e["kid"]), float(e["not_after"]),
                _unb64(e["public_key"], f"{what}.public_key"))
        out.x509_authorities = [_unb64(d, "bundle.x509_authorities") for d in b["x509_authorities"]]
        out.jwt_authorities = [(str(kid), _unb64(d, "bundle.jwt_authorities"), int(exp))
                               for kid, d, exp in b["jwt_authorities"]]
    except (KeyError, TypeError, ValueError, AttributeError) as exc:
        if isinstance(exc, JournalError):
            raise
        raise JournalError(f"malformed journal: {exc!r}") from None
    return out


class DatastoreJournal:
    """The CA journal kept in the datastore's ca_journals table (manager.JournalStore)."""

    def __init__(self, datastore: Any) -> None:
        self._ds = datastore

    def load(self, journal_ids: list[str]) -> Optional[tuple[str, bytes]]:
        found: Optional[tuple[str, bytes]] = self._ds.find_ca_journal(journal_ids)
        return found

    def all(self) -> list[tuple[str, bytes]]:
        rows: list[tuple[str, bytes]] = self._ds.list_ca_journals()
        return rows

    def save(self, journal_id: str, data: bytes, replaces: Optional[str]) -> None:
        self._ds.set_ca_journal(journal_id, data, replaces=replaces)
