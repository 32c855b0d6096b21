"""SPIRE's metric keys (pkg/common/telemetry/names.go and doc/telemetry/telemetry.md) and how
an RPC's full method becomes its ``rpc.<service>.<method>`` key.

docs/metrics.md lists what each daemon emits; tests/unit/common/telemetry/test_docs.py holds it to
the keys below.
"""

from __future__ import annotations

import re

from .metrics import Key

# --- both daemons ----------------------------------------------------------------------
STARTED: Key = ("started",)  # gauge, labels version, trust_domain_id
UPTIME: Key = ("uptime_in_ms",)  # gauge

# --- server ----------------------------------------------------------------------------
CA_SIGN_X509_SVID: Key = ("server_ca", "sign", "x509_svid")  # counter
CA_SIGN_X509_CA_SVID: Key = ("server_ca", "sign", "x509_ca_svid")  # counter
CA_SIGN_JWT_SVID: Key = ("server_ca", "sign", "jwt_svid")  # counter
CA_X509_CA_PREPARE: Key = ("ca", "manager", "x509_ca", "prepare")  # call counter
CA_X509_CA_ACTIVATE: Key = ("ca", "manager", "x509_ca", "activate")  # counter
CA_JWT_KEY_PREPARE: Key = ("ca", "manager", "jwt_key", "prepare")  # call counter
CA_JWT_KEY_ACTIVATE: Key = ("manager", "jwt_key", "activate")  # counter (SPIRE's key has no "ca")
CA_X509_CA_EXPIRATION: Key = ("manager", "x509_ca", "rotate", "expiration")  # gauge, trust_domain_id
CA_X509_CA_TTL: Key = ("manager", "x509_ca", "rotate", "ttl")  # gauge, trust_domain_id
CA_BUNDLE_PRUNE: Key = ("ca", "manager", "bundle", "prune")  # call counter
CA_BUNDLE_PRUNED: Key = ("ca", "manager", "bundle", "pruned")  # counter
SERVER_SVID_ROTATE: Key = ("svid", "rotate")  # call counter
ENTRY_CACHE_RELOAD: Key = ("entry", "cache", "reload")  # call counter
ENTRY_CACHE_COUNT: Key = ("entry", "entries_by_entryid_cache", "count")  # gauge
AGENTS_COUNT: Key = ("node", "agents_by_id_cache", "count")  # gauge
NODE_ATTEST: Key = ("node_attestor", "attest")  # call counter, label attestor (spire_py's)
BUNDLE_MANAGER_FETCH: Key = ("bundle_manager", "fetch", "federated_bundle")  # call counter, trust_domain_id
BUNDLE_MANAGER_UPDATE: Key = ("bundle_manager", "update", "federated_bundle")  # counter, trust_domain_id
NODE_MANAGER_PRUNE: Key = ("node", "manager", "prune")  # call counter (pruning expired agents)
ENTRY_MANAGER_PRUNE: Key = ("registration_entry", "manager", "prune")  # call counter (pruning expired entries)
# KeyManager calls (SPIRE's wrapper: GetKey counts as get_public_key, GetKeys as get_public_keys)
SERVER_KM_GENERATE_KEY: Key = ("server_key_manager", "generate_key")  # call counter
SERVER_KM_GET_PUBLIC_KEY: Key = ("server_key_manager", "get_public_key")  # call counter
SERVER_KM_GET_PUBLIC_KEYS: Key = ("server_key_manager", "get_public_keys")  # call counter

_B, _E, _N, _T = "bundle", "registration_entry", "node", "join_token"

