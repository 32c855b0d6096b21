"""Entry sync at scale: 100k entries (10k agents' worth of parents, mixed selectors) created
through BatchCreateEntry; one attested agent authorized for 20k of them syncs with the
agent's own code (spire_py.agent.sync.fetch_entries), in full and with nothing changed;
server RSS at 100k entries.

The 20k authorized entries hang off the agent both directly and through intermediate
entries (parent = another entry's SPIFFE ID), so the server walks descendants as it would
for nested workloads. Baselines: encoding the same 20k entries (full) or 20k revisions
(no change) into SyncAuthorizedEntriesResponse pages and decoding them back, in one
process - the data movement a sync cannot avoid; for memory, the same server's RSS
before any entry exists.
"""

from __future__ import annotations

import statistics
import time
from typing import Any

from spire_py.agent.attestor import make_csr
from spire_py.agent.cache import WorkloadCache
from spire_py.agent.sync import entry_from_sync, fetch_entries, mint_svids
from spire_py.common.keys import generate_key
from spire_py.proto.spire.api.server.entry.v1 import entry_pb2

from .entry_create import TD, fleet_entries, workload
from .harness import (TRUST_DOMAIN, Row, ServerProcess, attest_agent, bundle_roots, cpu_seconds, create_entries,
                      entry_pb, rss_mb, sampling)

FULL_TARGET_S = 10.0
NO_CHANGE_TARGET_MS = 100.0
RSS_TARGET_MB = 500.0
BATCH = 500
PAGE = 500
GROUPS = 4  # intermediate entries under the agent, each a parent of part of its workloads


def authorized_entries(agent_id: str, count: int) -> list[Any]:
    """``count`` entries the agent is authorized for: GROUPS intermediate entries parented to
    the agent, half of the rest under them, the other half directly under the agent."""
    groups = [entry_pb(f"{TD}/bench/group/{g}", agent_id, [("bench", f"group:{g}")]) for g in range(GROUPS)]
    out = list(groups)
    for i in range(count - GROUPS):
        parent = agent_id if i % 2 == 0 else f"{TD}/bench/group/{i % GROUPS}"
        out.append(workload("mine", i, parent))
    return out


def raw_sync_seconds(entries: list[Any], revisions_only: bool, repeats: int = 3) -> float:
    """Best time to encode then decode the sync pages for ``entries`` (protobufs)."""
    Resp = entry_pb2.SyncAuthorizedEntriesResponse

    def once() -> float:
        start = time.perf_counter()
        for i in range(0, len(entries), PAGE):
            page = entries[i:i + PAGE]
            if revisions_only:
                wire = Resp(entry_revisions=[entry_pb2.EntryRevision(id=e.id, revision_number=e.revision_number,
                                                                     created_at=e.created_at) for e in page],
                            more=True).SerializeToString()
                [r.id for r in Resp.FromString(wire).entry_revisions]
            else:
                wire = Resp(entries=page, more=True).SerializeToString()
                [entry_from_sync(e) for e in Resp.FromString(wire).entries]
        return time.perf_counter() - start

    return min(once() for _ in range(repeats))


