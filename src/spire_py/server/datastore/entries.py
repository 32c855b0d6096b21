"""Registration entries and their change events."""

from __future__ import annotations

import uuid
from collections.abc import Iterator, Sequence
from typing import Any

from sqlalchemy import ColumnElement, Connection, delete, func, insert, select, update

from ...common.registration import ENTRY_MASK_FIELDS, MATCH_EXACT, Entry, Selector
from . import schema as s
from .entries_load import LOAD_BATCH, Shared, load_batch
from .entries_sql import (
    E,
    bundle_ids,
    check_store_svid_selectors,
    delete_entry_rows,
    federates_with_clause,
    hydrate,
    normalize_match_arg,
    validate_entry,
    write_dns_names,
    write_entry_event,
    write_federation,
    write_selectors,
)
from .errors import AlreadyExistsError, InvalidArgumentError, NotFoundError
from .matching import selector_match_clause
from .paging import apply_page, check_page_size, chunks, next_token
from .transactions import TransactionalStore, now

SelectorFilter = tuple[Sequence[Selector], str]
FederatesFilter = tuple[Sequence[str], str]


def _entry_filters(
    by_parent_id: str | None,
    by_spiffe_id: str | None,
    by_selectors: SelectorFilter | Sequence[Selector] | None,
    by_hint: str | None,
    by_downstream: bool | None,
    by_federates_with: FederatesFilter | Sequence[str] | None,
) -> list[ColumnElement[bool]]:
    where: list[ColumnElement[bool]] = []
    if by_parent_id:
        where.append(E.c.parent_id == by_parent_id)
    if by_spiffe_id:
        where.append(E.c.spiffe_id == by_spiffe_id)
    if by_hint:
        where.append(E.c.hint == by_hint)
    if by_downstream:  # as SPIRE's sqlstore: false is no filter, downstream entries are listed too
        where.append(E.c.downstream.is_(True))
    if by_selectors is not None:
        sels, match = normalize_match_arg(by_selectors, "selectors")
        where.append(selector_match_clause(E.c.id, s.selectors, "registered_entry_id", sels, match))
    if by_federates_with is not None:
        tds, match = normalize_match_arg(by_federates_with, "federates with")
        where.append(federates_with_clause(tds, match))
    return where


