"""SQLDataStore: the server's DataStore over SQLAlchemy Core.

All methods are synchronous and thread-safe; the asyncio server calls them from
a thread pool. Every method runs in one transaction, so a failure leaves
nothing half-written.
"""

from __future__ import annotations

import functools
import logging
import random
import time
from collections.abc import Callable
from typing import Any, TypeVar

from sqlalchemy import Engine
from sqlalchemy.exc import SQLAlchemyError

from .ca_journals import CAJournalStore
from .dialects import DATABASE_TYPES, PoolSettings, TLSFiles, create_store_engine
from .entries import EntryStore
from .entries_batch import EntryBatchStore
from .errors import DataStoreError, InvalidArgumentError, RetryableError
from .federation import FederationStore
from .join_tokens import JoinTokenStore
from .migrate import check_current, upgrade
from .nodes import NodeStore
from .transactions import TransactionalStore

log = logging.getLogger(__name__)

# A transaction the database aborted (deadlock, serialization failure) is run
# again a few times, after a short random pause, before the error is reported.
RETRY_ATTEMPTS = 4
RETRY_PAUSE_S = 0.02

F = TypeVar("F", bound=Callable[..., Any])


def retry_aborted(fn: F) -> F:
    @functools.wraps(fn)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        for attempt in range(1, RETRY_ATTEMPTS + 1):
            try:
                return fn(*args, **kwargs)
            except RetryableError as exc:
                if attempt == RETRY_ATTEMPTS:
                    raise
                log.debug("datastore transaction aborted; retrying", extra={"error": str(exc), "attempt": attempt})
                time.sleep(RETRY_PAUSE_S * attempt * (1 + random.random()))
        raise AssertionError("unreachable")  # pragma: no cover

    return wrapper  # type: ignore[return-value]


class SQLDataStore(FederationStore, EntryStore, EntryBatchStore, NodeStore, JoinTokenStore, CAJournalStore):
    """The "sql" DataStore.

    ``database_type`` is sqlite3, postgres or mysql; ``connection_string`` is
    written as SPIRE takes it (see ``dialects``). ``ro_connection_string``
    serves reads made with ``tolerate_stale=True``. Migrations run to head at
    construction unless ``disable_migration``, in which case the database must
    already be at head.
    """

    def __init__(
        self,
        database_type: str,
        connection_string: str,
        *,
        max_open_conns: int | None = None,
        max_idle_conns: int | None = None,
        conn_max_lifetime: float | None = None,
        ro_connection_string: str | None = None,
        disable_migration: bool = False,
        log_sql: bool = False,
        tls: TLSFiles | None = None,
    ) -> None:
        if database_type not in DATABASE_TYPES:
            raise InvalidArgumentError(
                f'unsupported database_type "{database_type}"; use one of {", ".join(DATABASE_TYPES)}'
            )
        if not connection_string:
            raise InvalidArgumentError("connection_string must be set")
        self.database_type = database_type
        pool = PoolSettings(max_open_conns, max_idle_conns, conn_max_lifetime)
        self._ro_engine: Engine | None = None
        try:
            self._engine: Engine = create_store_engine(
                database_type, connection_string, pool, echo=log_sql, tls=tls
            )
        except OSError as exc:
            raise DataStoreError(f"datastore-sql: cannot create database file: {exc}") from exc
        try:
            if disable_migration:
                check_current(self._engine)
            else:
                upgrade(self._engine)
            if ro_connection_string:
                self._ro_engine = create_store_engine(
                    database_type, ro_connection_string, pool, echo=log_sql, tls=tls
                )
        except BaseException as exc:
            self._engine.dispose()
            if isinstance(exc, SQLAlchemyError):
                raise DataStoreError(f"datastore-sql: cannot open database: {exc}") from exc
            raise
        log.debug("datastore opened", extra={"database_type": database_type})

    @property
    def engine(self) -> Engine:
        return self._engine

    def close(self) -> None:
        """Close every pooled connection; the store must not be used afterwards."""
        self._engine.dispose()
        if self._ro_engine is not None:
            self._ro_engine.dispose()

    def __enter__(self) -> "SQLDataStore":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


# Every public operation is one or more whole transactions, so running it again is safe.
for _base in SQLDataStore.__mro__[1:]:
    if issubclass(_base, TransactionalStore) and _base is not TransactionalStore:
        for _name, _fn in vars(_base).items():
            if not _name.startswith("_") and callable(_fn) and not isinstance(_fn, staticmethod) \
                    and _name not in vars(SQLDataStore):
                setattr(SQLDataStore, _name, retry_aborted(_fn))
