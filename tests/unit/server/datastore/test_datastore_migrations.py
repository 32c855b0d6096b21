"""DataStore schema migrations (Alembic, run at start-up), on every backend.

``fresh_backend`` (conftest.py beside this file) is an empty sqlite3 file, and
also an empty scratch PostgreSQL / MySQL database when SPIRE_PY_TEST_POSTGRES /
SPIRE_PY_TEST_MYSQL are set.
"""

from __future__ import annotations

import os
import threading

import pytest
from alembic import command
from alembic.autogenerate import compare_metadata
from alembic.runtime.migration import MigrationContext
from sqlalchemy import Engine, create_engine, inspect, text

from spire_py.common.registration import Entry, Selector
from spire_py.server.datastore import AttestedNode, Bundle, DataStoreError, JoinToken, SQLDataStore
from spire_py.server.datastore.dialects import PoolSettings, create_store_engine
from spire_py.server.datastore.migrate import alembic_config, head_revision
from spire_py.server.datastore.schema import metadata

from tests.unit.helpers.datastore import open_store, server_conn

TD = "spiffe://example.org"


def db_path(tmp_path: os.PathLike[str]) -> str:
    return os.path.join(tmp_path, "ds.sqlite3")


def engine_for(kind: str, tmp_path: os.PathLike[str]) -> Engine:
    if kind == "sqlite3":
        return create_store_engine("sqlite3", os.path.join(tmp_path, "data", "datastore.sqlite3"), PoolSettings())
    return create_store_engine(kind, server_conn(kind), PoolSettings())


def revision(kind: str, tmp_path: os.PathLike[str]) -> str | None:
    engine = engine_for(kind, tmp_path)
    with engine.connect() as c:
        rev = MigrationContext.configure(c).get_current_revision()
    engine.dispose()
    return rev


def revision_of(path: str) -> str | None:
    engine = create_engine(f"sqlite:///{path}")
    with engine.connect() as c:
        rev = MigrationContext.configure(c).get_current_revision()
    engine.dispose()
    return rev


def test_head_is_0003() -> None:
    assert head_revision() == "0003"


def test_migration_creates_version_table_and_is_idempotent(fresh_backend: str, tmp_path: os.PathLike[str]) -> None:
    s = open_store(fresh_backend, tmp_path)
    e = s.create_entry(Entry(spiffe_id="spiffe://td/w", parent_id="spiffe://td/a", selectors=[Selector("a", "1")]))
    s.close()
    engine = engine_for(fresh_backend, tmp_path)
    assert "alembic_version" in inspect(engine).get_table_names()
    engine.dispose()
    assert revision(fresh_backend, tmp_path) == head_revision()
    s = open_store(fresh_backend, tmp_path)  # second open: nothing to do, data intact
    assert s.fetch_entry(e.id) == e
    s.close()
    assert revision(fresh_backend, tmp_path) == head_revision()


def test_database_made_by_0001_with_data_is_upgraded_in_place(fresh_backend: str, tmp_path: os.PathLike[str]) -> None:
    """A database written by the previous release (schema 0001, rows in every
    table) is upgraded at start; every row is still there and the new index exists."""
    engine = engine_for(fresh_backend, tmp_path)
    cfg = alembic_config()
    with engine.begin() as conn:
        cfg.attributes["connection"] = conn
        command.upgrade(cfg, "0001")
    engine.dispose()
    assert revision(fresh_backend, tmp_path) == "0001"
    # The previous release's writes go through the same table definitions.
    old = SQLDataStore.__new__(SQLDataStore)
    old._engine, old._ro_engine, old.database_type = engine_for(fresh_backend, tmp_path), None, fresh_backend
    old.create_bundle(Bundle(TD, x509_authorities=[b"der"]))
    old.create_bundle(Bundle("spiffe://fed.example"))
    e = old.create_entry(Entry(spiffe_id=TD + "/w", parent_id=TD + "/agent", selectors=[Selector("unix", "uid:0")],
                               dns_names=["w.example"], federates_with=["spiffe://fed.example"], hint="h"))
    node = AttestedNode(TD + "/agent", "join_token", "1", 2_000_000_000)
    old.create_attested_node(node)
    old.set_node_selectors(node.spiffe_id, [Selector("join_token", "t")])
    old.create_join_token(JoinToken("tok", 2_000_000_000))
    old.set_ca_journal("server-ca", b"journal")
    events = old.list_entry_events()
    old.close()

    s = open_store(fresh_backend, tmp_path)
    assert revision(fresh_backend, tmp_path) == head_revision()
    assert s.fetch_entry(e.id) == e
    assert s.fetch_attested_node(node.spiffe_id, with_selectors=True).selectors == [Selector("join_token", "t")]
    assert s.fetch_join_token("tok") == JoinToken("tok", 2_000_000_000)
    assert s.fetch_bundle(TD).x509_authorities == [b"der"]
    assert s.fetch_ca_journal("server-ca") == b"journal"
    assert s.list_entry_events() == events
    nodes, _ = s.list_attested_nodes(by_attestation_type="join_token")
    assert [n.spiffe_id for n in nodes] == [node.spiffe_id]
    indexes = {i["name"] for i in inspect(s.engine).get_indexes("attested_node_entries")}
    assert "idx_attested_node_entries_data_type" in indexes
    s.close()


def test_migrated_schema_matches_table_definitions(fresh_backend: str, tmp_path: os.PathLike[str]) -> None:
    open_store(fresh_backend, tmp_path).close()
    engine = engine_for(fresh_backend, tmp_path)
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


def test_servers_migrating_one_fresh_database_at_once(fresh_backend: str, tmp_path: os.PathLike[str]) -> None:
    errors: list[BaseException] = []
    barrier = threading.Barrier(4)

    def open_close() -> None:
        try:
            barrier.wait()
            open_store(fresh_backend, tmp_path).close()
        except BaseException as exc:  # noqa: BLE001 - reported below
            errors.append(exc)

    threads = [threading.Thread(target=open_close) for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert errors == []
    assert revision(fresh_backend, tmp_path) == head_revision()


@pytest.mark.parametrize("url", ["postgresql://", "mysql://"])
def test_migrations_render_for_server_databases(url: str, capsys: pytest.CaptureFixture[str]) -> None:
    cfg = alembic_config()
    cfg.set_main_option("sqlalchemy.url", url)
    command.upgrade(cfg, "head", sql=True)
    ddl = capsys.readouterr().out
    assert "CREATE TABLE registered_entries" in ddl
    assert "CREATE INDEX idx_selectors_type_value ON selectors (type, value)" in ddl
    assert "CREATE INDEX idx_attested_node_entries_data_type ON attested_node_entries (data_type)" in ddl
    if url.startswith("mysql"):
        assert "MEDIUMBLOB" in ddl or "BLOB(16777215)" in ddl
        assert "COLLATE utf8mb4_bin" in ddl
    else:
        assert "BYTEA" in ddl and "BIGSERIAL" in ddl
