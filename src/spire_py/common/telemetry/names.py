"""SPIRE's metric keys (pkg/common/telemetry/names.go and doc/telemetry/telemetry.md) and how
an RPC's full method becomes its ``rpc.<service>.<method>`` key.

docs/metrics.md lists what each daemon emits; tests/unit/test_telemetry_docs.py holds it to
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
