"""Everything that differs between sqlite3, PostgreSQL and MySQL lives here:
turning SPIRE's connection strings into engines, and how transactions begin.

SPIRE's connection strings are accepted as written:
- sqlite3: a file path (``./.data/datastore.sqlite3``) or a ``file:`` URI; a
  plain path is never parsed as a URL, so ``?`` and ``#`` are file-name characters.
- postgres and mysql: see ``connection_strings`` (psycopg 3, PyMySQL).
"""

from __future__ import annotations

import os
import re
import sqlite3
import time
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import parse_qsl, quote, unquote, urlencode

from sqlalchemy import Engine, create_engine, event
from sqlalchemy.engine import URL, Connection
from sqlalchemy.pool import QueuePool

from .connection_strings import (
    DriverMissingError,
    TLSFiles,
    mysql_engine_args,
    postgres_connect_args,
)
from .errors import InvalidArgumentError

__all__ = [
    "DATABASE_TYPES",
    "DriverMissingError",
    "MYSQL",
    "POSTGRES",
    "PoolSettings",
    "SQLITE",
    "TLSFiles",
    "create_store_engine",
    "mysql_engine_args",
    "parse_sqlite_connection_string",
    "postgres_connect_args",
]

SQLITE = "sqlite3"
POSTGRES = "postgres"
MYSQL = "mysql"
DATABASE_TYPES = (SQLITE, POSTGRES, MYSQL)

# Connection execution option that marks a transaction as one that will write.
WRITE_OPTION = "spire_py_write"

DEFAULT_SQLITE_BUSY_TIMEOUT_MS = 5000  # go-sqlite3's default, as SPIRE uses


@dataclass
class PoolSettings:
    max_open_conns: int | None = None
    max_idle_conns: int | None = None
    conn_max_lifetime: float | None = None  # seconds


@dataclass
class SQLiteTarget:
    path: str  # absolute file system path
    uri: str  # what sqlite3.connect(uri=True) receives
    busy_timeout_ms: int = DEFAULT_SQLITE_BUSY_TIMEOUT_MS
    params: dict[str, str] = field(default_factory=dict)


_URL_SCHEME_RE = re.compile(r"^[A-Za-z][A-Za-z0-9+.-]*://")


def parse_sqlite_connection_string(conn: str) -> SQLiteTarget:
    """Resolve a SPIRE sqlite3 connection string to an absolute file and a URI.

    Relative paths resolve against the current directory at open time.
    go-sqlite3 options (``_busy_timeout``, ``_journal_mode``, ...) are consumed
    here; journal mode and foreign keys are always WAL and ON.
    """
    if not conn:
        raise InvalidArgumentError("connection_string must be set")
    params: dict[str, str] = {}
    if conn.startswith("file:"):
        rest = conn[len("file:") :]
        rest, _, query = rest.partition("?")
        rest = rest.partition("#")[0]
        if rest.startswith("//"):
            authority, slash, path_part = rest[2:].partition("/")
            if authority not in ("", "localhost"):
                raise InvalidArgumentError(
                    f'sqlite3 connection string "{conn}": unsupported URI authority "{authority}"'
                )
            rest = slash + path_part
        path = unquote(rest)
        params = dict(parse_qsl(query, keep_blank_values=True))
    elif _URL_SCHEME_RE.match(conn):
        scheme = conn.split(":", 1)[0]
        raise InvalidArgumentError(
            f'sqlite3 connection string "{conn}": unsupported scheme "{scheme}"; '
            "use a file path or a file: URI"
        )
    else:
        path = conn
    if not path or path == ":memory:" or params.get("mode") == "memory":
        raise InvalidArgumentError(
            f'sqlite3 connection string "{conn}": a database file path is required'
        )
    path = os.path.abspath(os.path.expanduser(path))

    busy = DEFAULT_SQLITE_BUSY_TIMEOUT_MS
    for key in ("_busy_timeout", "_timeout"):
        if key in params:
            try:
                busy = int(params[key])
            except ValueError:
                raise InvalidArgumentError(
                    f'sqlite3 connection string: {key} must be milliseconds, got "{params[key]}"'
                ) from None
    # Options prefixed with "_" belong to go-sqlite3; the rest go to sqlite itself.
    sqlite_params = {k: v for k, v in params.items() if not k.startswith("_")}
    uri = "file:" + quote(path, safe="/")
    if sqlite_params:
        uri += "?" + urlencode(sqlite_params)
    return SQLiteTarget(path=path, uri=uri, busy_timeout_ms=busy, params=params)


def prepare_sqlite_file(path: str) -> None:
    """Create missing parent directories 0700 and the database file 0600."""
    parent = os.path.dirname(path)
    missing: list[str] = []
    d = parent
    while d and not os.path.isdir(d):
        missing.append(d)
        d = os.path.dirname(d)
    for d in reversed(missing):
        try:
            os.mkdir(d, 0o700)
        except FileExistsError:
            continue
        os.chmod(d, 0o700)  # mkdir honours the umask
    try:
        fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_EXCL, 0o600)
    except FileExistsError:
        return
    try:
        os.fchmod(fd, 0o600)
    finally:
        os.close(fd)


