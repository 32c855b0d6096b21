"""Server and agent end to end on each DataStore engine: sqlite3, PostgreSQL, MySQL.

The PostgreSQL and MySQL runs need the scratch servers of scripts/databases.sh
(`make test` starts them); without them those runs are skipped, saying why.
Every test gets a database of its own (helpers/databases.py).
"""

from __future__ import annotations

import json
import time
from typing import Any

import pytest
from alembic import command
from cryptography import x509

from spire_py.common.x509util import verify_chain
from spire_py.server.datastore.dialects import PoolSettings, create_store_engine
from spire_py.server.datastore.migrate import alembic_config, head_revision

from tests.integration.helpers.harness import ME, TD, entry_create, fetch, serial, svid_for, wait_for
from tests.integration.helpers.databases import ENGINES, SERVER_ENGINES, Database, can_restart, database_ctl, engine_params

@pytest.fixture(params=engine_params(ENGINES))
def engine(request: pytest.FixtureRequest) -> str:
    return str(request.param)


@pytest.fixture(params=engine_params(SERVER_ENGINES))
def server_engine(request: pytest.FixtureRequest) -> str:
    return str(request.param)


def pool_options(db: Database) -> str:
    """SPIRE's pool and read-replica keys (the replica is the same database here)."""
    if db.kind == "sqlite3":
        return ""
    return (f'max_open_conns = 20\n            max_idle_conns = 4\n            conn_max_lifetime = "1h"\n'
            f'            ro_connection_string = "{db.connection_string}"')


def test_token_attest_entries_svid(engine: str, make_database: Any, make_server: Any, start_agent: Any) -> None:
    db = make_database(engine)
    server = make_server(datastore=db.datastore(pool_options(db)))
    token = server.token()
    agent_id = f"spiffe://{TD}/spire/agent/join_token/{token}"
    first = entry_create(server, agent_id, f"spiffe://{TD}/me", "-selector", f"unix:uid:{ME}", "-x509SVIDTTL", "120")
    agent = start_agent(server, token)

    got = svid_for(agent.socket, f"spiffe://{TD}/me", 60)
    chain = x509.load_pem_x509_certificates(got["chain"].encode())
    verify_chain(chain[0], chain[1:], x509.load_pem_x509_certificates(got["bundle"].encode()))

    # An update reaches the workload within a sync (the entry cache follows the events table).
    server.cli("entry", "update", "-entryID", first, "-parentID", agent_id, "-spiffeID", f"spiffe://{TD}/me2",
               "-selector", f"unix:uid:{ME}", "-x509SVIDTTL", "120")
    svid_for(agent.socket, f"spiffe://{TD}/me2")

    # A batch: each item in its own transaction, a bad one reported alone.
    batch = {"entries": [
        {"spiffe_id": f"spiffe://{TD}/b1", "parent_id": agent_id, "selectors": [{"type": "unix", "value": "uid:4001"}]},
        {"spiffe_id": f"spiffe://{TD}/b2", "parent_id": agent_id, "selectors": [{"type": "unix", "value": "uid:4002"}],
         "federates_with": ["spiffe://nowhere.example"]},
        {"spiffe_id": f"spiffe://{TD}/b3", "parent_id": agent_id, "selectors": [{"type": "unix", "value": "uid:4003"}]},
    ]}
    out = server.cli("entry", "create", "-data", "-", "-output", "json", input=json.dumps(batch), check=False).stdout
    codes = [r["status"]["code"] for r in json.loads(out)["results"]]
    assert codes[0] == 0 and codes[1] != 0 and codes[2] == 0, out

    # The database holds what the server said: node, entries, bundle; the token is spent.
    store = db.store()
    try:
        assert store.fetch_attested_node(agent_id) is not None
        assert store.fetch_join_token(token) is None
        assert sorted(e.spiffe_id for e in store.list_entries()[0]) == [
            f"spiffe://{TD}/b1", f"spiffe://{TD}/b3", f"spiffe://{TD}/me2"]
        assert store.fetch_bundle(f"spiffe://{TD}") is not None
    finally:
        store.close()

    # Delete: the SVID goes within a sync.
    server.cli("entry", "delete", "-entryID", first)
    wait_for(lambda: fetch(agent.socket) is None, 30, "SVID removed")


