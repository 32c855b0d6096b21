"""Server restart at scale: ``spire-server run`` on a datastore that already holds N entries
(1,000,000 in full mode): the time until it is ready (health SERVING on the admin socket),
the entry cache's own load time (its "Entry cache loaded" log line), the server's CPU time
up to ready, and its RSS (now and peak) once loaded.

The datastore is filled quickly with bulk SQL through the datastore's own schema (migrated by
``SQLDataStore``), not one API call per entry: a mixed set of entries as a large deployment
has them (agents' workloads with five selector mixes, nested entries, node aliases, DNS
names, TTLs, hints, admin and downstream entries, expiries, federation). sqlite3 always;
PostgreSQL too when SPIRE_PY_TEST_POSTGRES names a scratch database.

Baselines, measured in the same run: for the load, reading the same rows with the database
driver in batches, in one process (the data movement a load cannot avoid); for time to ready
and RSS, the same server on an empty datastore.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import os
import re
import time
import uuid
from typing import Any, Iterator, Optional, Sequence

from cryptography import x509
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID
from grpclib.client import Channel

from spire_py.proto.grpc.health.v1 import health_grpc, health_pb2

from .entry_create import _SELECTOR_KINDS, TD, fake_agent, reset_database
from .harness import Row, ServerProcess, cpu_seconds, rss_mb, sampling

LOAD_TARGET_S = 10.0
RSS_TARGET_MB = 2048.0
READY_TIMEOUT_S = 900.0
FED_TD = "spiffe://federated.example"
SERVER_ID = f"{TD}/spire/server"
FILL_BATCH = 20_000
ALIAS_EVERY = 1000  # node aliases (parent: the server), matched by agents' node selectors
GROUP_EVERY = 10  # a nested entry (parent: an earlier entry's SPIFFE ID) every so many

_TABLES = {
    "registered_entries": ("id", "entry_id", "spiffe_id", "parent_id", "x509_svid_ttl", "jwt_svid_ttl", "admin",
                           "downstream", "store_svid", "expires_at", "hint", "revision_number", "created_at",
                           "updated_at"),
    "selectors": ("id", "registered_entry_id", "type", "value"),
    "dns_names": ("id", "registered_entry_id", "value"),
    "federated_registration_entries": ("registered_entry_id", "bundle_id"),
}


# --- filling -----------------------------------------------------------------------------------
def entry_rows(start: int, count: int, agents: int, fed_bundle: int, now: int) -> Iterator[dict[str, list[tuple[Any, ...]]]]:
    """Rows for entries ``start`` .. ``start + count - 1`` (internal ids ``i + 1``), per table, in
    batches. Selector and DNS row ids follow the entry's, so every insert names its ids."""
    sel_id = dns_id = start * 3  # room for up to three selectors and one DNS name per entry
    for lo in range(start, start + count, FILL_BATCH):
        out: dict[str, list[tuple[Any, ...]]] = {t: [] for t in _TABLES}
        for i in range(lo, min(lo + FILL_BATCH, start + count)):
            internal = i + 1
            if i % ALIAS_EVERY == 0:
                parent = SERVER_ID
                sels = [("k8s_psat", f"cluster:c{i // ALIAS_EVERY % 20}"), ("k8s_psat", "agent_ns:spire")]
            else:
                group = i - i % GROUP_EVERY  # the first of each ten hangs under an agent, the rest under it
                parent = fake_agent(i % agents) if i % GROUP_EVERY == 0 else f"{TD}/bench/restart/{group}"
                sels = _SELECTOR_KINDS[i % len(_SELECTOR_KINDS)](i)
            out["registered_entries"].append((
                internal, str(uuid.uuid4()), f"{TD}/bench/restart/{i}", parent,
                1800 if i % 7 == 0 else 0, 300 if i % 9 == 0 else 0,
                i % 1000 == 1, i % 997 == 2, False,
                now + 10 * 365 * 86400 if i % 11 == 0 else 0,
                f"hint-{i % 5}" if i % 13 == 0 else "", i % 3, now - i % 86400, now))
            for t, v in sels:
                sel_id += 1
                out["selectors"].append((sel_id, internal, t, v))
            if i % 10 == 3:
                dns_id += 1
                out["dns_names"].append((dns_id, internal, f"svc-{i}.restart.example.org"))
            if i % 100 == 5 and fed_bundle:
                out["federated_registration_entries"].append((internal, fed_bundle))
        yield out


