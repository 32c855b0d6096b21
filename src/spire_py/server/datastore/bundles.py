"""Trust bundles: one row per trust domain, contents stored as a JSON document."""

from __future__ import annotations

import base64
import json
from typing import Any

from cryptography import x509
from sqlalchemy import Connection, delete, func, insert, select, update

from . import schema as s
from .entries_sql import delete_entry_rows, write_entry_event
from .errors import (
    AlreadyExistsError,
    ConflictError,
    DataStoreError,
    InvalidArgumentError,
    NotFoundError,
)
from .models import BUNDLE_MASK_FIELDS, Bundle, JWTKey
from .paging import apply_page, next_token
from .transactions import TransactionalStore, now

DELETE_MODES = ("restrict", "delete", "dissociate")


def encode_bundle(b: Bundle) -> bytes:
    doc: dict[str, Any] = {
        "trust_domain_id": b.trust_domain_id,
        "x509_authorities": [base64.b64encode(der).decode("ascii") for der in b.x509_authorities],
        "jwt_authorities": [
            {
                "key_id": k.key_id,
                "public_key": base64.b64encode(k.public_key).decode("ascii"),
                "expires_at": k.expires_at,
                "tainted": k.tainted,
            }
            for k in b.jwt_authorities
        ],
        "refresh_hint": b.refresh_hint,
        "sequence_number": b.sequence_number,
    }
    if b.tainted_x509_authorities:  # absent in bundles written before tainting existed
        doc["tainted_x509_authorities"] = [
            base64.b64encode(der).decode("ascii") for der in b.tainted_x509_authorities if der in b.x509_authorities
        ]
    if b.revoked_authorities:
        doc["revoked_authorities"] = dict(b.revoked_authorities)
    return json.dumps(doc, separators=(",", ":"), sort_keys=True).encode("utf-8")


def decode_bundle(data: bytes) -> Bundle:
    try:
        doc: dict[str, Any] = json.loads(bytes(data).decode("utf-8"))
        return Bundle(
            trust_domain_id=doc["trust_domain_id"],
            x509_authorities=[base64.b64decode(c) for c in doc["x509_authorities"]],
            jwt_authorities=[
                JWTKey(
                    key_id=k["key_id"],
                    public_key=base64.b64decode(k["public_key"]),
                    expires_at=int(k["expires_at"]),
                    tainted=bool(k.get("tainted", False)),
                )
                for k in doc["jwt_authorities"]
            ],
            refresh_hint=int(doc.get("refresh_hint", 0)),
            sequence_number=int(doc.get("sequence_number", 0)),
            tainted_x509_authorities=[base64.b64decode(c) for c in doc.get("tainted_x509_authorities", [])],
            revoked_authorities={str(k): int(v) for k, v in doc.get("revoked_authorities", {}).items()},
        )
    except (ValueError, KeyError, TypeError) as exc:
        raise DataStoreError(f"datastore-sql: stored bundle is corrupt: {exc}") from exc


def _check_bundle(b: Bundle) -> None:
    if not b.trust_domain_id:
        raise InvalidArgumentError("invalid bundle: missing trust domain ID")
    if len(b.trust_domain_id) > s.TRUST_DOMAIN_LEN:
        raise InvalidArgumentError(
            f"invalid bundle: trust domain ID longer than {s.TRUST_DOMAIN_LEN} characters"
        )


def _copy(b: Bundle) -> Bundle:
    return decode_bundle(encode_bundle(b))


def _cert_not_after(der: bytes) -> int:
    try:
        cert = x509.load_der_x509_certificate(der)
    except ValueError as exc:
        raise DataStoreError(f"prune failed: cannot parse certificate: {exc}") from exc
    return int(cert.not_valid_after_utc.timestamp())


def merge_bundles(current: Bundle, extra: Bundle) -> tuple[Bundle, bool]:
    """Add authorities of ``extra`` missing from ``current`` (x509 by DER, JWT by key id), except
    those revoked in ``current``."""
    merged = _copy(current)
    changed = False
    revoked = merged.revoked_authorities
    known_der = set(merged.x509_authorities)
    for der in extra.x509_authorities:
        if der not in known_der and not (revoked and _subject_key_id(der) in revoked):
            merged.x509_authorities.append(der)
            known_der.add(der)
            changed = True
    known_kid = {k.key_id for k in merged.jwt_authorities}
    for key in extra.jwt_authorities:
        if key.key_id not in known_kid and key.key_id not in revoked:
            merged.jwt_authorities.append(JWTKey(key.key_id, key.public_key, key.expires_at, key.tainted))
            known_kid.add(key.key_id)
            changed = True
    return merged, changed