def _enable_wal(dbapi: sqlite3.Connection, target: SQLiteTarget) -> None:
    """WAL is a property of the file, set once. Switching a fresh file to WAL
    needs an exclusive lock and sqlite reports "locked" at once, without its
    busy handler, while another connection holds any lock - so retry for as
    long as the busy timeout allows."""
    deadline = time.monotonic() + target.busy_timeout_ms / 1000.0
    delay = 0.005
    while True:
        try:
            row = dbapi.execute("PRAGMA journal_mode").fetchone()
            if row is not None and str(row[0]).lower() == "wal":
                return
            row = dbapi.execute("PRAGMA journal_mode = WAL").fetchone()
            if row is not None and str(row[0]).lower() == "wal":
                return
            raise InvalidArgumentError(f'sqlite3 "{target.path}": cannot enable WAL journal mode')
        except sqlite3.OperationalError as exc:
            if "locked" not in str(exc) and "busy" not in str(exc):
                raise
            if time.monotonic() >= deadline:
                raise
            time.sleep(delay)
            delay = min(delay * 2, 0.1)


def _sqlite_engine(target: SQLiteTarget, pool: PoolSettings, echo: bool) -> Engine:
    prepare_sqlite_file(target.path)

    def connect() -> sqlite3.Connection:
        dbapi = sqlite3.connect(
            target.uri,
            uri=True,
            timeout=target.busy_timeout_ms / 1000.0,
            check_same_thread=False,  # pooled connections move between threads
            isolation_level=None,  # we issue BEGIN ourselves (see _on_begin)
        )
        dbapi.execute(f"PRAGMA busy_timeout = {int(target.busy_timeout_ms)}")
        dbapi.execute("PRAGMA foreign_keys = ON")
        try:
            _enable_wal(dbapi, target)
        except BaseException:
            dbapi.close()
            raise
        return dbapi

    # The URL names no file (the creator opens it), which would make SQLAlchemy
    # pick its one-connection-per-thread pool meant for :memory:; a file
    # database wants an ordinary pool.
    kwargs: dict[str, Any] = {"creator": connect, "echo": echo, "poolclass": QueuePool}
    kwargs.update(_pool_kwargs(pool, SQLITE_POOL_SIZE))
    engine = create_engine("sqlite+pysqlite://", **kwargs)

    @event.listens_for(engine, "begin")
    def _on_begin(conn: Connection) -> None:
        # A writer takes the write lock up front (BEGIN IMMEDIATE) so it waits on
        # the busy timeout instead of failing when upgrading a read lock; readers
        # get a consistent WAL snapshot with a deferred BEGIN.
        if conn.get_execution_options().get(WRITE_OPTION):
            conn.exec_driver_sql("BEGIN IMMEDIATE")
        else:
            conn.exec_driver_sql("BEGIN")

    return engine


# sqlite3 connections kept open when max_idle_conns is not set: as many as the server's
# datastore threads (8) and a few more, so a busy server does not open and close the
# connections above SQLAlchemy's default of 5 on every burst (each open runs its PRAGMAs).
SQLITE_POOL_SIZE = 12


def _pool_kwargs(pool: PoolSettings, default_size: int = 5) -> dict[str, Any]:
    """Go's database/sql knobs mapped onto SQLAlchemy's QueuePool.

    max_idle_conns -> connections kept (at least 1: QueuePool reads 0 as "no
    limit"); max_open_conns -> kept + overflow (0 means unlimited, as in Go);
    conn_max_lifetime -> pool_recycle.
    """
    kwargs: dict[str, Any] = {}
    size = default_size  # SQLAlchemy's default unless the dialect wants more
    if pool.max_idle_conns is not None:
        size = max(pool.max_idle_conns, 1)
    if pool.max_open_conns:
        size = min(size, pool.max_open_conns)
        kwargs["max_overflow"] = pool.max_open_conns - size
    elif pool.max_open_conns == 0:
        kwargs["max_overflow"] = -1
    kwargs["pool_size"] = size
    if pool.conn_max_lifetime:
        kwargs["pool_recycle"] = pool.conn_max_lifetime
    return kwargs


def create_store_engine(
    database_type: str,
    connection_string: str,
    pool: PoolSettings,
    *,
    echo: bool = False,
    tls: TLSFiles | None = None,
) -> Engine:
    if database_type == SQLITE:
        return _sqlite_engine(parse_sqlite_connection_string(connection_string), pool, echo)
    url: URL | str
    if database_type == POSTGRES:
        url, connect_args = "postgresql+psycopg://", postgres_connect_args(connection_string)
    elif database_type == MYSQL:
        url, connect_args = mysql_engine_args(connection_string, tls)
    else:
        raise InvalidArgumentError(
            f'unsupported database_type "{database_type}"; use one of {", ".join(DATABASE_TYPES)}'
        )
    kwargs: dict[str, Any] = {"echo": echo, "connect_args": connect_args}
    kwargs.update(_pool_kwargs(pool))
    kwargs["pool_pre_ping"] = True
    try:
        return create_engine(url, **kwargs)
    except ModuleNotFoundError as exc:
        driver = "psycopg" if database_type == POSTGRES else "PyMySQL"
        raise DriverMissingError(
            f'database_type "{database_type}" needs the {driver} package: {exc}'
        ) from exc