def _federated_bundle(store: Any) -> int:
    """A real federated bundle for entries to federate with; returns its row id."""
    from sqlalchemy import select
    from cryptography.hazmat.primitives.serialization import Encoding

    from spire_py.server.datastore import schema as s
    from spire_py.server.datastore.models import Bundle

    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.ORGANIZATION_NAME, "federated")])
    now = dt.datetime.now(dt.timezone.utc)
    cert = (x509.CertificateBuilder().serial_number(1).subject_name(name).issuer_name(name)
            .public_key(key.public_key()).not_valid_before(now).not_valid_after(now + dt.timedelta(days=3650))
            .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
            .sign(key, hashes.SHA256()))
    store.create_bundle(Bundle(FED_TD, x509_authorities=[cert.public_bytes(Encoding.DER)]))
    with store.engine.connect() as conn:
        return int(conn.execute(select(s.bundles.c.id).where(s.bundles.c.trust_domain == FED_TD)).scalar_one())


def fill(kind: str, conn_str: str, count: int, agents: int) -> float:
    """Create the schema (the datastore's migrations) and ``count`` entries with bulk inserts;
    returns the seconds it took."""
    from spire_py.server.datastore import SQLDataStore

    started = time.perf_counter()
    store = SQLDataStore(kind, conn_str)
    try:
        fed = _federated_bundle(store)
        with store.engine.begin() as conn:
            raw = conn.connection.driver_connection
            for batch in entry_rows(0, count, agents, fed, int(time.time())):
                for table, rows in batch.items():
                    if rows:
                        _insert(kind, raw, table, _TABLES[table], rows)
            if kind == "postgres":  # ids were given: move the sequences past them
                for table in ("registered_entries", "selectors", "dns_names"):
                    raw.execute(f"SELECT setval(pg_get_serial_sequence('{table}', 'id'), "
                                f"(SELECT COALESCE(max(id), 1) FROM {table}))")
        if kind == "sqlite3":  # as a server that has run a while finds it: the WAL checkpointed
            with store.engine.connect() as conn:
                conn.connection.driver_connection.execute("PRAGMA wal_checkpoint(TRUNCATE)")
    finally:
        store.close()
    return time.perf_counter() - started


def _insert(kind: str, raw: Any, table: str, columns: Sequence[str], rows: list[tuple[Any, ...]]) -> None:
    cols = ", ".join(columns)
    if kind == "postgres":  # psycopg 3: COPY is the bulk path
        with raw.cursor() as cur:
            with cur.copy(f"COPY {table} ({cols}) FROM STDIN") as copy:
                for r in rows:
                    copy.write_row(r)
        return
    marks = ", ".join("?" if kind == "sqlite3" else "%s" for _ in columns)
    cur = raw.cursor()
    try:
        cur.executemany(f"INSERT INTO {table} ({cols}) VALUES ({marks})", rows)
    finally:
        cur.close()


# --- the raw baseline: the same rows read with the driver, in batches ---------------------------
def raw_read_seconds(kind: str, conn_str: str, batch: int = 10_000) -> float:
    from spire_py.server.datastore.dialects import PoolSettings, create_store_engine

    engine = create_store_engine(kind, conn_str, PoolSettings())
    try:
        started = time.perf_counter()
        with engine.connect() as conn:
            cur = conn.connection.driver_connection.cursor()
            for table, cols in _TABLES.items():
                key = "registered_entry_id" if table != "registered_entries" else "id"
                cur.execute(f"SELECT {', '.join(cols)} FROM {table} ORDER BY {key}")
                while cur.fetchmany(batch):
                    pass
            cur.close()
        return time.perf_counter() - started
    finally:
        engine.dispose()


# --- the server --------------------------------------------------------------------------------
async def _healthy(sock: str) -> bool:
    channel = Channel(path=sock)
    try:
        resp = await health_grpc.HealthStub(channel).Check(health_pb2.HealthCheckRequest(), timeout=5)
        return bool(resp.status == health_pb2.HealthCheckResponse.SERVING)
    except Exception:
        return False
    finally:
        channel.close()


_LOADED = re.compile(r'msg="Entry cache loaded".*?\bcount=(\d+).*?\belapsed_ms=(\d+)')


def peak_rss_mb(pid: int) -> float:
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024.0
    return 0.0


