"""Engine ownership and the two kinds of transaction every store method uses."""

from __future__ import annotations

import time
from collections.abc import Iterator
from contextlib import contextmanager

from sqlalchemy import Connection, Engine
from sqlalchemy.exc import IntegrityError, OperationalError, SQLAlchemyError

from .dialects import WRITE_OPTION
from .errors import AlreadyExistsError, DataStoreError, RetryableError

# PostgreSQL SQLSTATEs and MySQL error numbers of transactions worth running again.
_PG_RETRYABLE = {"40001", "40P01"}  # serialization_failure, deadlock_detected
_MYSQL_RETRYABLE = {1213, 1205}  # ER_LOCK_DEADLOCK, ER_LOCK_WAIT_TIMEOUT


def is_retryable(orig: BaseException | None) -> bool:
    """Whether a driver error means "run the whole transaction again"."""
    if orig is None:
        return False
    sqlstate = getattr(orig, "sqlstate", None)
    if sqlstate is not None:
        return sqlstate in _PG_RETRYABLE
    args: tuple[object, ...] = tuple(getattr(orig, "args", ()))
    return bool(args) and args[0] in _MYSQL_RETRYABLE


def now() -> int:
    return int(time.time())


class TransactionalStore:
    """Holds the engines; ``_write()`` / ``_read()`` yield a connection inside one
    transaction that commits on success and rolls back on any exception."""

    _engine: Engine
    _ro_engine: Engine | None

    @contextmanager
    def _write(self) -> Iterator[Connection]:
        with self._translate_errors():
            with self._engine.connect() as conn:
                conn.execution_options(**{WRITE_OPTION: True})
                with conn.begin():
                    yield conn

    @contextmanager
    def _read(self, tolerate_stale: bool = False) -> Iterator[Connection]:
        engine = self._ro_engine if (tolerate_stale and self._ro_engine) else self._engine
        with self._translate_errors():
            with engine.connect() as conn:
                with conn.begin():
                    yield conn

    @staticmethod
    @contextmanager
    def _translate_errors() -> Iterator[None]:
        try:
            yield
        except DataStoreError:
            raise
        except IntegrityError as exc:
            raise AlreadyExistsError(f"datastore-sql: {exc.orig}") from exc
        except OperationalError as exc:
            if is_retryable(exc.orig):
                raise RetryableError(f"datastore-sql: {exc.orig}") from exc
            raise DataStoreError(f"datastore-sql: {exc.orig}") from exc
        except SQLAlchemyError as exc:
            raise DataStoreError(f"datastore-sql: {exc}") from exc
