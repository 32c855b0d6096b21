"""Alembic migrations, configured in code (no alembic.ini needed)."""

from __future__ import annotations

import os

from alembic import command
from alembic.config import Config
from alembic.runtime.migration import MigrationContext
from alembic.script import ScriptDirectory
from alembic.util.exc import CommandError
from sqlalchemy import Connection, Engine

from .dialects import WRITE_OPTION
from .errors import DataStoreError

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
    """Bring the schema to head in one write transaction."""
    cfg = alembic_config()
    with engine.connect() as conn:
        conn.execution_options(**{WRITE_OPTION: True})
        with conn.begin():
            _check_known(conn)
            cfg.attributes["connection"] = conn
            try:
                command.upgrade(cfg, "head")
            except CommandError as exc:
                raise DataStoreError(f"datastore migration failed: {exc}") from exc


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