# --- server datastore: our DataStore method -> SPIRE's call counter key (doc/telemetry/telemetry.md). Several of ours map to one of
# SPIRE's where SPIRE's single call does both (fetch_entries is FetchRegistrationEntries).
DATASTORE: dict[str, Key] = {
    "create_bundle": ("datastore", _B, "create"),
    "fetch_bundle": ("datastore", _B, "fetch"),
    "list_bundles": ("datastore", _B, "list"),
    "count_bundles": ("datastore", _B, "count"),
    "update_bundle": ("datastore", _B, "update"),
    "set_bundle": ("datastore", _B, "set"),
    "append_bundle": ("datastore", _B, "append"),
    "delete_bundle": ("datastore", _B, "delete"),
    "prune_bundle": ("datastore", _B, "prune"),
    "taint_x509_ca": ("datastore", _B, "x509", "taint"),
    "revoke_x509_ca": ("datastore", _B, "x509", "revoke"),
    "taint_jwt_key": ("datastore", _B, "jwt", "taint"),
    "revoke_jwt_key": ("datastore", _B, "jwt", "revoke"),
    "create_entry": ("datastore", _E, "create"),
    "create_entries_if_not_exist": ("datastore", _E, "create"),
    "fetch_entry": ("datastore", _E, "fetch"),
    "fetch_entries": ("datastore", _E, "fetch"),
    "list_entries": ("datastore", _E, "list"),
    "count_entries": ("datastore", _E, "count"),
    "update_entry": ("datastore", _E, "update"),
    "delete_entry": ("datastore", _E, "delete"),
    "prune_entries": ("datastore", _E, "prune"),
    "list_entry_events": ("datastore", "registration_entry_event", "list"),
    "fetch_entry_events": ("datastore", "registration_entry_event", "fetch"),
    "prune_entry_events": ("datastore", "registration_entry_event", "prune"),
    "create_attested_node": ("datastore", _N, "create"),
    "fetch_attested_node": ("datastore", _N, "fetch"),
    "list_attested_nodes": ("datastore", _N, "list"),
    "count_attested_nodes": ("datastore", _N, "count"),
    "update_attested_node": ("datastore", _N, "update"),
    "delete_attested_node": ("datastore", _N, "delete"),
    "prune_attested_expired_nodes": ("datastore", _N, "prune"),
    "get_node_selectors": ("datastore", _N, "selectors", "fetch"),
    "list_node_selectors": ("datastore", _N, "selectors", "list"),
    "set_node_selectors": ("datastore", _N, "selectors", "set"),
    "list_node_events": ("datastore", "node_event", "list"),
    "fetch_node_events": ("datastore", "node_event", "fetch"),
    "prune_node_events": ("datastore", "node_event", "prune"),
    "create_join_token": ("datastore", _T, "create"),
    "take_join_token": ("datastore", _T, "fetch"),
    "fetch_join_token": ("datastore", _T, "fetch"),
    "prune_join_tokens": ("datastore", _T, "prune"),
    "create_federation_relationship": ("datastore", "federation_relationship", "create"),
    "fetch_federation_relationship": ("datastore", "federation_relationship", "fetch"),
    "list_federation_relationships": ("datastore", "federation_relationship", "list"),
    "count_federation_relationships": ("datastore", "federation_relationship", "list"),
    "update_federation_relationship": ("datastore", "federation_relationship", "update"),
    "delete_federation_relationship": ("datastore", "federation_relationship", "delete"),
    "find_ca_journal": ("datastore", "ca_journal", "fetch"),
    "list_ca_journals": ("datastore", "ca_journal", "list"),
    "set_ca_journal": ("datastore", "ca_journal", "set"),
    "prune_ca_journals": ("datastore", "ca_journal", "prune"),
}

