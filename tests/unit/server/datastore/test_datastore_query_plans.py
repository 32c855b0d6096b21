"""No full-table scan on the agent sync path, checked with each database's own planner.

Every statement the store runs while an agent attests, syncs and renews is
captured and EXPLAINed on the same connection settings. PostgreSQL is asked with
``enable_seqscan = off`` (on small tables it would rightly prefer a scan; with
the switch off a Seq Scan remains only where no index applies); MySQL after
ANALYZE TABLE; sqlite with EXPLAIN QUERY PLAN.
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any

import pytest
from sqlalchemy import event

from spire_py.common.registration import Entry
from spire_py.server.datastore import AttestedNode, JoinToken, SQLDataStore
from spire_py.server.datastore.models import Bundle

from tests.unit.helpers.datastore import BACKENDS, TD, open_store, reset_server_db, sel, server_conn

AGENT = TD + "/spire/agent/join_token/tok-7"


@contextmanager
def captured(store: SQLDataStore) -> Iterator[list[tuple[str, Any]]]:
    seen: list[tuple[str, Any]] = []

    def record(conn: Any, cursor: Any, statement: str, parameters: Any, context: Any, executemany: bool) -> None:
        if not executemany and statement.lstrip().upper().startswith(("SELECT", "UPDATE", "DELETE")):
            seen.append((statement, parameters))

    event.listen(store.engine, "before_cursor_execute", record)
    try:
        yield seen
    finally:
        event.remove(store.engine, "before_cursor_execute", record)


_WHERE_RE = re.compile(r"\bWHERE\b(.*?)(?:\bORDER BY\b|$)", re.S)
_PAGING_ONLY_RE = re.compile(r"^\s*\w+\.id > \S+\s*$")


def is_paged_listing(statement: str) -> bool:
    """A listing of every row, page by page in id order: walking the primary key is the plan."""
    if "LIMIT" not in statement:
        return False
    m = _WHERE_RE.search(statement)
    return m is None or bool(_PAGING_ONLY_RE.match(m.group(1)))


def full_scans(store: SQLDataStore, statement: str, parameters: Any) -> list[str]:
    """Tables the planner reads whole (or walks whole in key order) for this statement."""
    paging = is_paged_listing(statement)
    raw = store.engine.raw_connection()
    try:
        cur = raw.cursor()
        kind = store.database_type
        if kind == "sqlite3":
            cur.execute("EXPLAIN QUERY PLAN " + statement, parameters)
            # "SCAN t" reads every row; "SEARCH t USING ..." and "SCAN CONSTANT ROW" do not.
            return [r[3] for r in cur.fetchall()
                    if r[3].startswith("SCAN ") and "CONSTANT ROW" not in r[3] and not paging]
        if kind == "postgres":
            cur.execute("SET enable_seqscan = off")
            cur.execute("EXPLAIN (FORMAT JSON) " + statement, parameters)
            plan = cur.fetchone()[0]
            found: list[str] = []

            def walk(node: dict[str, Any]) -> None:
                kind = node.get("Node Type", "")
                if kind == "Seq Scan":
                    found.append(node["Relation Name"])
                # The primary key walked with a filter: no index serves the filter.
                elif kind == "Index Scan" and node.get("Index Name", "").endswith("_pkey") \
                        and "Filter" in node and "Index Cond" not in node and not paging:
                    found.append(f'{node["Relation Name"]} (primary key walk)')
                for child in node.get("Plans", []):
                    walk(child)

            walk((plan if isinstance(plan, list) else json.loads(plan))[0]["Plan"])
            return found
        cur.execute("EXPLAIN " + statement, parameters)
        cols = [d[0] for d in cur.description]
        rows = [dict(zip(cols, r)) for r in cur.fetchall()]
        # type ALL reads the whole table, "index" walks a whole index.
        return [f'{r["table"]} ({r["type"]})' for r in rows
                if r["table"] and (r["type"] == "ALL" or (r["type"] == "index" and not paging))]
    finally:
        raw.rollback()
        raw.close()


def populate(store: SQLDataStore) -> str:
    """A realistic spread: many agents, entries, selectors and events."""
    store.create_bundle(Bundle(TD))
    for k in range(5):
        store.create_bundle(Bundle(f"spiffe://fed{k}.example"))
    for i in range(40):
        agent = f"{TD}/spire/agent/join_token/tok-{i}"
        kind = "join_token" if i % 3 else "x509pop"
        store.create_attested_node(AttestedNode(agent, kind, f"s{i}", 2_000_000_000 + i))
        store.set_node_selectors(agent, sel(f"join_token:tok-{i}", f"x:{i % 7}"))
        for j in range(3):
            store.create_entry(Entry(spiffe_id=f"{TD}/w{i}-{j}", parent_id=agent,
                                     selectors=sel(f"unix:uid:{j}", f"unix:gid:{i}"),
                                     dns_names=[f"w{i}-{j}.example"], federates_with=[f"spiffe://fed{j}.example"]))
    for i in range(40):
        store.create_join_token(JoinToken(f"unused-{i}", 2_000_000_000))
    store.create_join_token(JoinToken("tok-new", 2_000_000_000))
    if store.database_type == "sqlite3":
        with store.engine.begin() as c:
            c.exec_driver_sql("ANALYZE")
    if store.database_type == "mysql":
        with store.engine.begin() as c:
            for t in ("attested_node_entries", "node_resolver_map_entries", "registered_entries", "selectors",
                      "dns_names", "federated_registration_entries", "registered_entries_events", "join_tokens",
                      "bundles"):
                c.exec_driver_sql(f"ANALYZE TABLE {t}").fetchall()
    return store.list_entry_events()[-5][0]


def sync_path(store: SQLDataStore, last_event: int) -> None:
    """What the server asks the datastore while an agent attests, syncs and renews."""
    new = TD + "/spire/agent/join_token/tok-new"
    store.take_join_token("tok-new")
    store.fetch_attested_node(new)
    store.create_attested_node(AttestedNode(new, "join_token", "n1", 2_000_000_000))
    store.set_node_selectors(new, sel("join_token:tok-new"))
    store.fetch_bundle(TD)
    # every sync: authenticate the caller, its selectors, the entry cache's refresh
    store.fetch_attested_node(AGENT)
    store.get_node_selectors(AGENT)
    events = store.list_entry_events(last_event)
    store.fetch_entries([e for _, e in events])
    store.fetch_entry_events([last_event - 3, last_event - 2])
    store.last_entry_event_id()
    # renewal
    store.update_attested_node(AttestedNode(AGENT, new_cert_serial_number="s2", new_cert_not_after=2_100_000_000),
                               {"new_cert_serial_number", "new_cert_not_after"})


@pytest.fixture(scope="module", params=BACKENDS)
def loaded(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[SQLDataStore, int]]:
    """One populated database per backend, shared by this module's tests (populating is slow)."""
    kind: str = request.param
    if kind != "sqlite3":
        reset_server_db(kind, server_conn(kind), drop=False)
    s = open_store(kind, tmp_path_factory.mktemp("plans"))
    try:
        yield s, populate(s)
    finally:
        s.close()


