"""Join tokens: single-use secrets an agent attests with (the join_token node attestor)."""

from __future__ import annotations

from sqlalchemy import delete, insert, select

from . import schema as s
from .errors import AlreadyExistsError, InvalidArgumentError, NotFoundError
from .models import JoinToken
from .transactions import TransactionalStore

T = s.join_tokens


class JoinTokenStore(TransactionalStore):
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