# --- agent -----------------------------------------------------------------------------
AGENT_NODE_ATTEST: Key = ("node", "attestor", "new_svid")  # call counter, label attestor
AGENT_SVID_ROTATE: Key = ("agent_svid", "rotate")  # call counter
SYNC_ENTRIES: Key = ("manager", "sync", "fetch_entries_updates")  # call counter
SYNC_SVIDS: Key = ("manager", "sync", "fetch_svids_updates")  # call counter
CACHE_RECORDS: Key = ("lru_cache_record_map_size",)  # gauge
CACHE_SVIDS: Key = ("lru_cache_svid_map_size",)  # gauge
WORKLOAD_ATTESTATION: Key = ("workload_api", "workload_attestation")  # call counter
WORKLOAD_ATTESTOR: Key = ("workload_api", "workload_attestor")  # call counter, label attestor
DISCOVERED_SELECTORS: Key = ("workload_api", "discovered_selectors")  # sample
RATE_LIMIT_EXCEEDED: Key = ("workload_api", "rate_limit_exceeded")  # counter, label method (full gRPC method)
JWT_BUNDLES_UPDATE: Key = ("workload_api", "bundles_update", "jwt")  # counter
JWT_SVID_CACHE_SIZE: Key = ("jwt_svid_cache_size",)  # gauge
SYNC_ENTRIES_TOTAL: Key = ("sync_entries_total",)  # gauges set by a SyncAuthorizedEntries sync
SYNC_ENTRIES_MISSING: Key = ("sync_entries_missing",)
SYNC_ENTRIES_STALE: Key = ("sync_entries_stale",)
SYNC_ENTRIES_DROPPED: Key = ("sync_entries_dropped",)
SYNC_BUNDLES_TOTAL: Key = ("sync_bundles_total",)
SVID_TYPE_X509 = (("svid_type", "X509"),)  # the LRU gauges' label, as SPIRE's X.509 cache sets it
LRU_ENTRY_ADD: Key = ("lru_cache_entry_add",)  # counter
LRU_ENTRY_REMOVE: Key = ("lru_cache_entry_remove",)  # counter
LRU_ENTRY_UPDATE: Key = ("lru_cache_entry_update",)  # counter
EXPIRING_SVIDS: Key = ("cache_manager", "expiring_svids")  # sample (the workload cache has no suffix)
OUTDATED_SVIDS: Key = ("cache_manager", "outdated_svids")  # sample
TAINTED_X509_SVIDS: Key = ("cache_manager", "tainted_x509_svids", "workload")  # sample
TAINTED_JWT_SVIDS: Key = ("cache_manager", "tainted_jwt_svids", "workload")  # sample
PROCESS_TAINTED_X509: Key = ("cache_manager", "workload", "process_tainted_x509_svids")  # call counter
PROCESS_TAINTED_JWT: Key = ("cache_manager", "workload", "process_tainted_jwt_svids")  # call counter
# What SPIRE's agent wrapper counts (its telemetry.md still lists the old plugin's
# generate_key_pair/fetch_private_key/store_private_key, which nothing emits).
AGENT_KM_GENERATE_KEY: Key = ("agent_key_manager", "generate_key")  # call counter
AGENT_KM_GET_KEY: Key = ("agent_key_manager", "get_key")  # call counter
DELEGATED_FIRST_UPDATE: Key = ("delegated_identity_api", "subscribe_x509_svids", "first_update", "elapsed_time")  # sample

# Per-service "connections" (SPIRE's endpoints middleware: one per RPC, the gauge counts RPCs in
# flight): raw gRPC service -> (counter, gauge).
CONNECTIONS: dict[str, tuple[Key, Key]] = {
    service: ((api, "connection"), (api, "connections")) for service, api in (
        ("SpiffeWorkloadAPI", "workload_api"),
        ("envoy.service.secret.v3.SecretDiscoveryService", "sds_api"),
        ("spire.api.agent.delegatedidentity.v1.DelegatedIdentity", "delegated_identity_api"),
        ("spire.agent.debug.v1.Debug", "debug_api"),
        ("spire.api.agent.logger.v1.Logger", "logger_api"),
    )
}

# --- RPCs ------------------------------------------------------------------------------
_SERVICE_NAMES = (
    ("spire.api.server.", ""),
    ("SpiffeWorkloadAPI", "WorkloadAPI"),
    ("envoy.service.secret.v3.SecretDiscoveryService", "SDS.v3"),
    ("grpc.health.v1.Health", "Health"),
    ("spire.api.agent.delegatedidentity.v1.DelegatedIdentity", "DelegatedIdentity"),
)


def metric_key(name: str) -> str:
    """PascalCase to snake_case as SPIRE does it (``FetchX509SVID`` -> ``fetch_x509_svid``);
    anything not a letter or digit becomes ``_``."""
    out: list[str] = []
    for i, ch in enumerate(name):
        if not ch.isalnum():
            out.append("_")
            continue
        lower = ch.lower()
        if (ch != lower and 0 < i < len(name) - 1 and (name[i + 1].islower() or name[i - 1].islower())
                and out[-1] != "_"):
            out.append("_")
        out.append(lower)
    return "".join(out)


def rpc_names(full_method: str) -> tuple[str, Key]:
    """``/spire.api.server.agent.v1.Agent/AttestAgent`` ->
    (``agent.v1.Agent/AttestAgent``, ``("rpc", "agent", "v1", "agent", "attest_agent")``)."""
    service, _, method = full_method.lstrip("/").partition("/")
    for long, short in _SERVICE_NAMES:
        service = service.replace(long, short)
    return f"{service}/{method}", ("rpc", *(metric_key(p) for p in service.split(".")), metric_key(method))


_PROM_INVALID = re.compile(r"[^a-zA-Z0-9_]")


