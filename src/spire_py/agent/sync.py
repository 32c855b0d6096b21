"""Entry sync and workload SVID minting: the agent's half of SyncAuthorizedEntries."""

from __future__ import annotations

import asyncio
import time
from typing import Any, NamedTuple, Optional, TypeGuard

from cryptography import x509
from cryptography.hazmat.primitives.asymmetric.types import PrivateKeyTypes
from grpclib.const import Status
from grpclib.exceptions import GRPCError

from ..common import log, telemetry
from ..common.keys import generate_key
from ..common.registration import Entry
from ..common.registration_proto import entry_from_proto
from ..common.spiffeid import unchecked_id_string
from ..common.telemetry.names import (EXPIRING_SVIDS, LRU_ENTRY_ADD, LRU_ENTRY_REMOVE, LRU_ENTRY_UPDATE,
                                      OUTDATED_SVIDS, PROCESS_TAINTED_JWT, PROCESS_TAINTED_X509, SYNC_BUNDLES_TOTAL,
                                      SYNC_ENTRIES_DROPPED, SYNC_ENTRIES_MISSING, SYNC_ENTRIES_STALE,
                                      SYNC_ENTRIES_TOTAL, TAINTED_JWT_SVIDS, TAINTED_X509_SVIDS)
from ..common.bundle import Bundle as SpiffeBundle
from .rotation import DEFAULT as DEFAULT_ROTATION, FALLBACK_WARNING, RotationStrategy
from ..proto.spire.api.server.bundle.v1 import bundle_pb2
from ..proto.spire.api.server.entry.v1 import entry_pb2
from ..proto.spire.api.server.svid.v1 import svid_pb2
from .attestor import chain_from_proto, make_csr
from .cache import CachedSVID, WorkloadCache
from .client import RPC_TIMEOUT, ServerClient

_log = log.get("manager")

BATCH = 50


def entry_from_sync(pb: Any) -> Entry:
    """An entry as the server sent it."""
    e = entry_from_proto(pb)
    # Federated trust domains may come as names or as IDs; the cache keys bundles by ID.
    e.federates_with = [f if f.startswith("spiffe://") else unchecked_id_string(f) for f in e.federates_with]
    return e


def _unchanged(cur: Optional[Entry], sent: Any) -> TypeGuard[Entry]:
    """``cur`` is the entry the server describes (an entry or its revision): same revision of the
    same creation (an entry deleted and made again under its ID starts its revisions over)."""
    return cur is not None and cur.revision_number == sent.revision_number and cur.created_at == sent.created_at


async def fetch_entries(client: ServerClient, known: dict[str, Entry]) -> dict[str, Entry]:
    """All entries the server authorizes for us; asks only for new or changed ones when paged."""
    Req = entry_pb2.SyncAuthorizedEntriesRequest
    async with client.entry.SyncAuthorizedEntries.open(timeout=RPC_TIMEOUT) as stream:
        await stream.send_message(Req())
        first = await stream.recv_message()
        if first is None:
            raise ConnectionError("server closed the entry sync stream")
        if not first.entry_revisions:  # all of them in full: what we hold unchanged is kept, not rebuilt
            await stream.end()
            return {e.id: cur if _unchanged(cur := known.get(e.id), e) else entry_from_sync(e) for e in first.entries}
        revisions = list(first.entry_revisions)
        more = first.more
        while more:
            resp = await stream.recv_message()
            if resp is None:
                raise ConnectionError("entry sync stream ended early")
            revisions.extend(resp.entry_revisions)
            more = resp.more
        result: dict[str, Entry] = {}
        wanted = []
        for r in revisions:
            cur = known.get(r.id)
            if _unchanged(cur, r):
                result[r.id] = cur
            else:
                wanted.append(r.id)
        if wanted:
            await stream.send_message(Req(ids=sorted(wanted)))
            more = True
            while more:
                resp = await stream.recv_message()
                if resp is None:
                    raise ConnectionError("entry sync stream ended early")
                for e in resp.entries:
                    result[e.id] = entry_from_sync(e)
                more = resp.more
        await stream.end()
        return result


async def get_authorized_entries(client: ServerClient, known: dict[str, Entry]) -> dict[str, Entry]:
    """All entries the server authorizes for us in one GetAuthorizedEntries answer, as SPIRE's
    agent asks with ``use_sync_authorized_entries = false``; an unchanged entry keeps its object."""
    resp = await client.entry.GetAuthorizedEntries(entry_pb2.GetAuthorizedEntriesRequest(), timeout=RPC_TIMEOUT)
    result: dict[str, Entry] = {}
    for pb in resp.entries:
        e = entry_from_sync(pb)
        cur = known.get(e.id)
        result[e.id] = cur if cur is not None and cur == e else e
    return result