async def run(sizes: dict[str, int], profile: Any = None) -> list[Row]:
    total, mine, agents = sizes["sync_entries"], sizes["sync_authorized"], sizes["sync_agents"]
    rows: list[Row] = []
    with ServerProcess("sync") as server:
        admin = server.admin()
        agent = await attest_agent(server, admin)
        try:
            idle_rss = rss_mb(server.pid)
            ours = authorized_entries(agent.agent_id, mine)
            fleet = list(fleet_entries(total - mine, agents))
            # Interleave ours with the fleet's, as entries arrive in a real deployment.
            step = max(1, len(fleet) // max(1, len(ours)))
            mixed: list[Any] = []
            for i, e in enumerate(ours):
                mixed.append(e)
                mixed.extend(fleet[i * step:(i + 1) * step])
            mixed.extend(fleet[len(ours) * step:])
            cpu0, start = cpu_seconds(server.pid), time.perf_counter()
            with sampling(profile, "sync-create", server.pid):
                await create_entries(admin, mixed, BATCH)
            create_s, create_cpu = time.perf_counter() - start, cpu_seconds(server.pid) - cpu0

            with sampling(profile, "sync-full", server.pid):
                start = time.perf_counter()
                known = await fetch_entries(agent.client, {})
                full_s = time.perf_counter() - start
            if len(known) != mine:
                raise RuntimeError(f"full sync returned {len(known)} entries, expected {mine}")
            times = []
            with sampling(profile, "sync-nochange", server.pid):
                for _ in range(sizes["sync_repeats"]):
                    start = time.perf_counter()
                    again = await fetch_entries(agent.client, known)
                    times.append(time.perf_counter() - start)
            if again.keys() != known.keys():
                raise RuntimeError("no-change sync returned a different set of entries")
            nochange_s = statistics.median(times)
            # The same, but each time after an entry elsewhere in the fleet was created: the server
            # cannot reuse its previous answer and walks the agent's entries again.
            cold = []
            extra = fleet_entries(sizes["sync_repeats"], agents, offset=total)
            for e in extra:
                await create_entries(admin, [e], 1)
                start = time.perf_counter()
                again = await fetch_entries(agent.client, known)
                cold.append(time.perf_counter() - start)
            if again.keys() != known.keys():
                raise RuntimeError("sync after an unrelated change returned a different set of entries")
            cold_s = statistics.median(cold)
            rss = rss_mb(server.pid)

            # The agent's whole first sync also mints an X.509-SVID for each entry parented to it.
            cache = WorkloadCache(TRUST_DOMAIN, agent_id=agent.agent_id, entries=known)
            roots = await bundle_roots(admin)
            with sampling(profile, "sync-mint", server.pid):
                start = time.perf_counter()
                await mint_svids(agent.client, cache, known, {}, roots, "ec-p256")
                mint_s = time.perf_counter() - start
            minted = len(cache.svids)
            raw_mint = minted / raw_mint_rate(min(minted, 500))

            got_pb = await _authorized_pbs(agent)
            raw_full = raw_sync_seconds(got_pb, revisions_only=False)
            raw_nochange = raw_sync_seconds(got_pb, revisions_only=True)
        finally:
            agent.close()
            admin.close()
    info = {"entries": total, "authorized": mine, "agents": agents}
    rows.append(Row("Entry sync", f"full sync, {mine} of {total} entries", full_s, "s", raw_full,
                    "encode+decode the same entries", False, f"< {FULL_TARGET_S:g} s", full_s < FULL_TARGET_S, info))
    rows.append(Row("Entry sync", f"full sync + minting {minted} X.509-SVIDs", full_s + mint_s, "s",
                    raw_full + raw_mint, "encode+decode + keygen, CSR, sign", False, f"< {FULL_TARGET_S:g} s",
                    full_s + mint_s < FULL_TARGET_S, {**info, "sync_s": round(full_s, 2), "mint_s": round(mint_s, 2)}))
    rows.append(Row("Entry sync", f"no-change sync, {mine} of {total} entries", nochange_s * 1000, "ms",
                    raw_nochange * 1000, "encode+decode the same revisions", False, f"< {NO_CHANGE_TARGET_MS:g} ms",
                    nochange_s * 1000 < NO_CHANGE_TARGET_MS,
                    {**info, "runs_ms": [round(t * 1000, 1) for t in times]}))
    rows.append(Row("Entry sync", "no-change sync after an unrelated entry was created", cold_s * 1000, "ms",
                    raw_nochange * 1000, "encode+decode the same revisions", False, f"< {NO_CHANGE_TARGET_MS:g} ms",
                    cold_s * 1000 < NO_CHANGE_TARGET_MS, {**info, "runs_ms": [round(t * 1000, 1) for t in cold]}))
    rows.append(Row("Entry sync", f"server RSS at {total} entries", rss, "MB", idle_rss, "same server, no entries",
                    False, f"< {RSS_TARGET_MB:g} MB", rss < RSS_TARGET_MB, info))
    rows.append(Row("Entry creation", f"BatchCreateEntry batch={BATCH}, 0 to {total} (sqlite3)", total / create_s,
                    "entries/s", None, "", True, "", None,
                    {"seconds": round(create_s, 1), "server_cpu_s": round(create_cpu, 1)}))
    return rows


def raw_mint_rate(count: int) -> float:
    """SVIDs per second for what minting cannot avoid, in one process: a key and a CSR (agent),
    then the certificate built and signed (server)."""
    from .svid_issuance import _self_signed_ca, raw_sign_rate

    start = time.perf_counter()
    keys = [generate_key("ec-p256") for _ in range(count)]
    for k in keys:
        make_csr(k)
    prepare = time.perf_counter() - start
    ca_key, ca = _self_signed_ca()
    sign = count / raw_sign_rate([k.public_key() for k in keys], ca_key, ca)
    return count / (prepare + sign)


async def _authorized_pbs(agent: Any) -> list[Any]:
    """The authorized entries as the server sends them (for the baseline)."""
    Req = entry_pb2.SyncAuthorizedEntriesRequest
    out: list[Any] = []
    async with agent.client.entry.SyncAuthorizedEntries.open(timeout=600) as stream:
        await stream.send_message(Req())
        revisions = []
        more = True
        while more:
            resp = await stream.recv_message()
            revisions.extend(resp.entry_revisions)
            out.extend(resp.entries)
            more = resp.more
        if revisions:
            await stream.send_message(Req(ids=[r.id for r in revisions]))
            more = True
            while more:
                resp = await stream.recv_message()
                out.extend(resp.entries)
                more = resp.more
        await stream.end()
    return out