def prometheus_name(name: Key) -> str:
    """Key parts joined with ``_``, anything Prometheus refuses turned into ``_`` (go-metrics')."""
    return _PROM_INVALID.sub("_", "_".join(name))


# --- what each daemon emits (docs/metrics.md is generated from this) ------------------------
CALL, COUNT, GAUGE_, SAMPLE_ = "Call Counter", "Counter", "Gauge", "Sample"
RPC: Key = ("rpc", "<service>", "<method>")

METRICS: tuple[tuple[str, str, Key, str, str], ...] = (
    # (daemon, type, key, labels, description)
    ("both", CALL, RPC, "method, status", "Every gRPC method served (server APIs, Workload API, health)."),
    ("both", GAUGE_, STARTED, "version, trust_domain_id", "Set to 1 at start-up."),
    ("both", GAUGE_, UPTIME, "", "Milliseconds since telemetry started, updated every second."),
    ("server", COUNT, CA_SIGN_X509_SVID, "", "X.509-SVIDs signed (workload, agent and server SVIDs)."),
    ("server", COUNT, CA_SIGN_X509_CA_SVID, "", "Downstream X.509 CAs signed."),
    ("server", COUNT, CA_SIGN_JWT_SVID, "", "JWT-SVIDs signed."),
    ("server", CALL, CA_X509_CA_PREPARE, "status", "The CA manager preparing an X.509 CA (a failure is a failed rotation)."),
    ("server", COUNT, CA_X509_CA_ACTIVATE, "", "X.509 CAs activated."),
    ("server", CALL, CA_JWT_KEY_PREPARE, "status", "The CA manager preparing a JWT key."),
    ("server", COUNT, CA_JWT_KEY_ACTIVATE, "", "JWT keys activated."),
    ("server", GAUGE_, CA_X509_CA_EXPIRATION, "trust_domain_id", "The active X.509 CA's expiry (Unix seconds)."),
    ("server", GAUGE_, CA_X509_CA_TTL, "trust_domain_id", "Seconds left before the active X.509 CA expires."),
    ("server", CALL, CA_BUNDLE_PRUNE, "status", "Pruning expired authorities from the bundle."),
    ("server", COUNT, CA_BUNDLE_PRUNED, "", "Bundle prunes that removed an authority."),
    ("server", CALL, SERVER_SVID_ROTATE, "status", "The server rotating its own SVID."),
    ("server", CALL, ENTRY_CACHE_RELOAD, "status", "The entry cache catching up with the datastore."),
    ("server", GAUGE_, ENTRY_CACHE_COUNT, "", "Registration entries in the entry cache."),
    ("server", GAUGE_, AGENTS_COUNT, "", "Attested agents in the datastore."),
    ("server", CALL, NODE_ATTEST, "attestor, status", "Node attestation by attestor and result (spire_py's; SPIRE counts the AttestAgent RPC only)."),
    ("server", CALL, BUNDLE_MANAGER_FETCH, "trust_domain_id, status", "The bundle manager fetching a federated bundle."),
    ("server", COUNT, BUNDLE_MANAGER_UPDATE, "trust_domain_id", "The bundle manager storing a changed federated bundle."),
    ("server", CALL, NODE_MANAGER_PRUNE, "status", "Pruning expired agents (prune_attested_nodes_expired_for)."),
    ("server", CALL, ENTRY_MANAGER_PRUNE, "status", "Pruning expired registration entries (every 5 minutes)."),
    ("server", CALL, SERVER_KM_GENERATE_KEY, "status", "The KeyManager generating a CA or JWT key."),
    ("server", CALL, SERVER_KM_GET_PUBLIC_KEY, "status", "The KeyManager fetching a key by id."),
    ("server", CALL, SERVER_KM_GET_PUBLIC_KEYS, "status", "The KeyManager listing its keys."),
    *(("server", CALL, key, "status", f"DataStore calls: `{key[-1]}` on {' '.join(key[1:-1])} records.")
      for key in sorted(set(DATASTORE.values()))),
    ("agent", CALL, AGENT_NODE_ATTEST, "attestor, status", "The agent attesting to the server."),
    ("agent", CALL, AGENT_SVID_ROTATE, "status", "The agent renewing its SVID."),
    ("agent", CALL, SYNC_ENTRIES, "status", "A sync fetching entries and bundles (elapsed_time: sync duration)."),
    ("agent", CALL, SYNC_SVIDS, "status", "A sync having SVIDs signed."),
    ("agent", GAUGE_, CACHE_RECORDS, "svid_type", "Entries the agent holds after the last sync (svid_type X509)."),
    ("agent", GAUGE_, CACHE_SVIDS, "svid_type", "X.509-SVIDs in the agent's cache (svid_type X509)."),
    ("agent", CALL, WORKLOAD_ATTESTATION, "status", "Attesting a Workload API caller (all attestors)."),
    ("agent", CALL, WORKLOAD_ATTESTOR, "attestor, status", "One workload attestor's latency and result."),
    ("agent", SAMPLE_, DISCOVERED_SELECTORS, "", "Selectors found for a caller."),
    *(row for keys, name in zip(CONNECTIONS.values(), ("Workload API", "SDS API", "Delegated Identity API",
                                                       "Debug API", "Logger API"))
      for row in (("agent", COUNT, keys[0], "", f"{name} calls (SPIRE counts each RPC as a connection)."),
                  ("agent", GAUGE_, keys[1], "", f"{name} calls in progress (open streams included)."))),
    ("agent", COUNT, RATE_LIMIT_EXCEEDED, "method",
     "Workload API/SDS calls refused by `experimental.ratelimit` (method: the full gRPC method)."),
    ("agent", COUNT, JWT_BUNDLES_UPDATE, "", "JWT bundle sets sent on FetchJWTBundles streams."),
    ("agent", GAUGE_, JWT_SVID_CACHE_SIZE, "", "JWT-SVIDs in the agent's JWT-SVID cache."),
    ("agent", GAUGE_, SYNC_ENTRIES_TOTAL, "", "Entries held after the last sync (SyncAuthorizedEntries only, as SPIRE)."),
    ("agent", GAUGE_, SYNC_ENTRIES_MISSING, "", "Entries the last sync fetched because the agent lacked them."),
    ("agent", GAUGE_, SYNC_ENTRIES_STALE, "", "Entries the last sync fetched again because they changed."),
    ("agent", GAUGE_, SYNC_ENTRIES_DROPPED, "", "Entries the last sync dropped."),
    ("agent", GAUGE_, SYNC_BUNDLES_TOTAL, "", "Bundles held after the last sync (own and federated)."),
    ("agent", COUNT, LRU_ENTRY_ADD, "", "Entries added to the agent's cache by a sync."),
    ("agent", COUNT, LRU_ENTRY_REMOVE, "", "Entries removed from the agent's cache by a sync."),
    ("agent", COUNT, LRU_ENTRY_UPDATE, "", "Entries changed in the agent's cache by a sync."),
    ("agent", SAMPLE_, EXPIRING_SVIDS, "", "X.509-SVIDs a sync renews because they reached half their life (when > 0)."),
    ("agent", SAMPLE_, OUTDATED_SVIDS, "", "X.509-SVIDs a sync renews because their entry changed (when > 0)."),
    ("agent", CALL, PROCESS_TAINTED_X509, "status", "Processing newly tainted X.509 authorities."),
    ("agent", SAMPLE_, TAINTED_X509_SVIDS, "", "Cached X.509-SVIDs signed by a newly tainted authority (re-signed)."),
    ("agent", CALL, PROCESS_TAINTED_JWT, "status", "Processing newly tainted JWT keys."),
    ("agent", SAMPLE_, TAINTED_JWT_SVIDS, "", "Cached JWT-SVIDs dropped because their key was tainted."),
    ("agent", CALL, AGENT_KM_GENERATE_KEY, "status", "The KeyManager generating a key (agent SVID keys)."),
    ("agent", CALL, AGENT_KM_GET_KEY, "status", "The KeyManager fetching a key."),
    ("agent", SAMPLE_, DELEGATED_FIRST_UPDATE, "",
     "Delegated Identity API: ms from SubscribeToX509SVIDs to its first X.509-SVID update."),
)