def prune_bundle_contents(b: Bundle, expires_before: int) -> tuple[Bundle, bool]:
    """Drop authorities that expire at or before ``expires_before`` (SPIRE's rule).

    Refuses, as SPIRE does, when that would leave no X.509 authority or remove
    every JWT key, so a bundle never empties itself.
    """
    if expires_before <= 0:
        raise InvalidArgumentError("prune failed: expiration time is zero")
    pruned = _copy(b)
    pruned.x509_authorities = [
        der for der in b.x509_authorities if _cert_not_after(der) > expires_before
    ]
    pruned.tainted_x509_authorities = [d for d in pruned.tainted_x509_authorities if d in pruned.x509_authorities]
    pruned.jwt_authorities = [k for k in pruned.jwt_authorities if k.expires_at > expires_before]
    pruned.revoked_authorities = {i: exp for i, exp in b.revoked_authorities.items() if exp > expires_before}
    if b.x509_authorities and not pruned.x509_authorities:
        raise ConflictError("prune failed: would prune all certificates")
    if b.jwt_authorities and not pruned.jwt_authorities:
        raise ConflictError("prune failed: would prune all JWT signing keys")
    changed = (len(pruned.x509_authorities) != len(b.x509_authorities)
               or len(pruned.jwt_authorities) != len(b.jwt_authorities)
               or len(pruned.revoked_authorities) != len(b.revoked_authorities))
    return pruned, changed


