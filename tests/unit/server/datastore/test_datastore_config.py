"""DataStore "sql" plugin configuration and SPIRE connection strings."""

from __future__ import annotations

import os
import stat
from pathlib import Path

import pytest

from spire_py.common.plugin import PluginConfigError, PluginContext, lookup
from spire_py.server.datastore import InvalidArgumentError, SQLDataStore, SQLDataStorePlugin
from spire_py.server.datastore.dialects import (
    TLSFiles,
    mysql_engine_args,
    parse_sqlite_connection_string,
    postgres_connect_args,
)
from spire_py.server.datastore.plugin import parse_duration

CTX = PluginContext(trust_domain="example.org")


def configure(data: dict[str, object]) -> SQLDataStore:
    return SQLDataStorePlugin.configure(data, CTX)


def test_plugin_is_registered_as_datastore_sql() -> None:
    assert lookup("server", "DataStore", "sql") is SQLDataStorePlugin


def test_configure_opens_sqlite_relative_to_cwd(tmp_path: os.PathLike[str], monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    store = configure({"database_type": "sqlite3", "connection_string": "./.data/datastore.sqlite3",
                       "max_open_conns": 4, "max_idle_conns": 2, "conn_max_lifetime": "1m30s",
                       "log_sql": False, "disable_migration": False})
    assert isinstance(store, SQLDataStore)
    store.close()
    path = os.path.join(tmp_path, ".data", "datastore.sqlite3")
    assert stat.S_IMODE(os.stat(path).st_mode) == 0o600
    assert stat.S_IMODE(os.stat(os.path.dirname(path)).st_mode) == 0o700


@pytest.mark.parametrize(
    "data,key",
    [
        ({"connection_string": "x"}, "database_type"),
        ({"database_type": "oracle", "connection_string": "x"}, "database_type"),
        ({"database_type": "sqlite3"}, "connection_string"),
        ({"database_type": "sqlite3", "connection_string": "x", "pool": 1}, "pool"),
        ({"database_type": "sqlite3", "connection_string": "x", "max_open_conns": "ten"}, "max_open_conns"),
        ({"database_type": "sqlite3", "connection_string": "x", "conn_max_lifetime": "soon"}, "conn_max_lifetime"),
        ({"database_type": "sqlite3", "connection_string": "x", "log_sql": "yes"}, "log_sql"),
        ({"database_type": "sqlite3", "connection_string": "x", "root_ca_path": "/ca.pem"}, "root_ca_path"),
        ({"database_type": "sqlite3", "connection_string": "sqlite:///x.db"}, "connection_string"),
    ],
)
def test_configure_rejects_bad_plugin_data_naming_the_key(data: dict[str, object], key: str) -> None:
    with pytest.raises(PluginConfigError) as info:
        configure(data)
    assert info.value.key == key


def test_duration_parsing() -> None:
    assert parse_duration("1h30m", "k") == 5400
    assert parse_duration("250ms", "k") == 0.25
    assert parse_duration(10, "k") == 10
    with pytest.raises(PluginConfigError):
        parse_duration("10", "k")


def test_sqlite_plain_path_is_never_a_url(tmp_path: os.PathLike[str]) -> None:
    target = parse_sqlite_connection_string(os.path.join(tmp_path, "odd?name#1.db"))
    assert target.path.endswith("odd?name#1.db")
    assert target.uri.endswith("odd%3Fname%231.db")
    store = SQLDataStore("sqlite3", os.path.join(tmp_path, "odd?name#1.db"))
    store.close()
    assert os.path.exists(os.path.join(tmp_path, "odd?name#1.db"))


def test_sqlite_file_uri_forms(tmp_path: os.PathLike[str], monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    t = parse_sqlite_connection_string("file:data.db?_busy_timeout=1500&cache=private&_journal_mode=WAL")
    assert t.path == os.path.join(os.getcwd(), "data.db")
    assert t.busy_timeout_ms == 1500
    assert t.uri == "file:" + t.path + "?cache=private"
    assert parse_sqlite_connection_string("file:///var/lib/spire/a%20b.db").path == "/var/lib/spire/a b.db"
    assert parse_sqlite_connection_string("file://localhost/x.db").path == "/x.db"
    for bad in (":memory:", "file::memory:", "file:x.db?mode=memory", "postgres://h/db", ""):
        with pytest.raises(InvalidArgumentError):
            parse_sqlite_connection_string(bad)


def test_mysql_go_dsn_translation() -> None:
    url, args = mysql_engine_args("spire:p@ss:w@tcp(db.example:3307)/spire?parseTime=true&charset=utf8")
    assert (url.drivername, url.username, url.password, url.host, url.port, url.database) == (
        "mysql+pymysql", "spire", "p@ss:w", "db.example", 3307, "spire")
    assert url.query["charset"] == "utf8" and args == {}
    url, _ = mysql_engine_args("root@unix(/run/mysqld.sock)/spire")
    assert url.query["unix_socket"] == "/run/mysqld.sock" and url.host is None
    url, _ = mysql_engine_args("u:p@tcp([::1]:3306)/d")
    assert url.host == "::1"
    _, args = mysql_engine_args("u:p@/d", TLSFiles("/c.pem", "/k.pem", "/ca.pem"))
    assert args == {"ssl": {"ca": "/ca.pem", "cert": "/c.pem", "key": "/k.pem"}}
    with pytest.raises(InvalidArgumentError) as info:
        mysql_engine_args("user:secret@db.example:3306")
    assert "secret" not in str(info.value)


def test_postgres_connection_strings_as_spire_docs_write_them() -> None:
    # SPIRE's doc example, libpq key=value.
    assert postgres_connect_args("dbname=postgres user=postgres password=password host=localhost sslmode=disable") == {
        "dbname": "postgres", "user": "postgres", "password": "password", "host": "localhost", "sslmode": "disable"}
    # URL form; percent-escapes decoded.
    assert postgres_connect_args("postgres://u:p%40x@h:5432/db?sslmode=verify-full") == {
        "user": "u", "password": "p@x", "host": "h", "port": "5432", "dbname": "db", "sslmode": "verify-full"}


def test_postgres_defaults_follow_lib_pq(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("PGHOST", raising=False)
    monkeypatch.delenv("PGSSLMODE", raising=False)
    # lib/pq: host defaults to localhost (libpq: a Unix socket), sslmode to require (libpq: prefer).
    args = postgres_connect_args("dbname=spire_development user=spire")
    assert args["host"] == "localhost" and args["sslmode"] == "require"
    # lib/pq-only options would make libpq refuse the whole string; they are dropped.
    assert "binary_parameters" not in postgres_connect_args("dbname=d binary_parameters=yes")


@pytest.mark.parametrize("bad", ["dbname=spire password=hunter2 bogus", "dbname=d nope=1", "mysql://u:hunter2@h/d"])
def test_bad_postgres_connection_string_is_invalid_and_redacted(bad: str) -> None:
    with pytest.raises(InvalidArgumentError) as info:
        postgres_connect_args(bad)
    assert "hunter2" not in str(info.value)


def test_mysql_go_dsn_options_are_mapped() -> None:
    _, args = mysql_engine_args("spire:@tcp(127.0.0.1)/spire_development?parseTime=true&timeout=5s&readTimeout=1m")
    assert args == {"connect_timeout": 5, "read_timeout": 60}
    _, args = mysql_engine_args("u:p@tcp(h)/d?tls=skip-verify")
    assert args == {"ssl": {"verify_mode": False}}
    with pytest.raises(InvalidArgumentError, match="tls"):
        mysql_engine_args("u:p@tcp(h)/d?tls=custom")


def test_unwritable_location_is_a_datastore_error(tmp_path: os.PathLike[str]) -> None:
    from spire_py.server.datastore import DataStoreError

    blocker = os.path.join(tmp_path, "file")
    open(blocker, "w").close()
    with pytest.raises(DataStoreError):
        SQLDataStore("sqlite3", os.path.join(blocker, "sub", "ds.sqlite3"))
    with pytest.raises(PluginConfigError):
        configure({"database_type": "sqlite3", "connection_string": os.path.join(blocker, "ds.sqlite3")})


def test_pool_settings_follow_go_database_sql() -> None:
    from spire_py.server.datastore.dialects import PoolSettings, _pool_kwargs

    assert _pool_kwargs(PoolSettings()) == {"pool_size": 5}
    assert _pool_kwargs(PoolSettings(max_open_conns=20, max_idle_conns=2, conn_max_lifetime=30)) == {
        "pool_size": 2, "max_overflow": 18, "pool_recycle": 30}
    assert _pool_kwargs(PoolSettings(max_open_conns=0, max_idle_conns=0)) == {"pool_size": 1, "max_overflow": -1}
    assert _pool_kwargs(PoolSettings(max_open_conns=3)) == {"pool_size": 3, "max_overflow": 0}


def test_a_sqlite3_store_keeps_enough_connections_for_the_servers_threads(tmp_path: Path) -> None:
    """Not SQLAlchemy's 5: the server's 8 datastore threads would open and close the rest on every burst."""
    from spire_py.server.datastore.dialects import SQLITE_POOL_SIZE

    store = SQLDataStore("sqlite3", str(tmp_path / "ds.sqlite3"))
    try:
        assert store.engine.pool.size() == SQLITE_POOL_SIZE >= 8  # type: ignore[attr-defined]
    finally:
        store.close()
    tuned = SQLDataStore("sqlite3", str(tmp_path / "ds2.sqlite3"), max_idle_conns=2)
    try:
        assert tuned.engine.pool.size() == 2  # type: ignore[attr-defined]
    finally:
        tuned.close()