def prometheus_names(daemon: str, prefix: str, rpc_methods: tuple[str, ...] = ()) -> set[str]:
    """Every Prometheus series name ``daemon`` ("server"/"agent") can expose with ``prefix``."""
    out = set()
    for side, kind, key, _, _ in METRICS:
        if side not in (daemon, "both"):
            continue
        keys = [rpc_names(m)[1] for m in rpc_methods] if key == RPC else [key]
        for k in keys:
            base = prometheus_name((prefix, *k))
            if kind == COUNT:
                out.add(base + "_total")
            elif kind == CALL:
                out |= {base + "_total", base + "_elapsed_time_count", base + "_elapsed_time_sum"}
            elif kind == SAMPLE_:
                out |= {base + "_count", base + "_sum"}
            else:
                out.add(base)
    return out


def markdown() -> str:
    """docs/metrics.md."""
    lines = [
        "# Metrics",
        "",
        "Generated by `python -m spire_py.common.telemetry.names > docs/metrics.md` from",
        "`src/spire_py/common/telemetry/names.py`; a test keeps the two equal.",
        "",
        "Keys and labels are SPIRE's (`doc/telemetry/telemetry.md`). Each sink spells them its own way:",
        "",
        "| Sink | `rpc.agent.v1.agent.attest_agent`, status OK, as |",
        "|---|---|",
        "| Prometheus | `spire_server_rpc_agent_v1_agent_attest_agent_total{status=\"OK\",method=\"agent.v1.Agent/AttestAgent\",host=\"...\"}` (counters end in `_total`; samples are summaries: `_count`, `_sum`) |",
        "| DogStatsd | `spire_server.rpc.agent.v1.agent.attest_agent:1\\|c\\|#status:OK,...` |",
        "| Statsd | `spire_server.rpc.agent.v1.agent.attest_agent.agent.v1.Agent/AttestAgent.OK.<host>:1\\|c` (label values join the name) |",
        "| M3 | `rpc_agent_v1_agent_attest_agent`, tags `status`, `method`, `host`; batch tags `service`, `env` |",
        "| InMem | `[C] 'spire_server.rpc.agent.v1.agent.attest_agent;method=...;status=OK': Sum: 1.000` (on SIGUSR1) |",
        "",
        "A call counter is a counter on its key plus a sample of its duration in milliseconds on",
        "`<key>.elapsed_time`, both with a `status` label (the gRPC code as Go spells it: `OK`,",
        "`PermissionDenied`, ...). Every metric also gets `host` (unless `EnableHostnameLabel = false`)",
        "and `trust_domain` (with `EnableTrustDomainLabel = true`). The prefix is `MetricPrefix`, by",
        "default `spire_server` or `spire_agent`.",
        "",
        "`Prometheus { tls { ... } }` serves `/metrics` over HTTPS as SPIRE does: `cert_file` and",
        "`key_file`, or the daemon's own X.509-SVID with `use_spire_svid = true` (the newest at each",
        "handshake); `client_ca_file` requires a client certificate from that CA, and",
        "`authorized_spiffe_ids` a client X.509-SVID that chains to the trust domain's bundle with",
        "one of those IDs (IDs of the daemon's own trust domain only). TLS 1.2 at least.",
        "",
        "RPC keys come from the gRPC method as SPIRE makes them: `spire.api.server.` dropped,",
        "`SpiffeWorkloadAPI` shortened to `WorkloadAPI`, each part snake_cased",
        "(`/SpiffeWorkloadAPI/FetchX509SVID` is `rpc.workload_api.fetch_x509svid`).",
        "",
        "| Daemon | Type | Key | Labels | Description |",
        "|---|---|---|---|---|",
    ]
    for side, kind, key, labels, text in METRICS:
        lines.append(f"| {side} | {kind} | `{'.'.join(key)}` | {labels} | {text} |")
    lines += [
        "",
        "The agent's `<api>.connection` counters and `<api>.connections` gauges count RPCs as",
        "SPIRE's do (its middleware counts each call, and the gauge is the calls in flight, open",
        "streams included), not socket connections. `agent_key_manager` counts what SPIRE's",
        "wrapper counts (`generate_key`, `get_key`); SPIRE's telemetry.md still lists the old",
        "plugin interface's `generate_key_pair`/`fetch_private_key`/`store_private_key`.",
        "",
        "Not emitted (SPIRE has them): `server_key_manager.sign_data` (the CA signs with the",
        "key object the KeyManager hands out), the event-based cache gauges (`node.agents_by_expiresat_cache.count`,",
        "`entry.nodealiases_by_*_cache.count`, `*.skipped_*_event_ids.count`: the entry cache is",
        "not event-based) and the SVIDStore cache's `svid_store` samples.",
        "",
    ]
    return "\n".join(lines)


if __name__ == "__main__":
    print(markdown(), end="")
