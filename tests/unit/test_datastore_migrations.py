"""DataStore schema migrations (Alembic, run at start-up)."""

from __future__ import annotations

import os
import threading

import pytest
from alembic import command
from alembic.autogenerate import compare_metadata
from alembic.runtime.migration import MigrationContext
from sqlalchemy import create_engine, inspect, text

from spire_py.server.datastore import DataStoreError, Entry, Selector, SQLDataStore
from spire_py.server.datastore.dialects import PoolSettings, create_store_engine
from spire_py.server.datastore.migrate import alembic_config, head_revision
from spire_py.server.datastore.schema import metadata


def db_path(tmp_path: os.PathLike[str]) -> str:
    return os.path.join(tmp_path, "ds.sqlite3")


def revision_of(path: str) -> str | None:
    engine = create_engine(f"sqlite:///{path}")
    with engine.connect() as c:
        rev = MigrationContext.configure(c).get_current_revision()
    engine.dispose()
    return rev


def test_head_is_0001() -> None:
    assert head_revision() == "0001"


def test_migration_creates_version_table_and_is_idempotent(tmp_path: os.PathLike[str]) -> None:
    path = db_path(tmp_path)
    s = SQLDataStore("sqlite3", path)
    e = s.create_entry(Entry(spiffe_id="spiffe://td/w", parent_id="spiffe://td/a", selectors=[Selector("a", "1")]))
    s.close()
    engine = create_engine(f"sqlite:///{path}")
    assert "alembic_version" in inspect(engine).get_table_names()
    engine.dispose()
    assert revision_of(path) == "0001"
    s = SQLDataStore("sqlite3", path)  # second open: nothing to do, data intact
    assert s.fetch_entry(e.id) == e
    s.close()
    assert revision_of(path) == "0001"


def test_database_at_0001_with_data_upgrades_to_head(tmp_path: os.PathLike[str]) -> None:
    path = db_path(tmp_path)
    engine = create_store_engine("sqlite3", path, PoolSettings())
    cfg = alembic_config()
    with engine.begin() as conn:
        cfg.attributes["connection"] = conn
        command.upgrade(cfg, "0001")
        conn.execute(text("INSERT INTO join_tokens (token, expiry) VALUES ('t', 5)"))
    engine.dispose()
    s = SQLDataStore("sqlite3", path)
    assert s.fetch_join_token("t") is not None
    s.close()
    assert revision_of(path) == head_revision()


def test_migrated_schema_matches_table_definitions(tmp_path: os.PathLike[str]) -> None:
    path = db_path(tmp_path)
    SQLDataStore("sqlite3", path).close()
    engine = create_engine(f"sqlite:///{path}")
    with engine.connect() as c:
        diffs = compare_metadata(MigrationContext.configure(c, opts={"compare_type": True}), metadata)
    engine.dispose()
    assert diffs == []


def test_disable_migration_requires_a_current_schema(tmp_path: os.PathLike[str]) -> None:
    path = db_path(tmp_path)
    with pytest.raises(DataStoreError, match="revision none"):
        SQLDataStore("sqlite3", path, disable_migration=True)
    SQLDataStore("sqlite3", path).close()
    SQLDataStore("sqlite3", path, disable_migration=True).close()


def test_schema_from_a_newer_release_is_refused(tmp_path: os.PathLike[str]) -> None:
    path = db_path(tmp_path)
    SQLDataStore("sqlite3", path).close()
    engine = create_engine(f"sqlite:///{path}")
    with engine.begin() as c:
        c.execute(text("UPDATE alembic_version SET version_num = '9999'"))
    engine.dispose()
    with pytest.raises(DataStoreError, match="9999"):
        SQLDataStore("sqlite3", path)


def test_two_servers_migrating_one_fresh_database_at_once(tmp_path: os.PathLike[str]) -> None:
    path = db_path(tmp_path)
    errors: list[BaseException] = []
    barrier = threading.Barrier(4)

    def open_close() -> None:
        try:
            barrier.wait()
            SQLDataStore("sqlite3", path).close()
        except BaseException as exc:  # noqa: BLE001 - reported below
            errors.append(exc)

    threads = [threading.Thread(target=open_close) for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert errors == []
    assert revision_of(path) == "0001"


@pytest.mark.parametrize("url", ["postgresql://", "mysql://"])
def test_migrations_render_for_server_databases(url: str, capsys: pytest.CaptureFixture[str]) -> None:
    cfg = alembic_config()
    cfg.set_main_option("sqlalchemy.url", url)
    command.upgrade(cfg, "head", sql=True)
    ddl = capsys.readouterr().out
    assert "CREATE TABLE registered_entries" in ddl
    assert "CREATE INDEX idx_selectors_type_value ON selectors (type, value)" in ddl
    if url.startswith("mysql"):
        assert "MEDIUMBLOB" in ddl or "BLOB(16777215)" in ddl
        assert "COLLATE utf8mb4_bin" in ddl
    else:
        assert "BYTEA" in ddl and "BIGSERIAL" in ddl