class BundleStore(TransactionalStore):
    # -- helpers (inside a transaction) --

    @staticmethod
    def _bundle_row(conn: Connection, td: str, lock: bool = False) -> tuple[int, Bundle] | None:
        q = select(s.bundles.c.id, s.bundles.c.data).where(s.bundles.c.trust_domain == td)
        if lock:
            q = q.with_for_update()
        row = conn.execute(q).first()
        if row is None:
            return None
        return int(row.id), decode_bundle(row.data)

    @staticmethod
    def _insert_bundle(conn: Connection, b: Bundle) -> None:
        t = now()
        conn.execute(
            insert(s.bundles).values(
                trust_domain=b.trust_domain_id, data=encode_bundle(b), created_at=t, updated_at=t
            )
        )

    @staticmethod
    def _store_bundle(conn: Connection, row_id: int, b: Bundle) -> None:
        conn.execute(
            update(s.bundles)
            .where(s.bundles.c.id == row_id)
            .values(data=encode_bundle(b), updated_at=now())
        )

    # -- public API --

    def create_bundle(self, b: Bundle) -> Bundle:
        _check_bundle(b)
        with self._write() as conn:
            if self._bundle_row(conn, b.trust_domain_id) is not None:
                raise AlreadyExistsError(f'bundle "{b.trust_domain_id}" already exists')
            self._insert_bundle(conn, b)
        return _copy(b)

    def fetch_bundle(self, trust_domain_id: str) -> Bundle | None:
        with self._read() as conn:
            found = self._bundle_row(conn, trust_domain_id)
        return found[1] if found else None

    def list_bundles(self, page_token: str = "", page_size: int = 0) -> tuple[list[Bundle], str]:
        q = apply_page(select(s.bundles.c.id, s.bundles.c.data), s.bundles.c.id, page_token, page_size)
        with self._read() as conn:
            rows = conn.execute(q).all()
        last = int(rows[-1].id) if rows else None
        return [decode_bundle(r.data) for r in rows], next_token(last, page_size)

    def count_bundles(self) -> int:
        with self._read() as conn:
            return int(conn.execute(select(func.count()).select_from(s.bundles)).scalar_one())

    def update_bundle(self, b: Bundle, mask: set[str] | None = None) -> Bundle:
        _check_bundle(b)
        fields = BUNDLE_MASK_FIELDS if mask is None else set(mask)
        unknown = fields - BUNDLE_MASK_FIELDS
        if unknown:
            raise InvalidArgumentError(f'unknown bundle mask field "{sorted(unknown)[0]}"')
        with self._write() as conn:
            found = self._bundle_row(conn, b.trust_domain_id, lock=True)
            if found is None:
                raise NotFoundError(f'bundle "{b.trust_domain_id}" not found')
            row_id, current = found
            new = _copy(current)
            incoming = _copy(b)
            for name in fields:
                setattr(new, name, getattr(incoming, name))
            self._store_bundle(conn, row_id, new)
        return new

    def set_bundle(self, b: Bundle) -> Bundle:
        _check_bundle(b)
        with self._write() as conn:
            found = self._bundle_row(conn, b.trust_domain_id, lock=True)
            if found is None:
                self._insert_bundle(conn, b)
                return _copy(b)
            # What was revoked stays revoked: a replaced bundle does not forget it.
            stored = _copy(b)
            stored.revoked_authorities = {**found[1].revoked_authorities, **b.revoked_authorities}
            self._store_bundle(conn, found[0], stored)
        return stored

    def append_bundle(self, b: Bundle) -> Bundle:
        _check_bundle(b)
        with self._write() as conn:
            found = self._bundle_row(conn, b.trust_domain_id, lock=True)
            if found is None:
                self._insert_bundle(conn, b)
                return _copy(b)
            row_id, current = found
            merged, changed = merge_bundles(current, b)
            if changed:
                merged.sequence_number += 1
                self._store_bundle(conn, row_id, merged)
        return merged

    def delete_bundle(self, trust_domain_id: str, mode: str = "restrict") -> None:
        """Delete a bundle. Entries federating with it make ``restrict`` fail,
        are deleted with ``delete``, or lose the association with ``dissociate``."""
        mode = mode.lower()
        if mode not in DELETE_MODES:
            raise InvalidArgumentError(
                f'unknown delete mode "{mode}"; use one of {", ".join(DELETE_MODES)}'
            )
        fre = s.federated_registration_entries
        with self._write() as conn:
            found = self._bundle_row(conn, trust_domain_id, lock=True)
            if found is None:
                raise NotFoundError(f'bundle "{trust_domain_id}" not found')
            row_id = found[0]
            entry_ids = [
                int(r[0])
                for r in conn.execute(
                    select(fre.c.registered_entry_id).where(fre.c.bundle_id == row_id)
                )
            ]
            if entry_ids and mode == "restrict":
                raise ConflictError(
                    f"datastore-sql: cannot delete bundle; federated with {len(entry_ids)} "
                    "registration entries"
                )
            if entry_ids:
                public_ids: dict[int, str] = dict(
                    conn.execute(
                        select(s.registered_entries.c.id, s.registered_entries.c.entry_id).where(
                            s.registered_entries.c.id.in_(entry_ids)
                        )
                    ).all()
                )
                conn.execute(delete(fre).where(fre.c.bundle_id == row_id))
                if mode == "delete":
                    delete_entry_rows(conn, entry_ids)
                # Either way the entries changed; tell the entry cache.
                for internal_id in entry_ids:
                    write_entry_event(conn, str(public_ids[internal_id]))
            conn.execute(delete(s.bundles).where(s.bundles.c.id == row_id))

    def prune_bundle(self, trust_domain_id: str, expires_before: int) -> bool:
        """Remove expired authorities; True when the bundle changed (sequence bumped)."""
        with self._write() as conn:
            found = self._bundle_row(conn, trust_domain_id, lock=True)
            if found is None:
                return False
            row_id, current = found
            pruned, changed = prune_bundle_contents(current, expires_before)
            if changed:
                pruned.sequence_number = current.sequence_number + 1
                self._store_bundle(conn, row_id, pruned)
        return changed

    # -- forced rotation (LocalAuthority API), in SPIRE's words --

    def _edit_own(self, trust_domain_id: str, edit: Any) -> Any:
        with self._write() as conn:
            found = self._bundle_row(conn, trust_domain_id, lock=True)
            if found is None:
                raise NotFoundError("no such bundle")
            row_id, b = found
            result = edit(b)
            b.sequence_number += 1
            self._store_bundle(conn, row_id, b)
        return result

    def taint_x509_ca(self, trust_domain_id: str, subject_key_id: str) -> None:
        """Mark the X.509 authority whose subject key ID (lowercase hex) is given as tainted."""

        def edit(b: Bundle) -> None:
            for der in b.x509_authorities:
                if _subject_key_id(der) != subject_key_id:
                    continue
                if der in b.tainted_x509_authorities:
                    raise InvalidArgumentError("root CA is already tainted")
                b.tainted_x509_authorities.append(der)
                return
            raise NotFoundError("no ca found with provided subject key ID")

        self._edit_own(trust_domain_id, edit)

    def revoke_x509_ca(self, trust_domain_id: str, subject_key_id: str) -> None:
        """Remove a tainted X.509 authority from the bundle."""

        def edit(b: Bundle) -> None:
            for der in b.x509_authorities:
                if _subject_key_id(der) != subject_key_id:
                    continue
                if der not in b.tainted_x509_authorities:
                    raise InvalidArgumentError("it is not possible to revoke an untainted root CA")
                b.x509_authorities.remove(der)
                b.tainted_x509_authorities.remove(der)
                b.revoked_authorities[subject_key_id] = _cert_not_after(der)
                return
            raise NotFoundError("no root CA found with provided subject key ID")

        self._edit_own(trust_domain_id, edit)

    def taint_jwt_key(self, trust_domain_id: str, key_id: str) -> JWTKey:
        def edit(b: Bundle) -> JWTKey:
            for k in b.jwt_authorities:
                if k.key_id == key_id:
                    if k.tainted:
                        raise InvalidArgumentError("key is already tainted")
                    k.tainted = True
                    return JWTKey(k.key_id, k.public_key, k.expires_at, True)
            raise NotFoundError("no JWT Key found with provided key ID")

        result: JWTKey = self._edit_own(trust_domain_id, edit)
        return result

    def revoke_jwt_key(self, trust_domain_id: str, key_id: str) -> JWTKey:
        def edit(b: Bundle) -> JWTKey:
            for k in b.jwt_authorities:
                if k.key_id == key_id:
                    if not k.tainted:
                        raise InvalidArgumentError("it is not possible to revoke an untainted key")
                    b.jwt_authorities.remove(k)
                    b.revoked_authorities[key_id] = k.expires_at
                    return k
            raise NotFoundError("no JWT Key found with provided key ID")

        result: JWTKey = self._edit_own(trust_domain_id, edit)
        return result


def _subject_key_id(der: bytes) -> str:
    try:
        cert = x509.load_der_x509_certificate(der)
        return cert.extensions.get_extension_for_class(x509.SubjectKeyIdentifier).value.digest.hex()
    except (ValueError, x509.ExtensionNotFound):
        return ""
