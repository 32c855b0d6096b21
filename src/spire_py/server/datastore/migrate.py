"""Alembic migrations, configured in code (no alembic.ini needed).

Servers sharing one database may start together: the upgrade runs under a
database-wide lock (PostgreSQL advisory lock, MySQL GET_LOCK, sqlite's write
lock), so one migrates and the others find the schema at head. MySQL commits
DDL implicitly, so there a failed migration is not rolled back as a whole.
"""

from __future__ import annotations

import os

from alembic import command
from alembic.config import Config
from alembic.runtime.migration import MigrationContext
from alembic.script import ScriptDirectory
from alembic.util.exc import CommandError
from sqlalchemy import Connection, Engine, text
from sqlalchemy.exc import SQLAlchemyError

from .dialects import WRITE_OPTION
from .errors import DataStoreError

# Any fixed number: the PostgreSQL advisory lock key / the MySQL lock name.
_PG_LOCK_KEY = 0x5350495245  # "SPIRE"
_MYSQL_LOCK_NAME = "spire_py_migration."
# MySQL's named locks are server-wide: qualify by database, within the 64-character limit.
_MYSQL_LOCK_SQL = "LEFT(CONCAT(:name, DATABASE()), 64)"
LOCK_TIMEOUT_S = 300

MIGRATIONS_DIR = os.path.join(os.path.dirname(os.path.abspath(__file__)), "migrations")


def alembic_config() -> Config:
    cfg = Config()
    cfg.set_main_option("script_location", MIGRATIONS_DIR)
    return cfg


def head_revision() -> str:
    head = ScriptDirectory.from_config(alembic_config()).get_current_head()
    if head is None:  # pragma: no cover - the package always ships 0001
        raise DataStoreError(f"no migrations found in {MIGRATIONS_DIR}")
    return head


def current_revision(conn: Connection) -> str | None:
    return MigrationContext.configure(conn).get_current_revision()


def upgrade(engine: Engine) -> None:
    """Bring the schema to head in one write transaction, under the migration lock."""
    cfg = alembic_config()
    with engine.connect() as conn:
        conn.execution_options(**{WRITE_OPTION: True})
        mysql = conn.dialect.name == "mysql"
        if mysql:
            got = conn.execute(
                text(f"SELECT GET_LOCK({_MYSQL_LOCK_SQL}, :timeout)"), {"name": _MYSQL_LOCK_NAME, "timeout": LOCK_TIMEOUT_S}
            ).scalar()
            conn.commit()
            if got != 1:
                raise DataStoreError(f"datastore migration: another server held the migration lock for {LOCK_TIMEOUT_S}s")
        try:
            with conn.begin():
                if conn.dialect.name == "postgresql":
                    conn.execute(text("SELECT pg_advisory_xact_lock(:key)"), {"key": _PG_LOCK_KEY})
                _check_known(conn)
                cfg.attributes["connection"] = conn
                try:
                    command.upgrade(cfg, "head")
                except CommandError as exc:
                    raise DataStoreError(f"datastore migration failed: {exc}") from exc
        finally:
            if mysql:
                try:
                    conn.execute(text(f"SELECT RELEASE_LOCK({_MYSQL_LOCK_SQL})"), {"name": _MYSQL_LOCK_NAME})
                    conn.commit()
                except SQLAlchemyError:
                    pass  # the session (and its lock) is gone anyway


def check_current(engine: Engine) -> None:
    """With migrations disabled the database must already be at head."""
    with engine.connect() as conn:
        with conn.begin():
            current = current_revision(conn)
    head = head_revision()
    if current != head:
        raise DataStoreError(
            f"datastore schema is at revision {current or 'none'} but this server needs {head}; "
            "enable migrations (disable_migration = false) or migrate the database"
        )


def _check_known(conn: Connection) -> None:
    current = current_revision(conn)
    if current is None:
        return
    script = ScriptDirectory.from_config(alembic_config())
    try:
        script.get_revision(current)
    except CommandError:
        raise DataStoreError(
            f"datastore schema revision {current} is unknown to this server "
            f"(newest known: {head_revision()}); was the database written by a newer release?"
        ) from None