async def start_measured(server: ServerProcess, profile: Any = None, name: str = "") -> dict[str, float]:
    """Start ``server``; poll its health in-process (no CLI process competing for the CPU) until
    SERVING. Returns seconds to ready, the cache's load time and count, CPU seconds, RSS."""
    started = time.perf_counter()
    server.proc.start()
    deadline = started + READY_TIMEOUT_S
    with sampling(profile if name else None, name, server.pid):
        while not await _healthy(server.sock):
            if not server.proc.alive():
                raise RuntimeError("spire-server exited:\n" + server.proc.tail())
            if time.perf_counter() > deadline:
                raise RuntimeError(f"spire-server not ready after {READY_TIMEOUT_S:g} s:\n" + server.proc.tail())
            await asyncio.sleep(0.1)
    ready = time.perf_counter() - started
    got: dict[str, float] = {"ready_s": ready, "cpu_s": cpu_seconds(server.pid), "rss_mb": rss_mb(server.pid),
                             "peak_rss_mb": peak_rss_mb(server.pid)}
    m = _LOADED.search(server.proc.tail(10**6))
    if m:
        got["count"], got["load_s"] = float(m.group(1)), int(m.group(2)) / 1000.0
    return got


async def measure_backend(kind: str, conn_str: Optional[str], count: int, agents: int,
                          profile: Any = None) -> list[Row]:
    label = "sqlite3" if kind == "sqlite3" else "PostgreSQL"
    # The same server on an empty datastore first: its time to ready and RSS are the baseline.
    if conn_str is not None:
        reset_database(kind, conn_str)
    empty = ServerProcess(f"restart-empty-{kind}", database=(kind, conn_str) if conn_str else None)
    try:
        idle = await start_measured(empty)
    finally:
        empty.stop()
    if conn_str is not None:
        reset_database(kind, conn_str)
    server = ServerProcess(f"restart-{kind}", database=(kind, conn_str) if conn_str else None)
    try:
        if conn_str is None:
            data = server.dir / "data"
            data.mkdir(mode=0o700, exist_ok=True)
            db = str(data / "datastore.sqlite3")
        else:
            db = conn_str
        fill_s = fill(kind, db, count, agents)
        raw_s = min(raw_read_seconds(kind, db) for _ in range(2))
        got = await start_measured(server, profile, f"restart-{kind}")
    finally:
        server.stop()
        if conn_str is not None:
            reset_database(kind, conn_str)
    if "count" in got and int(got["count"]) != count:
        raise RuntimeError(f"the server's entry cache loaded {got['count']:.0f} entries, expected {count}")
    # Daemons from a checkout without the log line (--src): the extra time to ready instead.
    load_s = got.get("load_s", got["ready_s"] - idle["ready_s"])
    info = {"entries": count, "fill_s": round(fill_s, 1), "ready_s": round(got["ready_s"], 2),
            "server_cpu_s": round(got["cpu_s"], 2), "empty_server_cpu_s": round(idle["cpu_s"], 2),
            "peak_rss_mb": round(got["peak_rss_mb"], 1)}
    return [
        Row("Server restart", f"entry cache load, {count:,} entries ({label})", load_s, "s", raw_s,
            f"driver reads of the same rows, {label}", False, f"< {LOAD_TARGET_S:g} s", load_s < LOAD_TARGET_S, info),
        Row("Server restart", f"start to ready, {count:,} entries ({label})", got["ready_s"], "s", idle["ready_s"],
            f"the same server, empty datastore, {label}", False, "", None, info),
        Row("Server restart", f"server CPU to ready, {count:,} entries ({label})", got["cpu_s"], "s", idle["cpu_s"],
            f"the same server, empty datastore, {label}", False, "", None, info),
        Row("Server restart", f"server RSS after load, {count:,} entries ({label})", got["rss_mb"], "MB",
            idle["rss_mb"], f"the same server, empty datastore, {label}", False, f"< {RSS_TARGET_MB:g} MB",
            got["peak_rss_mb"] < RSS_TARGET_MB, info),
    ]


async def run(sizes: dict[str, Any], profile: Any = None) -> list[Row]:
    count, agents = sizes["restart_entries"], sizes["restart_agents"]
    rows = await measure_backend("sqlite3", None, count, agents, profile)
    pg = os.environ.get("SPIRE_PY_TEST_POSTGRES")
    if pg:
        rows += await measure_backend("postgres", pg, count, agents, profile)
    return rows