class EntryStore(TransactionalStore):
    # -- helpers (inside a transaction) --

    @staticmethod
    def _entries_by_ids(conn: Connection, entry_ids: Sequence[str]) -> dict[str, Entry]:
        out: dict[str, Entry] = {}
        for part in chunks(list(dict.fromkeys(entry_ids))):
            rows = conn.execute(select(E).where(E.c.entry_id.in_(part))).all()
            for entry in hydrate(conn, rows):
                out[entry.id] = entry
        return out

    @staticmethod
    def _find_similar(conn: Connection, e: Entry) -> Entry | None:
        """SPIRE's duplicate rule: same SPIFFE ID, parent ID and selector set."""
        q = (
            select(E)
            .where(
                E.c.spiffe_id == e.spiffe_id,
                E.c.parent_id == e.parent_id,
                selector_match_clause(
                    E.c.id, s.selectors, "registered_entry_id", e.selectors, MATCH_EXACT
                ),
            )
            .order_by(E.c.id)
            .limit(1)
        )
        rows = conn.execute(q).all()
        found = hydrate(conn, rows)
        return found[0] if found else None

    def _insert_entry(self, conn: Connection, e: Entry) -> str:
        entry_id = e.id or str(uuid.uuid4())
        if conn.execute(select(E.c.id).where(E.c.entry_id == entry_id)).first() is not None:
            raise AlreadyExistsError(f'registration entry "{entry_id}" already exists')
        fed_ids = bundle_ids(conn, e.federates_with)
        t = now()
        result = conn.execute(
            insert(E).values(
                entry_id=entry_id,
                spiffe_id=e.spiffe_id,
                parent_id=e.parent_id,
                x509_svid_ttl=e.x509_svid_ttl,
                jwt_svid_ttl=e.jwt_svid_ttl,
                admin=e.admin,
                downstream=e.downstream,
                store_svid=e.store_svid,
                expires_at=e.expires_at,
                hint=e.hint,
                revision_number=0,
                created_at=t,
                updated_at=t,
            )
        )
        assert result.inserted_primary_key is not None
        internal_id = int(result.inserted_primary_key[0])
        write_selectors(conn, internal_id, e.selectors)
        write_dns_names(conn, internal_id, e.dns_names)
        write_federation(conn, internal_id, fed_ids)
        write_entry_event(conn, entry_id)
        return entry_id

    # -- public API --

    def create_entry_if_not_exists(self, e: Entry) -> tuple[Entry, bool]:
        """Create ``e`` unless a similar entry exists; returns (entry, existed)."""
        validate_entry(e)
        with self._write() as conn:
            existing = self._find_similar(conn, e)
            if existing is not None:
                return existing, True
            entry_id = self._insert_entry(conn, e)
            return self._entries_by_ids(conn, [entry_id])[entry_id], False

    def create_entry(self, e: Entry) -> Entry:
        entry, existed = self.create_entry_if_not_exists(e)
        if existed:
            raise AlreadyExistsError(
                f'similar registration entry already exists: "{entry.id}"', existing=entry
            )
        return entry

    def fetch_entry(self, entry_id: str) -> Entry | None:
        return self.fetch_entries([entry_id]).get(entry_id)

    def fetch_entries(self, entry_ids: Sequence[str]) -> dict[str, Entry]:
        """Entries by id; ids with no entry are left out."""
        if not entry_ids:
            return {}
        with self._read() as conn:
            return self._entries_by_ids(conn, entry_ids)

    def list_entries(
        self,
        *,
        by_parent_id: str | None = None,
        by_spiffe_id: str | None = None,
        by_selectors: SelectorFilter | Sequence[Selector] | None = None,
        by_hint: str | None = None,
        by_downstream: bool | None = None,
        by_federates_with: FederatesFilter | Sequence[str] | None = None,
        page_token: str = "",
        page_size: int = 0,
        tolerate_stale: bool = False,
    ) -> tuple[list[Entry], str]:
        """Entries matching every given filter, in creation order.

        ``by_selectors`` / ``by_federates_with`` take ``(items, match)`` with match
        one of exact|subset|superset|any (a bare list means exact).
        """
        where = _entry_filters(
            by_parent_id, by_spiffe_id, by_selectors, by_hint, by_downstream, by_federates_with
        )
        q = apply_page(select(E).where(*where), E.c.id, page_token, page_size)
        with self._read(tolerate_stale) as conn:
            rows = conn.execute(q).all()
            entries = hydrate(conn, rows)
        last = int(rows[-1].id) if rows else None
        return entries, next_token(last, page_size)

    def list_entries_in_batches(self, batch_size: int = LOAD_BATCH) -> Iterator[list[Entry]]:
        """Every entry, in creation order, ``batch_size`` at a time (the entry cache's load):
        each batch read whole in its own short transaction, values repeated across entries
        shared (see ``entries_load``)."""
        check_page_size(batch_size)
        shared, after = Shared(), 0
        while True:
            with self._read() as conn:
                batch, after = load_batch(conn, after, batch_size or LOAD_BATCH, shared)
            if not batch:
                return
            yield batch

    def count_entries(
        self,
        *,
        by_parent_id: str | None = None,
        by_spiffe_id: str | None = None,
        by_selectors: SelectorFilter | Sequence[Selector] | None = None,
        by_hint: str | None = None,
        by_downstream: bool | None = None,
        by_federates_with: FederatesFilter | Sequence[str] | None = None,
        tolerate_stale: bool = False,
    ) -> int:
        where = _entry_filters(
            by_parent_id, by_spiffe_id, by_selectors, by_hint, by_downstream, by_federates_with
        )
        q = select(func.count()).select_from(E).where(*where)
        with self._read(tolerate_stale) as conn:
            return int(conn.execute(q).scalar_one())

    def update_entry(self, e: Entry, mask: set[str] | None = None) -> Entry:
        """Update the fields named in ``mask`` (all when None); bumps revision_number."""
        fields = set(ENTRY_MASK_FIELDS) if mask is None else set(mask)
        unknown = fields - ENTRY_MASK_FIELDS
        if unknown:
            raise InvalidArgumentError(f'unknown registration entry mask field "{sorted(unknown)[0]}"')
        validate_entry(e, fields)
        with self._write() as conn:
            row = conn.execute(select(E).where(E.c.entry_id == e.id).with_for_update()).first()
            if row is None:
                raise NotFoundError(f'registration entry "{e.id}" not found')
            internal_id = int(row.id)
            values: dict[str, Any] = {
                name: getattr(e, name)
                for name in fields
                if name not in ("selectors", "dns_names", "federates_with")
            }
            values["revision_number"] = int(row.revision_number) + 1
            values["updated_at"] = now()
            store_svid = e.store_svid if "store_svid" in fields else bool(row.store_svid)
            if "selectors" in fields:
                final_selectors = list(e.selectors)
            else:
                final_selectors = hydrate(conn, [row])[0].selectors
            if store_svid:
                check_store_svid_selectors(final_selectors)
            if "federates_with" in fields:
                fed_ids = bundle_ids(conn, e.federates_with)
                fre = s.federated_registration_entries
                conn.execute(delete(fre).where(fre.c.registered_entry_id == internal_id))
                write_federation(conn, internal_id, fed_ids)
            if "selectors" in fields:
                conn.execute(delete(s.selectors).where(s.selectors.c.registered_entry_id == internal_id))
                write_selectors(conn, internal_id, e.selectors)
            if "dns_names" in fields:
                conn.execute(delete(s.dns_names).where(s.dns_names.c.registered_entry_id == internal_id))
                write_dns_names(conn, internal_id, e.dns_names)
            conn.execute(update(E).where(E.c.id == internal_id).values(**values))
            write_entry_event(conn, e.id)
            return self._entries_by_ids(conn, [e.id])[e.id]

    def delete_entry(self, entry_id: str) -> Entry:
        with self._write() as conn:
            row = conn.execute(select(E).where(E.c.entry_id == entry_id)).first()
            if row is None:
                raise NotFoundError(f'registration entry "{entry_id}" not found')
            entry = hydrate(conn, [row])[0]
            delete_entry_rows(conn, [int(row.id)])
            write_entry_event(conn, entry_id)
        return entry

    def prune_entries(self, expires_before: int) -> int:
        """Delete entries whose expiry (when set) is before ``expires_before``."""
        with self._write() as conn:
            rows = conn.execute(
                select(E.c.id, E.c.entry_id).where(E.c.expires_at != 0, E.c.expires_at < expires_before)
            ).all()
            delete_entry_rows(conn, [int(r.id) for r in rows])
            for r in rows:
                write_entry_event(conn, r.entry_id)
        return len(rows)

    # -- events --

    def list_entry_events(
        self,
        greater_than_id: int = 0,
        limit: int = 0,
        *,
        less_than_id: int = 0,
        tolerate_stale: bool = False,
    ) -> list[tuple[int, str]]:
        """(event_id, entry_id) in id order, after ``greater_than_id`` (and before
        ``less_than_id`` when set)."""
        check_page_size(limit)
        ev = s.registered_entries_events
        q = select(ev.c.id, ev.c.entry_id).where(ev.c.id > greater_than_id).order_by(ev.c.id)
        if less_than_id:
            q = q.where(ev.c.id < less_than_id)
        if limit:
            q = q.limit(limit)
        with self._read(tolerate_stale) as conn:
            return [(int(r.id), r.entry_id) for r in conn.execute(q)]

    def fetch_entry_events(self, event_ids: Sequence[int]) -> list[tuple[int, str]]:
        """The events among ``event_ids`` that exist now, in id order.

        The entry cache asks for ids it saw skipped: on PostgreSQL and MySQL ids
        are handed out when a transaction inserts, not when it commits, so a
        later id can become visible before an earlier one.
        """
        ev = s.registered_entries_events
        out: list[tuple[int, str]] = []
        with self._read() as conn:
            for part in chunks(sorted(set(event_ids))):
                q = select(ev.c.id, ev.c.entry_id).where(ev.c.id.in_(part)).order_by(ev.c.id)
                out.extend((int(r.id), r.entry_id) for r in conn.execute(q))
        return out

    def last_entry_event_id(self) -> int:
        """The highest entry event id now visible (0 when there is none)."""
        ev = s.registered_entries_events
        with self._read() as conn:
            return int(conn.execute(select(func.max(ev.c.id))).scalar() or 0)

    def prune_entry_events(self, older_than_seconds: int) -> int:
        ev = s.registered_entries_events
        with self._write() as conn:
            res = conn.execute(delete(ev).where(ev.c.created_at < now() - older_than_seconds))
        return int(res.rowcount or 0)
