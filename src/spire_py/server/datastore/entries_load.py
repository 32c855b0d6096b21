"""Reading every registration entry at once, for the server's entry cache (start-up, restart).

A server restarting on a million entries must not hold a million rows at once nor pay
per-row Python overhead it can avoid. Entries are read in batches by internal id (keyset:
``id > last ORDER BY id LIMIT n``), each batch with its selectors, DNS names and federated
trust domains read by id range, all in one short read transaction per batch: no cursor
stays open between batches (MySQL's PyMySQL cannot interleave two streaming results on one
connection, and a long transaction would hold back PostgreSQL's vacuum). Rows come back as
plain tuples and the entries are built compactly: selectors, parent IDs, hints, trust domains
and timestamps repeated across entries are one shared object each.

A batch may see a write committed between its statements (say, an entry's new selectors
with its old row); the entry cache reads the event log position before loading, so every
such write arrives as an event afterwards and the entry is read again whole.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, Callable, Optional, TypeVar

from sqlalchemy import Connection, select

from ...common.registration import Entry, Selector
from . import schema as s

E = s.registered_entries
_S = s.selectors
_D = s.dns_names
_F = s.federated_registration_entries

# The entry columns in the order Entry's positional fields want them (after the internal id).
_ENTRY_COLUMNS = (E.c.id, E.c.entry_id, E.c.spiffe_id, E.c.parent_id, E.c.x509_svid_ttl, E.c.jwt_svid_ttl,
                  E.c.admin, E.c.downstream, E.c.expires_at, E.c.hint, E.c.store_svid, E.c.created_at,
                  E.c.revision_number)

# Entries per batch: big enough that the per-batch queries cost little, small enough to bound memory.
LOAD_BATCH = 10_000

T = TypeVar("T")


class Shared:
    """One object per distinct value seen while loading (kept for one load, then dropped)."""

    def __init__(self) -> None:
        self.values: dict[Any, Any] = {}
        self.selectors: dict[str, dict[str, Selector]] = {}

    def one(self, value: T) -> T:
        return self.values.setdefault(value, value)

    def selector(self, type_: str, value: str) -> Selector:
        of_type = self.selectors.get(type_)
        if of_type is None:
            of_type = self.selectors[type_] = {}
        sel = of_type.get(value)
        if sel is None:
            sel = of_type[value] = Selector(self.one(type_), value)
        return sel


def _selectors(rows: Sequence[Any], shared: Shared) -> dict[int, list[Selector]]:
    """``{internal entry id: [selector, ...]}`` from ``(id, type, value)`` rows, in row order."""
    out: dict[int, list[Selector]] = {}
    get, known = out.get, shared.selectors
    for entry, type_, value in rows:  # inlined Shared.selector: millions of rows
        of_type = known.get(type_)
        if of_type is None:
            of_type = known[type_] = {}
        sel = of_type.get(value)
        if sel is None:
            sel = of_type[value] = Selector(shared.one(type_), value)
        found = get(entry)
        if found is None:
            out[entry] = [sel]
        else:
            found.append(sel)
    return out


def _strings(rows: Sequence[Any], one: Optional[Callable[[str], str]] = None) -> dict[int, list[str]]:
    """``{internal entry id: [value, ...]}`` from ``(id, value)`` rows, in row order."""
    out: dict[int, list[str]] = {}
    get = out.get
    for entry, value in rows:
        if one is not None:
            value = one(value)
        found = get(entry)
        if found is None:
            out[entry] = [value]
        else:
            found.append(value)
    return out


def _rows(conn: Connection, query: Any) -> list[Any]:
    """The driver's own tuples: no Row objects or type processing per row (booleans and
    integers are taken as the drivers give them, and normalised where entries are built)."""
    result = conn.execute(query)
    try:
        return list(result.cursor.fetchall())
    finally:
        result.close()


def load_batch(conn: Connection, after: int, limit: int, shared: Shared) -> tuple[list[Entry], int]:
    """Up to ``limit`` entries with internal id above ``after``, whole, in id order; and the
    last internal id read (``after`` when there were none)."""
    rows = _rows(conn, select(*_ENTRY_COLUMNS).where(E.c.id > after).order_by(E.c.id).limit(limit))
    if not rows:
        return [], after
    lo, hi = rows[0][0], rows[-1][0]
    sels = _selectors(_rows(conn, select(_S.c.registered_entry_id, _S.c.type, _S.c.value)
                            .where(_S.c.registered_entry_id.between(lo, hi))
                            .order_by(_S.c.registered_entry_id, _S.c.id)), shared)
    dns = _strings(_rows(conn, select(_D.c.registered_entry_id, _D.c.value)
                         .where(_D.c.registered_entry_id.between(lo, hi))
                         .order_by(_D.c.registered_entry_id, _D.c.id)))
    feds = _strings(_rows(conn, select(_F.c.registered_entry_id, s.bundles.c.trust_domain)
                          .join(s.bundles, s.bundles.c.id == _F.c.bundle_id)
                          .where(_F.c.registered_entry_id.between(lo, hi))
                          .order_by(_F.c.registered_entry_id, s.bundles.c.trust_domain)), shared.one)
    one = shared.values.setdefault  # one(v, v): the object already seen equal to v, or v
    entries = [
        Entry(entry_id, spiffe_id, one(parent_id, parent_id), sels.get(iid) or [], one(x509_ttl, x509_ttl), jwt_ttl,
              dns.get(iid) or [], bool(admin), bool(downstream), feds.get(iid) or [], one(expires_at, expires_at),
              one(hint, hint), bool(store_svid), one(created_at, created_at), revision)
        for (iid, entry_id, spiffe_id, parent_id, x509_ttl, jwt_ttl, admin, downstream, expires_at, hint,
             store_svid, created_at, revision) in rows
    ]
    return entries, int(hi)
