"""Databases for the integration tests: sqlite3 always, PostgreSQL and MySQL when
scripts/databases.sh started them (or SPIRE_PY_TEST_POSTGRES / SPIRE_PY_TEST_MYSQL
name a server where the user may create databases called spire_*).

Each test gets a database of its own, created here and dropped at teardown, and a
DataStore block written the way SPIRE's docs write it.
"""

from __future__ import annotations

import os
import re
import subprocess
import uuid
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Iterator, Optional

import pytest

ROOT = Path(__file__).resolve().parents[3]  # the repository: tests/integration/helpers/databases.py
DB_SCRIPT = ROOT / "scripts" / "databases.sh"
ENV = {"postgres": "SPIRE_PY_TEST_POSTGRES", "mysql": "SPIRE_PY_TEST_MYSQL"}
ENGINES = ["sqlite3", "postgres", "mysql"]
SERVER_ENGINES = ["postgres", "mysql"]


def engine_params(engines: list[str]) -> list[object]:
    """pytest params: a server database without its env var is skipped, saying why."""
    out: list[object] = []
    for kind in engines:
        marks = []
        if kind in ENV and not os.environ.get(ENV[kind]):
            marks.append(pytest.mark.skip(reason=f"{ENV[kind]} is not set (scripts/databases.sh start sets it)"))
        out.append(pytest.param(kind, marks=marks, id=kind))
    return out


@dataclass
class Database:
    kind: str
    connection_string: str  # SPIRE syntax
    name: str = ""

    def datastore(self, extra: str = "") -> str:
        """The server's DataStore block."""
        return f"""DataStore "sql" {{
        plugin_data {{
            database_type = "{self.kind}"
            connection_string = "{self.connection_string}"
            {extra}
        }}
    }}"""

    def store(self):  # type: ignore[no-untyped-def]
        """A DataStore on this database, to look at what the servers wrote."""
        from spire_py.server.datastore import SQLDataStore

        return SQLDataStore(self.kind, self.connection_string)


def _with_database(kind: str, conn: str, name: str) -> str:
    if kind == "postgres":
        return re.sub(r"dbname=\S+", f"dbname={name}", conn)
    return re.sub(r"\)/[^?]*", f")/{name}", conn)


def _admin(kind: str, sql: str) -> None:
    conn = os.environ[ENV[kind]]
    if kind == "postgres":
        import psycopg

        from spire_py.server.datastore.connection_strings import postgres_connect_args

        with psycopg.connect(**postgres_connect_args(conn), autocommit=True) as c:
            c.execute(sql)  # type: ignore[arg-type]
    else:
        import pymysql

        from spire_py.server.datastore.connection_strings import mysql_engine_args

        url, args = mysql_engine_args(conn)
        with pymysql.connect(host=url.host, port=url.port, user=url.username, password=url.password or "",
                             **args) as c:
            with c.cursor() as cur:
                cur.execute(sql)


def create_database(kind: str, tmp_path: Path) -> Database:
    if kind == "sqlite3":
        return Database(kind, str(tmp_path / f"ds-{uuid.uuid4().hex[:8]}.sqlite3"))
    name = f"spire_e2e_{uuid.uuid4().hex[:10]}"
    _admin(kind, f"CREATE DATABASE {name}")
    return Database(kind, _with_database(kind, os.environ[ENV[kind]], name), name)


def drop_database(db: Database) -> None:
    if db.kind == "sqlite3" or not db.name:
        return
    try:
        _admin(db.kind, f"DROP DATABASE {db.name}" + (" WITH (FORCE)" if db.kind == "postgres" else ""))
    except Exception:  # noqa: BLE001 - a left-over scratch database is harmless
        pass


@contextmanager
def database_factory(tmp_path: Path) -> Iterator[Callable[[str], Database]]:
    """``make_database``: each call creates one more scratch database; all are dropped at exit."""
    made: list[Database] = []

    def factory(kind: str) -> Database:
        db = create_database(kind, tmp_path)
        made.append(db)
        return db

    try:
        yield factory
    finally:
        for db in made:
            drop_database(db)


def can_restart(kind: str) -> Optional[str]:
    """Why this database cannot be restarted by the tests, or None when it can."""
    if not os.environ.get("SPIRE_PY_TEST_DB_DIR"):
        return "the database was not started by scripts/databases.sh (SPIRE_PY_TEST_DB_DIR unset)"
    return None


def database_ctl(action: str, kind: str) -> None:
    """Stop or start one of the scratch servers of scripts/databases.sh."""
    proc = subprocess.run(["bash", str(DB_SCRIPT), action, kind], capture_output=True, text=True, timeout=120,
                          stdin=subprocess.DEVNULL)
    if proc.returncode != 0:
        raise AssertionError(f"databases.sh {action} {kind} failed: {proc.stderr}")
