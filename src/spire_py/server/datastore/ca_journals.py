"""CA journals: opaque blobs the CA manager persists across restarts (server/ca/journal.py
encodes them)."""

from __future__ import annotations

from sqlalchemy import delete, insert, select, update

from . import schema as s
from .errors import InvalidArgumentError
from .transactions import TransactionalStore, now

J = s.ca_journals


class CAJournalStore(TransactionalStore):
    def set_ca_journal(self, journal_id: str, data: bytes, replaces: str | None = None) -> None:
        """Store a journal under ``journal_id``; the row ``replaces`` goes in the same transaction."""
        if not journal_id:
            raise InvalidArgumentError("CA journal ID is required")
        if len(journal_id) > s.CA_JOURNAL_ID_LEN:
            raise InvalidArgumentError(f"CA journal ID longer than {s.CA_JOURNAL_ID_LEN} characters")
        with self._write() as conn:
            res = conn.execute(
                update(J).where(J.c.id == journal_id).values(data=bytes(data), updated_at=now())
            )
            if res.rowcount == 0:
                conn.execute(insert(J).values(id=journal_id, data=bytes(data), updated_at=now()))
            if replaces and replaces != journal_id:
                conn.execute(delete(J).where(J.c.id == replaces))

    def find_ca_journal(self, journal_ids: list[str]) -> tuple[str, bytes] | None:
        """The first stored journal among ``journal_ids`` (in that order), with its ID."""
        if not journal_ids:
            return None
        with self._read() as conn:
            rows = {r.id: bytes(r.data) for r in conn.execute(select(J.c.id, J.c.data).where(J.c.id.in_(journal_ids)))}
        for jid in journal_ids:
            if jid in rows:
                return jid, rows[jid]
        return None

    def list_ca_journals(self) -> list[tuple[str, bytes]]:
        with self._read() as conn:
            return [(r.id, bytes(r.data)) for r in conn.execute(select(J.c.id, J.c.data).order_by(J.c.id))]

    def prune_ca_journals(self, updated_before: int, keep: str | None = None) -> int:
        """Drop journals nobody has written since ``updated_before`` (all their CAs have expired)."""
        with self._write() as conn:
            q = delete(J).where(J.c.updated_at < updated_before)
            if keep:
                q = q.where(J.c.id != keep)
            return int(conn.execute(q).rowcount or 0)

    def fetch_ca_journal(self, journal_id: str) -> bytes | None:
        with self._read() as conn:
            row = conn.execute(select(J.c.data).where(J.c.id == journal_id)).first()
        return bytes(row.data) if row else None