def _same_bundle(a: SpiffeBundle, b: SpiffeBundle) -> bool:
    return (a.sequence_number, a.x509_authorities, a.jwt_authorities.keys()) == (
        b.sequence_number, b.x509_authorities, b.jwt_authorities.keys())


async def fetch_federated_bundles(client: ServerClient, cache: WorkloadCache, entries: dict[str, Entry]) -> bool:
    """The bundles of every trust domain our entries federate with (SPIRE's agent asks
    GetFederatedBundle for each); bundles no entry names any more are dropped. True on change."""
    own = cache.trust_domain.id_string()
    wanted = sorted({td for e in entries.values() for td in e.federates_with if td != own})
    changed = False
    for td_id in [td for td in cache.bundles if td != own and td not in wanted]:
        del cache.bundles[td_id]
        changed = True
    for td_id in wanted:
        name = td_id.removeprefix("spiffe://")
        try:
            pb = await client.bundle.GetFederatedBundle(bundle_pb2.GetFederatedBundleRequest(trust_domain=name),
                                                        timeout=RPC_TIMEOUT)
        except GRPCError as exc:
            if exc.status != Status.NOT_FOUND:
                raise
            _log.warning("Federated bundle not found", extra=log.fields(trust_domain_id=name))
            if cache.bundles.pop(td_id, None) is not None:
                changed = True
            continue
        bundle = SpiffeBundle.from_proto(td_id, pb)
        old = cache.bundles.get(td_id)
        if old is None or not _same_bundle(old, bundle):
            cache.bundles[td_id] = bundle
            changed = True
            _log.debug("Federated bundle updated", extra=log.fields(trust_domain_id=name))
    return changed


def _due(svid: CachedSVID, now: float, rotation: RotationStrategy = DEFAULT_ROTATION) -> bool:
    """Rotate at half life, or earlier to keep ``availability_target`` (agent/rotation.py)."""
    return rotation.should_rotate(now, svid.issued_at, svid.expires_at)


def _subjects(roots: list[x509.Certificate]) -> frozenset[bytes]:
    return frozenset(r.subject.public_bytes() for r in roots)


def _signed_by(svid: CachedSVID, subjects: frozenset[bytes]) -> bool:
    """Whether the SVID's chain hangs from one of the roots whose subjects (``_subjects``) are given."""
    return svid.top_issuer in subjects


class EntryChanges(NamedTuple):
    added: int
    updated: int
    removed: int


NO_CHANGES = EntryChanges(0, 0, 0)


def count_entry_changes(old: dict[str, Entry], new: dict[str, Entry]) -> EntryChanges:
    """SPIRE's lru_cache_entry_add/remove/update for one sync (an unchanged entry is the same
    object: fetch_entries reuses it, so an unchanged sync costs identity checks)."""
    if old is new:
        return NO_CHANGES
    added = updated = 0
    for eid, e in new.items():
        cur = old.get(eid)
        if cur is None:
            added += 1
        elif cur is not e and cur != e:
            updated += 1
    removed = sum(1 for eid in old if eid not in new)
    if added or updated or removed:
        metrics = telemetry.current()
        metrics.incr_counter(LRU_ENTRY_ADD, added)
        metrics.incr_counter(LRU_ENTRY_REMOVE, removed)
        metrics.incr_counter(LRU_ENTRY_UPDATE, updated)
    return EntryChanges(added, updated, removed)


def set_sync_stats(changes: EntryChanges, entries: int, bundles: int) -> None:
    """SPIRE's SyncAuthorizedEntries gauges: entries held, fetched new (missing), fetched again
    (stale), dropped, and bundles held."""
    metrics = telemetry.current()
    metrics.set_gauge(SYNC_ENTRIES_TOTAL, entries)
    metrics.set_gauge(SYNC_ENTRIES_MISSING, changes.added)
    metrics.set_gauge(SYNC_ENTRIES_STALE, changes.updated)
    metrics.set_gauge(SYNC_ENTRIES_DROPPED, changes.removed)
    metrics.set_gauge(SYNC_BUNDLES_TOTAL, bundles)


def count_tainted_x509(cache: WorkloadCache, tainted: list[x509.Certificate]) -> int:
    """Newly tainted X.509 authorities: how many cached SVIDs they signed (mint_svids re-signs
    them, as it does every SVID not signed by a usable root); SPIRE's call counter and sample."""
    metrics = telemetry.current()
    with metrics.call(PROCESS_TAINTED_X509):
        subjects = _subjects(tainted)
        count = sum(1 for svid in cache.svids.values() if _signed_by(svid, subjects))
    metrics.add_sample(TAINTED_X509_SVIDS, count)
    return count


