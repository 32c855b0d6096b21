"""Join tokens and the CA journal blobs."""

from __future__ import annotations

from sqlalchemy import delete, insert, select, update

from . import schema as s
from .errors import AlreadyExistsError, InvalidArgumentError, NotFoundError
from .models import JoinToken
from .transactions import TransactionalStore, now

T = s.join_tokens
J = s.ca_journals


class TokenStore(TransactionalStore):
    def create_join_token(self, t: JoinToken) -> None:
        if not t.token or not t.expires_at:
            raise InvalidArgumentError("token and expiry are required")
        if len(t.token) > s.TOKEN_LEN:
            raise InvalidArgumentError(f"join token longer than {s.TOKEN_LEN} characters")
        with self._write() as conn:
            if conn.execute(select(T.c.id).where(T.c.token == t.token)).first() is not None:
                raise AlreadyExistsError("join token already exists")
            conn.execute(insert(T).values(token=t.token, expiry=t.expires_at))

    def fetch_join_token(self, token: str) -> JoinToken | None:
        with self._read() as conn:
            row = conn.execute(select(T.c.token, T.c.expiry).where(T.c.token == token)).first()
        return JoinToken(row.token, int(row.expiry)) if row else None

    def delete_join_token(self, token: str) -> None:
        with self._write() as conn:
            if conn.execute(delete(T).where(T.c.token == token)).rowcount != 1:
                raise NotFoundError("join token not found")

    def take_join_token(self, token: str) -> JoinToken | None:
        """Delete the token and return it; of any number of concurrent callers
        exactly one gets it, the others get None.

        The DELETE's row count decides: a second transaction's DELETE either
        waits for the first to commit and then matches no row (PostgreSQL,
        MySQL) or cannot start before it commits (sqlite's write lock).
        """
        with self._write() as conn:
            row = conn.execute(select(T.c.token, T.c.expiry).where(T.c.token == token)).first()
            if row is None:
                return None
            if conn.execute(delete(T).where(T.c.token == token)).rowcount != 1:
                return None
        return JoinToken(row.token, int(row.expiry))

    def prune_join_tokens(self, expires_before: int) -> int:
        with self._write() as conn:
            return int(conn.execute(delete(T).where(T.c.expiry < expires_before)).rowcount or 0)

    # -- CA journal: opaque blobs the CA manager persists across restarts --

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
