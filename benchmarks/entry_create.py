"""Entry creation: BatchCreateEntry throughput on a real server, sqlite3 (and postgres when
SPIRE_PY_TEST_POSTGRES names a scratch database), vs raw SQLAlchemy Core inserts of the
same rows (entry, selectors, DNS names, event) in transactions of the same size.
"""

from __future__ import annotations

import os
import time
import uuid
from typing import Any, Iterator, Optional, Sequence

from sqlalchemy import inspect, insert, select, text

from spire_py.proto.spire.api.types import entry_pb2 as types_entry_pb2

from .harness import Row, ServerProcess, cpu_seconds, create_entries, entry_pb, short_dir

TD = "spiffe://example.org"
BATCH = 500

_SELECTOR_KINDS = (
    lambda i: [("unix", f"uid:{1000 + i % 5000}")],
    lambda i: [("unix", f"uid:{1000 + i % 5000}"), ("unix", f"gid:{i % 50}")],
    lambda i: [("k8s", f"ns:ns-{i % 200}"), ("k8s", f"sa:sa-{i % 1000}")],
    lambda i: [("k8s", f"ns:ns-{i % 200}"), ("k8s", f"sa:sa-{i % 1000}"), ("k8s", f"container-name:c{i % 7}")],
    lambda i: [("docker", f"label:app:app-{i % 300}"), ("docker", f"image_id:sha256:{i:064x}"[:80])],
)


def fake_agent(i: int) -> str:
    return f"{TD}/spire/agent/join_token/bench-{i:05d}"


def workload(prefix: str, i: int, parent: str) -> types_entry_pb2.Entry:
    """A mixed-selector workload entry; every 10th has a DNS name, every 7th its own TTL."""
    kw: dict[str, Any] = {}
    if i % 10 == 0:
        kw["dns_names"] = [f"svc-{i}.{prefix}.example.org"]
    if i % 7 == 0:
        kw["x509_svid_ttl"] = 1800
    return entry_pb(f"{TD}/bench/{prefix}/{i}", parent, _SELECTOR_KINDS[i % len(_SELECTOR_KINDS)](i), **kw)


def fleet_entries(count: int, agents: int, offset: int = 0) -> Iterator[types_entry_pb2.Entry]:
    """``count`` entries spread over ``agents`` agents' worth of parents (none of them ours)."""
    for i in range(offset, offset + count):
        yield workload("fleet", i, fake_agent(i % agents))


# --- raw baseline --------------------------------------------------------------------------
def raw_insert_rate(engine: Any, entries: Sequence[types_entry_pb2.Entry], batch: int) -> float:
    """Entries per second inserting the same rows with SQLAlchemy Core, one transaction per batch."""
    from spire_py.server.datastore import schema as s

    E = s.registered_entries
    start = time.perf_counter()
    for i in range(0, len(entries), batch):
        part = entries[i:i + batch]
        now = int(time.time())
        ids = [str(uuid.uuid4()) for _ in part]
        with engine.begin() as conn:
            conn.execute(insert(E), [{
                "entry_id": eid, "spiffe_id": f"spiffe://{pb.spiffe_id.trust_domain}{pb.spiffe_id.path}",
                "parent_id": f"spiffe://{pb.parent_id.trust_domain}{pb.parent_id.path}",
                "x509_svid_ttl": pb.x509_svid_ttl, "jwt_svid_ttl": pb.jwt_svid_ttl, "admin": False,
                "downstream": False, "store_svid": False, "expires_at": 0, "hint": "", "revision_number": 0,
                "created_at": now, "updated_at": now} for eid, pb in zip(ids, part)])
            internal = {r.entry_id: int(r.id) for r in conn.execute(
                select(E.c.id, E.c.entry_id).where(E.c.entry_id.in_(ids)))}
            conn.execute(insert(s.selectors), [
                {"registered_entry_id": internal[eid], "type": sel.type, "value": sel.value}
                for eid, pb in zip(ids, part) for sel in pb.selectors])
            dns = [{"registered_entry_id": internal[eid], "value": d} for eid, pb in zip(ids, part) for d in pb.dns_names]
            if dns:
                conn.execute(insert(s.dns_names), dns)
            conn.execute(insert(s.registered_entries_events), [{"entry_id": eid, "created_at": now} for eid in ids])
    return len(entries) / (time.perf_counter() - start)


def reset_database(kind: str, conn: str) -> None:
    """Drop every table of a scratch postgres/mysql database."""
    from spire_py.server.datastore.dialects import PoolSettings, create_store_engine

    engine = create_store_engine(kind, conn, PoolSettings())
    with engine.begin() as c:
        for name in inspect(c).get_table_names():
            c.execute(text(f"DROP TABLE IF EXISTS {name}" + (" CASCADE" if kind == "postgres" else "")))
    engine.dispose()


async def measure_backend(kind: str, conn: Optional[str], count: int, batch: int) -> Row:
    from spire_py.server.datastore import SQLDataStore

    entries = list(fleet_entries(count, max(1, count // 10)))
    if conn is not None:
        reset_database(kind, conn)
    with ServerProcess(f"create-{kind}", database=(kind, conn) if conn else None) as server:
        admin = server.admin()
        try:
            await create_entries(admin, entries[:batch], batch)  # warm-up, not timed
            timed = entries[batch:]
            cpu0 = cpu_seconds(server.pid)
            start = time.perf_counter()
            await create_entries(admin, timed, batch)
            elapsed = time.perf_counter() - start
            server_cpu = cpu_seconds(server.pid) - cpu0
        finally:
            admin.close()
    rate = len(timed) / elapsed
    # Baseline: a fresh database with the same schema, the same rows, raw Core inserts.
    raw_dir = short_dir("raw")
    try:
        if conn is not None:
            reset_database(kind, conn)
            store = SQLDataStore(kind, conn)
        else:
            store = SQLDataStore("sqlite3", str(raw_dir / "raw.sqlite3"))
        try:
            raw_insert_rate(store.engine, entries[:batch], batch)  # same warm-up
            raw = raw_insert_rate(store.engine, timed, batch)
        finally:
            store.close()
        if conn is not None:
            reset_database(kind, conn)
    finally:
        import shutil

        shutil.rmtree(raw_dir, ignore_errors=True)
    return Row("Entry creation", f"BatchCreateEntry batch={batch} ({kind})", rate, "entries/s", raw,
               f"SQLAlchemy Core inserts, {kind}", True, "", None,
               {"entries": len(timed), "seconds": round(elapsed, 2), "server_cpu_s": round(server_cpu, 2)})


async def run(sizes: dict[str, int], profile: Any = None) -> list[Row]:
    rows = [await measure_backend("sqlite3", None, sizes["create_entries"], BATCH)]
    pg = os.environ.get("SPIRE_PY_TEST_POSTGRES")
    if pg:
        rows.append(await measure_backend("postgres", pg, sizes["create_entries"], BATCH))
    return rows