def drop_tainted_jwts(cache: WorkloadCache, key_ids: set[str], new: bool) -> int:
    """Forget JWT-SVIDs signed by tainted keys; SPIRE's call counter and sample when ``new`` keys
    were tainted since the last sync."""
    if not new:
        return cache.jwt_svids.drop_signed_by(key_ids)
    metrics = telemetry.current()
    with metrics.call(PROCESS_TAINTED_JWT):
        dropped = cache.jwt_svids.drop_signed_by(key_ids)
    metrics.add_sample(TAINTED_JWT_SVIDS, dropped)
    return dropped


def _keys_and_csrs(count: int, key_type: str) -> tuple[list[PrivateKeyTypes], list[bytes]]:
    keys: list[PrivateKeyTypes] = [generate_key(key_type) for _ in range(count)]
    return keys, [make_csr(k) for k in keys]


def _chains(results: Any) -> list[Optional[list[x509.Certificate]]]:
    return [chain_from_proto(r.svid.cert_chain) if r.status.code == Status.OK.value else None for r in results]


async def mint_svids(
    client: ServerClient, cache: WorkloadCache, entries: dict[str, Entry], revisions: dict[str, int],
    roots: list[x509.Certificate], key_type: str, rotation: RotationStrategy = DEFAULT_ROTATION,
) -> bool:
    """Mint X.509-SVIDs for workload entries that lack a fresh one; drop the stale. Returns True on change.

    At most ``cache.x509_svid_max_size`` SVIDs are kept, plus those of subscribed entries."""
    now = time.time()
    parents = cache.identity_parents()
    workload = {eid: e for eid, e in entries.items() if e.parent_id in parents}
    changed = False
    for eid in [eid for eid in cache.svids if eid not in workload]:
        cache.forget_svid(eid)
        revisions.pop(eid, None)
        changed = True
    active = cache.subscribed_entry_ids()
    for eid in cache.evict_svids(active):
        revisions.pop(eid, None)
        changed = True
    need = []
    expiring = outdated = 0
    subjects = _subjects(roots)
    for eid, e in workload.items():
        svid = cache.svids.get(eid)
        if svid is None:
            continue
        # Counted as SPIRE's sync counts them: expiring first, then changed entries.
        if _due(svid, now, rotation):
            expiring += 1
        elif revisions.get(eid) != e.revision_number:
            outdated += 1
        elif _signed_by(svid, subjects):
            continue
        need.append(e)
    if expiring or outdated:
        metrics = telemetry.current()
        if expiring:
            metrics.add_sample(EXPIRING_SVIDS, expiring)
        if outdated:
            metrics.add_sample(OUTDATED_SVIDS, outdated)
    missing = sorted((e for eid, e in workload.items() if eid not in cache.svids), key=lambda e: e.id)
    need += [e for e in missing if e.id in active]
    # Entries nobody subscribes to are prefetched while there is room (SPIRE's remainder rule).
    room = cache.x509_svid_max_size - len(cache.svids) - sum(1 for e in missing if e.id in active)
    need += [e for e in missing if e.id not in active][:max(room, 0)]
    batches = [need[i : i + BATCH] for i in range(0, len(need), BATCH)]
    # Keys and CSRs are made in a thread (never on the event loop serving the Workload API),
    # the next batch's while the server signs this one.
    prepared = asyncio.ensure_future(asyncio.to_thread(_keys_and_csrs, len(batches[0]), key_type)) if batches else None
    try:
        for n, batch in enumerate(batches):
            assert prepared is not None
            keys, csrs = await prepared
            prepared = None
            if n + 1 < len(batches):
                prepared = asyncio.ensure_future(asyncio.to_thread(_keys_and_csrs, len(batches[n + 1]), key_type))
            params = [svid_pb2.NewX509SVIDParams(entry_id=e.id, csr=csr) for e, csr in zip(batch, csrs)]
            resp = await client.svid.BatchNewX509SVID(svid_pb2.BatchNewX509SVIDRequest(params=params),
                                                      timeout=RPC_TIMEOUT)
            chains = await asyncio.to_thread(_chains, resp.results)
            for e, k, r, chain in zip(batch, keys, resp.results, chains):
                if chain is None:
                    _log.warning("Failed to mint X509-SVID", extra=log.fields(entry_id=e.id, spiffe_id=e.spiffe_id, error=r.status.message))
                    continue
                cache.svids[e.id] = CachedSVID(e.id, e.spiffe_id, chain, k, e.hint)
                if rotation.falls_back((chain[0].not_valid_after_utc - chain[0].not_valid_before_utc).total_seconds()):
                    _log.warning(FALLBACK_WARNING, extra=log.fields(spiffe_id=e.spiffe_id, entry_id=e.id))
                revisions[e.id] = e.revision_number
                changed = True
                _log.debug("Minted X509-SVID", extra=log.fields(entry_id=e.id, spiffe_id=e.spiffe_id))
    finally:
        if prepared is not None:
            prepared.cancel()
    return changed
