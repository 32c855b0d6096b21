"""SQLDataStore: the server's DataStore over SQLAlchemy Core.

All methods are synchronous and thread-safe; the asyncio server calls them from
a thread pool. Every method runs in one transaction, so a failure leaves
nothing half-written.
"""

from __future__ import annotations

import logging

from sqlalchemy import Engine
from sqlalchemy.exc import SQLAlchemyError

from .bundles import BundleStore
from .dialects import DATABASE_TYPES, PoolSettings, TLSFiles, create_store_engine
from .entries import EntryStore
from .entries_batch import EntryBatchStore
from .errors import DataStoreError, InvalidArgumentError
from .migrate import check_current, upgrade
from .nodes import NodeStore
from .tokens import TokenStore

log = logging.getLogger(__name__)


class SQLDataStore(BundleStore, EntryStore, EntryBatchStore, NodeStore, TokenStore):
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