def test_server_upgrades_a_database_of_the_previous_schema_at_start(engine: str, make_database: Any,
                                                                      make_server: Any) -> None:
    """A database made by the previous release (schema 0001) with entries in it:
    the new server migrates it in place at start and serves the old entries."""
    db = make_database(engine)
    engine_ = create_store_engine(db.kind, db.connection_string, PoolSettings())
    cfg = alembic_config()
    with engine_.begin() as conn:
        cfg.attributes["connection"] = conn
        command.upgrade(cfg, "0001")
        conn.exec_driver_sql(
            "INSERT INTO registered_entries (entry_id, spiffe_id, parent_id, x509_svid_ttl, jwt_svid_ttl, admin, "
            "downstream, store_svid, expires_at, hint, revision_number, created_at, updated_at) VALUES "
            f"('old-entry', 'spiffe://{TD}/old', 'spiffe://{TD}/agent', 0, 0, false, false, false, 0, '', 0, 1, 1)")
        conn.exec_driver_sql("INSERT INTO selectors (registered_entry_id, type, value) "
                             "SELECT id, 'unix', 'uid:7' FROM registered_entries WHERE entry_id = 'old-entry'")
    engine_.dispose()

    server = make_server(datastore=db.datastore())
    shown = json.loads(server.cli("entry", "show", "-entryID", "old-entry", "-output", "json").stdout)["entries"]
    assert [e["spiffe_id"]["path"] for e in shown] == ["/old"]
    assert shown[0]["selectors"] == [{"type": "unix", "value": "uid:7"}]
    engine_ = create_store_engine(db.kind, db.connection_string, PoolSettings())
    with engine_.connect() as conn:
        assert conn.exec_driver_sql("SELECT version_num FROM alembic_version").scalar() == head_revision()
    engine_.dispose()


@pytest.mark.timeout(240)
def test_database_restart_while_agents_run(server_engine: str, make_database: Any, make_server: Any,
                                           start_agent: Any) -> None:
    """The database goes away for a while: workloads keep valid SVIDs from the
    agent, the server reconnects by itself afterwards, and no entry is lost."""
    why = can_restart(server_engine)
    if why:
        pytest.skip(why)
    db = make_database(server_engine)
    server = make_server(datastore=db.datastore())
    token = server.token()
    agent_id = f"spiffe://{TD}/spire/agent/join_token/{token}"
    for i in range(5):
        entry_create(server, agent_id, f"spiffe://{TD}/svc{i}", "-selector", f"unix:uid:{5000 + i}")
    entry_create(server, agent_id, f"spiffe://{TD}/me", "-selector", f"unix:uid:{ME}", "-x509SVIDTTL", "300")
    agent = start_agent(server, token)
    before = svid_for(agent.socket, f"spiffe://{TD}/me", 60)

    database_ctl("stop", server_engine)
    try:
        time.sleep(4)  # several agent syncs fail meanwhile
        during = fetch(agent.socket)
        assert during is not None and during["spiffe_id"] == f"spiffe://{TD}/me"
        leaf = x509.load_pem_x509_certificates(during["chain"].encode())[0]
        assert leaf.not_valid_after_utc.timestamp() > time.time()
        assert server.cli("entry", "count", check=False).returncode != 0  # the server does see the outage
    finally:
        database_ctl("start", server_engine)

    # Recovery needs nothing but time: the pool replaces its dead connections.
    wait_for(lambda: server.cli("entry", "count", check=False).returncode == 0, 60, "server reconnected")
    after_id = entry_create(server, agent_id, f"spiffe://{TD}/after", "-selector", f"unix:uid:{ME}")
    assert server.cli("entry", "count").stdout == "7 registration entries\n"
    assert after_id
    # The agent syncs again: a forced rotation (new entry revision) reaches the workload.
    server.cli("entry", "delete", "-entryID", after_id)
    shown = json.loads(server.cli("entry", "show", "-spiffeID", f"spiffe://{TD}/me", "-output", "json").stdout)
    me_id = shown["entries"][0]["id"]
    server.cli("entry", "update", "-entryID", me_id, "-parentID", agent_id, "-spiffeID", f"spiffe://{TD}/me",
               "-selector", f"unix:uid:{ME}", "-x509SVIDTTL", "301")
    wait_for(lambda: (d := fetch(agent.socket)) is not None and serial(d) != serial(before), 30, "new SVID after restart")
    assert agent.proc.alive() and server.proc.alive()
