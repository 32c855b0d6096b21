"""Creating many registration entries in one transaction (BatchCreateEntry).

One entry per transaction costs a commit, a similar-entry subquery and a re-read
each; at 100k entries that is minutes. Here a batch is checked and written with a
handful of bulk statements, and each entry still gets its own outcome, as SPIRE's
batch APIs give a status per item: the created entry, the similar one that
already existed, or the error that stopped it.
"""

from __future__ import annotations

import uuid
from collections.abc import Sequence
from dataclasses import replace
from typing import Any, Union

from sqlalchemy import Connection, Row, insert, select

from ...common.registration import Entry, Selector
from . import schema as s
from .entries_sql import E, hydrate, validate_entry
from .errors import AlreadyExistsError, DataStoreError, InvalidArgumentError
from .paging import chunks
from .transactions import TransactionalStore, now

# (entry, existed) or the error for that entry alone.
CreateOutcome = Union[tuple[Entry, bool], DataStoreError]
_SimilarKey = tuple[str, str, frozenset[Selector]]


def _similar_key(e: Entry) -> _SimilarKey:
    """SPIRE's duplicate rule: same SPIFFE ID, parent ID and selector set."""
    return (e.spiffe_id, e.parent_id, frozenset(e.selectors))


def _existing_similar(conn: Connection, entries: Sequence[Entry]) -> dict[_SimilarKey, Entry]:
    """Stored entries similar to any of ``entries``; the oldest one per key, as _find_similar."""
    spiffe_ids = sorted({e.spiffe_id for e in entries})
    parents = {e.parent_id for e in entries}
    rows: list[Row[Any]] = []
    for part in chunks(spiffe_ids):
        rows.extend(r for r in conn.execute(select(E).where(E.c.spiffe_id.in_(part))) if r.parent_id in parents)
    if not rows:
        return {}
    rows.sort(key=lambda r: int(r.id))
    found: dict[_SimilarKey, Entry] = {}
    for stored in hydrate(conn, rows):
        found.setdefault(_similar_key(stored), stored)
    return found


def _bundle_ids(conn: Connection, trust_domains: set[str]) -> dict[str, int]:
    found: dict[str, int] = {}
    for part in chunks(sorted(trust_domains)):
        for row in conn.execute(
            select(s.bundles.c.trust_domain, s.bundles.c.id).where(s.bundles.c.trust_domain.in_(part))
        ):
            found[row.trust_domain] = int(row.id)
    return found


def _taken_ids(conn: Connection, entry_ids: set[str]) -> set[str]:
    taken: set[str] = set()
    for part in chunks(sorted(entry_ids)):
        taken.update(r.entry_id for r in conn.execute(select(E.c.entry_id).where(E.c.entry_id.in_(part))))
    return taken


class EntryBatchStore(TransactionalStore):
    def create_entries_if_not_exist(self, entries: Sequence[Entry]) -> list[CreateOutcome]:
        """Create each entry unless a similar one exists, all in one transaction.

        Returns one outcome per input, in order: ``(entry, existed)`` like
        ``create_entry_if_not_exists``, or the error that entry alone ran into
        (invalid, unknown federated bundle, entry ID taken). An entry similar to
        an earlier one of the same batch comes back as existing.
        """
        outcomes: list[CreateOutcome | None] = [None] * len(entries)
        valid: list[int] = []
        for i, e in enumerate(entries):
            try:
                validate_entry(e)
                valid.append(i)
            except InvalidArgumentError as exc:
                outcomes[i] = exc
        if valid:
            with self._write() as conn:
                self._create_valid(conn, entries, valid, outcomes)
        assert all(o is not None for o in outcomes)
        return outcomes  # type: ignore[return-value]

    @staticmethod
    def _create_valid(conn: Connection, entries: Sequence[Entry], valid: list[int],
                      outcomes: list[CreateOutcome | None]) -> None:
        similar = _existing_similar(conn, [entries[i] for i in valid])
        bundles = _bundle_ids(conn, {td for i in valid for td in entries[i].federates_with})
        taken = _taken_ids(conn, {entries[i].id for i in valid if entries[i].id})
        t = now()
        new: list[tuple[int, str, Entry]] = []  # (input index, entry id, entry)
        pending: dict[_SimilarKey, int] = {}  # key -> input index created in this batch
        for i in valid:
            e = entries[i]
            key = _similar_key(e)
            if key in similar:
                outcomes[i] = (similar[key], True)
                continue
            if key in pending:
                continue  # resolved once the first one is stored
            entry_id = e.id or str(uuid.uuid4())
            if entry_id in taken:
                outcomes[i] = AlreadyExistsError(f'registration entry "{entry_id}" already exists')
                continue
            missing = next((td for td in dict.fromkeys(e.federates_with) if td not in bundles), None)
            if missing is not None:
                outcomes[i] = InvalidArgumentError(f'unable to find federated bundle "{missing}"')
                continue
            taken.add(entry_id)
            pending[key] = i
            new.append((i, entry_id, e))
        if not new:
            return
        conn.execute(insert(E), [{
            "entry_id": entry_id, "spiffe_id": e.spiffe_id, "parent_id": e.parent_id,
            "x509_svid_ttl": e.x509_svid_ttl, "jwt_svid_ttl": e.jwt_svid_ttl, "admin": e.admin,
            "downstream": e.downstream, "store_svid": e.store_svid, "expires_at": e.expires_at, "hint": e.hint,
            "revision_number": 0, "created_at": t, "updated_at": t,
        } for _, entry_id, e in new])
        internal: dict[str, int] = {}
        for part in chunks([entry_id for _, entry_id, _ in new]):
            internal.update((r.entry_id, int(r.id)) for r in conn.execute(
                select(E.c.id, E.c.entry_id).where(E.c.entry_id.in_(part))))
        sel_rows: list[dict[str, Any]] = []
        dns_rows: list[dict[str, Any]] = []
        fed_rows: list[dict[str, Any]] = []
        for _, entry_id, e in new:
            rid = internal[entry_id]
            sel_rows.extend({"registered_entry_id": rid, "type": x.type, "value": x.value} for x in e.selectors)
            dns_rows.extend({"registered_entry_id": rid, "value": n} for n in dict.fromkeys(e.dns_names))
            fed_rows.extend({"registered_entry_id": rid, "bundle_id": bundles[td]}
                            for td in dict.fromkeys(e.federates_with))
        for table, rows in ((s.selectors, sel_rows), (s.dns_names, dns_rows),
                            (s.federated_registration_entries, fed_rows)):
            if rows:
                conn.execute(insert(table), rows)
        conn.execute(insert(s.registered_entries_events),
                     [{"entry_id": entry_id, "created_at": t} for _, entry_id, _ in new])
        # The entries as hydrate() would read them back, without reading them back.
        stored = {
            entry_id: replace(e, id=entry_id, selectors=list(e.selectors), dns_names=list(dict.fromkeys(e.dns_names)),
                              federates_with=sorted(set(e.federates_with)), created_at=t, revision_number=0)
            for _, entry_id, e in new
        }
        created = {_similar_key(e): stored[entry_id] for _, entry_id, e in new}
        for i, entry_id, _ in new:
            outcomes[i] = (stored[entry_id], False)
        for i in valid:
            if outcomes[i] is None:  # similar to one created earlier in this batch
                outcomes[i] = (created[_similar_key(entries[i])], True)