def test_agent_sync_path_reads_no_table_whole(loaded: tuple[SQLDataStore, int]) -> None:
    store, last_event = loaded
    with captured(store) as statements:
        sync_path(store, last_event)
    assert len(statements) > 10
    scans = {stmt: tables for stmt, params in statements if (tables := full_scans(store, stmt, params))}
    assert scans == {}


def test_api_listing_filters_use_indexes(loaded: tuple[SQLDataStore, int]) -> None:
    store, _ = loaded
    calls: list[Callable[[], Any]] = [
        lambda: store.list_entries(by_parent_id=AGENT, page_size=2),
        lambda: store.list_entries(by_spiffe_id=TD + "/w3-1", page_size=2),
        lambda: store.list_entries(by_selectors=(sel("unix:gid:7"), "superset"), page_size=2),
        lambda: store.list_entries(by_selectors=(sel("unix:gid:7", "unix:uid:1"), "exact"), page_size=2),
        lambda: store.list_entries(page_token="40", page_size=10),
        lambda: store.list_attested_nodes(by_attestation_type="join_token", page_size=5),
        lambda: store.list_attested_nodes(page_token="10", page_size=5, fetch_selectors=True),
        lambda: store.list_bundles(page_size=1),
    ]
    if store.database_type != "sqlite3":
        # sqlite's planner walks the primary key here to spare a sort, index or not.
        calls.append(lambda: store.list_attested_nodes(by_expires_before=1_000, page_size=5))
    with captured(store) as statements:
        for call in calls:
            call()
    scans = {stmt: tables for stmt, params in statements if (tables := full_scans(store, stmt, params))}
    assert scans == {}
