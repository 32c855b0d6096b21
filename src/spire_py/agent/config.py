"""spire-agent's configuration: the ``agent``, ``plugins``, ``health_checks`` and ``telemetry`` sections.

Keys, defaults and checks follow SPIRE's agent reference and ``spire-agent run``;
every documented key is accepted; those nothing acts on yet are listed in
``common.config.unacted`` and warned about when set.
Durations are seconds. Relative socket and data paths are made absolute against
the working directory, as SPIRE resolves them.
"""

from __future__ import annotations

import os
import sys
import urllib.parse
from dataclasses import dataclass, field
from typing import Any, Mapping, Optional

from ..common.config import (
    AGENT_PLUGIN_RULES,
    BOOL,
    DURATION,
    INT,
    STR,
    STR_LIST,
    Block,
    BlockList,
    ConfigError,
    Ctx,
    Field,
    HealthChecksConfig,
    PluginSpec,
    Schema,
    SourceInfo,
    TelemetryConfig,
    Values,
    absolute,
    apply_overrides,
    check_top_level,
    load_file,
    merge_blocks,
    parse_plugins,
)
from ..common.config.sections import (
    HEALTH_CHECKS_SCHEMA,
    LOG_FORMATS,
    TELEMETRY_SCHEMA,
    check_log_level,
    check_port,
    health_checks_from,
    normalize_log_level,
    parse_trust_domain,
    telemetry_from,
)
from ..common.config.source import read_bounded
from ..common.config.fflag import check_feature_flags
from ..common.config.unacted import warn_unacted
from ..common.spiffeid import SpiffeId, SpiffeIdError

DEFAULT_SOCKET_PATH = "/tmp/spire-agent/public/api.sock"
WORKLOAD_KEY_TYPES = ("rsa-2048", "ec-p256", "ec-p384")
MIN_AVAILABILITY_TARGET = 24 * 3600

# spire-agent run flag -> agent key
FLAG_KEYS = {
    "serverAddress": "server_address",
    "serverPort": "server_port",
    "socketPath": "socket_path",
    "trustDomain": "trust_domain",
    "trustBundle": "trust_bundle_path",
    "trustBundleUrl": "trust_bundle_url",
    "trustBundleFormat": "trust_bundle_format",
    "joinToken": "join_token",
    "joinTokenFile": "join_token_file",
    "logLevel": "log_level",
    "logFile": "log_file",
    "logFormat": "log_format",
    "logSourceLocation": "log_source_location",
    "dataDir": "data_dir",
    "insecureBootstrap": "insecure_bootstrap",
    "allowUnauthenticatedVerifiers": "allow_unauthenticated_verifiers",
    "rebootstrapMode": "rebootstrap_mode",
    "rebootstrapDelay": "rebootstrap_delay",
    "disableWorkloadAPI": "disable_workload_api",
    "disableSDSAPI": "disable_sds_api",
}


def _non_negative(v: int) -> Optional[str]:
    return "must not be negative" if v < 0 else None


_SDS = Schema(
    [
        Field("default_svid_name", STR, default="default"),
        Field("default_bundle_name", STR, default="ROOTCA"),
        Field("default_all_bundles_name", STR, default="ALL"),
        Field("disable_spiffe_cert_validation", BOOL, default=False),
    ],
    unknown="warn",  # SPIRE does not check sds keys
)
_RATELIMIT = Schema(
    [Field(name, INT, default=0, check=_non_negative) for name in (
        "fetch_x509_svid", "fetch_jwt_svid", "fetch_x509_bundles", "fetch_jwt_bundles", "stream_secrets",
        "fetch_secrets")]
)
_BROKER_REFERENCE_TYPE = Schema([Field("type_url", STR, default=""), Field("allow_over_tcp", BOOL, default=False)])
_BROKER_ENTRY = Schema([Field("id", STR, default=""), Field("allowed_reference_types", BlockList(_BROKER_REFERENCE_TYPE))])
_BROKER = Schema(
    [Field("socket_path", STR, default=""), Field("bind_address", STR, default=""), Field("brokers", BlockList(_BROKER_ENTRY))]
)
_EXPERIMENTAL = Schema(
    [
        Field("sync_interval", DURATION, default=None),
        Field("jwt_svid_cache_hit_timeout", DURATION, default=None),
        Field("named_pipe_name", STR, default=""),
        Field("admin_named_pipe_name", STR, default=""),
        Field("use_sync_authorized_entries", BOOL, default=None,
              deprecated="use_sync_authorized_entries is deprecated; the option to disable it will be removed"),
        Field("require_pq_kem", BOOL, default=False),
        Field("ratelimit", Block(_RATELIMIT)),
        Field("broker", Block(_BROKER), default=None),
        Field("feature_flags", STR_LIST),
    ],
    unknown="warn",  # SPIRE does not check experimental keys
)

AGENT_SCHEMA = Schema(
    [
        Field("admin_socket_path", STR, default=""),
        Field("allow_unauthenticated_verifiers", BOOL, default=False),
        Field("allowed_foreign_jwt_claims", STR_LIST),
        Field("authorized_delegates", STR_LIST),
        Field("availability_target", DURATION, default=None),
        Field("data_dir", STR, default="."),
        Field("disable_sds_api", BOOL, default=False),
        Field("disable_workload_api", BOOL, default=False),
        Field("experimental", Block(_EXPERIMENTAL)),
        Field("insecure_bootstrap", BOOL, default=False),
        Field("join_token", STR, default=""),
        Field("join_token_file", STR, default=""),
        Field("jwt_svid_cache_max_size", INT, default=0, check=_non_negative),
        Field("log_file", STR, default=""),
        Field("log_format", STR, default="text", choices=LOG_FORMATS),
        Field("log_level", STR, default="INFO", check=check_log_level),
        Field("log_selectors", STR_LIST),
        Field("log_source_location", BOOL, default=False),
        Field("profiling_enabled", BOOL, default=False),
        Field("profiling_freq", INT, default=0),
        Field("profiling_names", STR_LIST),
        Field("profiling_port", INT, default=0, check=check_port),
        Field("rebootstrap_delay", DURATION, default=600),
        Field("rebootstrap_mode", STR, default="never", choices=("never", "auto", "always")),
        Field("retry_bootstrap", BOOL, default=None,
              deprecated="retry_bootstrap is no longer supported by SPIRE and is ignored"),
        Field("sds", Block(_SDS)),
        Field("server_address", STR, default=""),
        Field("server_port", INT, default=8081, check=check_port),
        Field("socket_path", STR, default=DEFAULT_SOCKET_PATH),
        Field("trust_bundle_format", STR, default="pem", choices=("pem", "spiffe")),
        Field("trust_bundle_path", STR, default=""),
        Field("trust_bundle_spiffe_workload_api", STR, default=""),
        Field("trust_bundle_unix_socket", STR, default=""),
        Field("trust_bundle_url", STR, default=""),
        Field("trust_domain", STR, required=True),
        Field("workload_x509_svid_key_type", STR, default="ec-p256", choices=WORKLOAD_KEY_TYPES),
        Field("x509_svid_cache_max_size", INT, default=0, check=_non_negative),
    ]
)


@dataclass
class SDSConfig:
    default_svid_name: str = "default"
    default_bundle_name: str = "ROOTCA"
    default_all_bundles_name: str = "ALL"
    disable_spiffe_cert_validation: bool = False


@dataclass
class BrokerConfig:
    socket_path: str = ""
    bind_address: str = ""
    # [{"id": "spiffe://...", "allowed_reference_types": [{"type_url": ..., "allow_over_tcp": bool}]}]
    brokers: list[dict[str, Any]] = field(default_factory=list)


@dataclass
class AgentConfig:
    trust_domain: str
    server_address: str
    server_port: int = 8081
    data_dir: str = "."
    socket_path: str = DEFAULT_SOCKET_PATH
    admin_socket_path: str = ""
    trust_bundle_path: str = ""
    trust_bundle_url: str = ""
    trust_bundle_unix_socket: str = ""
    trust_bundle_spiffe_workload_api: str = ""
    trust_bundle_format: str = "pem"
    insecure_bootstrap: bool = False
    rebootstrap_mode: str = "never"
    rebootstrap_delay: float = 600
    join_token: str = ""  # from join_token, or read from join_token_file
    join_token_file: str = ""
    log_file: str = ""
    log_level: str = "INFO"  # DEBUG, INFO, WARN or ERROR
    log_format: str = "text"
    log_source_location: bool = False
    log_selectors: list[str] = field(default_factory=list)
    allow_unauthenticated_verifiers: bool = False
    allowed_foreign_jwt_claims: list[str] = field(default_factory=list)
    authorized_delegates: list[str] = field(default_factory=list)
    disable_workload_api: bool = False
    disable_sds_api: bool = False
    sds: SDSConfig = field(default_factory=SDSConfig)
    workload_x509_svid_key_type: str = "ec-p256"
    availability_target: Optional[float] = None
    x509_svid_cache_max_size: int = 0
    jwt_svid_cache_max_size: int = 0
    profiling_enabled: bool = False
    profiling_port: int = 0
    profiling_freq: int = 0
    profiling_names: list[str] = field(default_factory=list)
    # experimental { ... }: the block as written, and its known keys typed
    experimental: dict[str, Any] = field(default_factory=dict)
    sync_interval: Optional[float] = None  # None: the agent's default
    jwt_svid_cache_hit_timeout: Optional[float] = None
    use_sync_authorized_entries: bool = True
    workload_api_ratelimit: dict[str, int] = field(default_factory=dict)  # method -> calls/s, 0 = off
    broker: Optional[BrokerConfig] = None
    feature_flags: list[str] = field(default_factory=list)
    plugins: list[PluginSpec] = field(default_factory=list)
    health_checks: HealthChecksConfig = field(default_factory=HealthChecksConfig)
    telemetry: TelemetryConfig = field(default_factory=TelemetryConfig)
    path: Optional[str] = None  # the config file
    source: Optional[SourceInfo] = field(default=None, repr=False)
    warnings: list[str] = field(default_factory=list)  # for the caller to log

    def plugins_of(self, ptype: str) -> list[PluginSpec]:
        return [p for p in self.plugins if p.type == ptype]

    def plugin(self, ptype: str) -> Optional[PluginSpec]:
        """The (first) plugin of a type, or None."""
        found = self.plugins_of(ptype)
        return found[0] if found else None


def load_agent_config(
    path: str, *, expand_env: bool = False, overrides: Optional[Mapping[str, Any]] = None
) -> AgentConfig:
    """Load and check an agent config file; ``overrides`` are spire-agent run flags
    (serverAddress, serverPort, socketPath, trustDomain, trustBundle, trustBundleUrl,
    joinToken, logLevel, dataDir, insecureBootstrap, ...) and win over the file. Raises ConfigError."""
    raw, source = load_file(path, expand_env)
    return agent_config_from(raw, source, overrides)


def agent_config_from(
    raw: dict[str, Any], source: Optional[SourceInfo] = None, overrides: Optional[Mapping[str, Any]] = None
) -> AgentConfig:
    ctx = Ctx(source)
    check_top_level(ctx, raw, ("agent", "plugins", "telemetry", "health_checks"))
    apply_overrides(ctx, raw, "agent", FLAG_KEYS, overrides)
    a = AGENT_SCHEMA.parse(ctx, ["agent"], merge_blocks(ctx, ["agent"], raw.get("agent")))

    _check_sources(ctx, a)
    cfg = AgentConfig(
        trust_domain=parse_trust_domain(ctx, ["agent", "trust_domain"], a["trust_domain"]),
        server_address=a["server_address"],
    )
    cfg.path, cfg.source = ctx.path, source
    for name in ("server_port", "trust_bundle_path", "trust_bundle_url", "trust_bundle_unix_socket",
                 "trust_bundle_spiffe_workload_api", "trust_bundle_format", "insecure_bootstrap", "rebootstrap_mode",
                 "rebootstrap_delay", "log_file", "log_format", "log_source_location", "log_selectors",
                 "allow_unauthenticated_verifiers", "allowed_foreign_jwt_claims", "disable_workload_api",
                 "disable_sds_api", "workload_x509_svid_key_type", "x509_svid_cache_max_size",
                 "jwt_svid_cache_max_size", "profiling_enabled", "profiling_port", "profiling_freq",
                 "profiling_names"):
        setattr(cfg, name, a[name])
    cfg.log_level = normalize_log_level(a["log_level"])
    if not a["data_dir"]:
        raise ctx.error(["agent", "data_dir"], "data_dir must be configured")
    cfg.data_dir = absolute(a["data_dir"])
    cfg.socket_path = absolute(a["socket_path"] or DEFAULT_SOCKET_PATH)
    cfg.sds = SDSConfig(**a["sds"])
    if cfg.sds.default_all_bundles_name == cfg.sds.default_bundle_name:
        ctx.warn(["agent", "sds"], 'default_bundle_name and default_all_bundles_name have the same value; '
                                   'default_all_bundles_name will be ignored')

    if cfg.rebootstrap_mode != "never" and cfg.insecure_bootstrap:
        raise ctx.error(["agent", "rebootstrap_mode"], "insecure_bootstrap option can not be used with rebootstrapping")
    _join_token(ctx, cfg, a)
    _admin_socket(ctx, cfg, a)
    for i, delegate in enumerate(a["authorized_delegates"]):
        try:
            sid = SpiffeId.parse(delegate)
        except SpiffeIdError as exc:
            raise ctx.error(["agent", "authorized_delegates", i], f"error validating authorized delegate: {exc}") from None
        if sid.trust_domain.name != cfg.trust_domain:
            raise ctx.error(["agent", "authorized_delegates", i],
                            f'error validating authorized delegate: "{delegate}" is not a member of trust domain "{cfg.trust_domain}"')
    cfg.authorized_delegates = a["authorized_delegates"]
    if a["availability_target"] is not None:
        if a["availability_target"] < MIN_AVAILABILITY_TARGET:
            raise ctx.error(["agent", "availability_target"], "availability_target must be at least 24h")
        cfg.availability_target = a["availability_target"]
    _experimental(ctx, cfg, a, raw)

    cfg.plugins = parse_plugins(ctx, raw.get("plugins"), AGENT_PLUGIN_RULES)
    hc = HEALTH_CHECKS_SCHEMA.parse(ctx, ["health_checks"], merge_blocks(ctx, ["health_checks"], raw.get("health_checks")))
    cfg.health_checks = health_checks_from(hc)
    tel = TELEMETRY_SCHEMA.parse(ctx, ["telemetry"], merge_blocks(ctx, ["telemetry"], raw.get("telemetry")))
    cfg.telemetry = telemetry_from(tel)
    warn_unacted(ctx, "agent", {"agent": a, "health_checks": hc, "telemetry": tel})
    cfg.warnings = ctx.warnings
    return cfg


def _check_sources(ctx: Ctx, a: Values) -> None:
    """Server address and how the agent learns the server's bundle, checked as SPIRE does."""
    agent = ["agent"]
    if a["join_token"] and a["join_token_file"]:
        raise ctx.error(agent + ["join_token_file"], "only one of join_token or join_token_file can be specified, not both")
    if not a["server_address"]:
        raise ctx.error(agent + ["server_address"], "must be configured")
    if not a["server_port"]:
        raise ctx.error(agent + ["server_port"], "must be configured")
    path, url, wl, insecure = (a["trust_bundle_path"], a["trust_bundle_url"], a["trust_bundle_spiffe_workload_api"],
                               a["insecure_bootstrap"])
    if wl:
        others = [("insecure_bootstrap", insecure), ("trust_bundle_url", url), ("trust_bundle_path", path)]
        for name, value in others:
            if value:
                raise ctx.error(agent + [name], f"only one of {name} or trust_bundle_spiffe_workload_api can be specified, not both")
        if a["trust_bundle_unix_socket"]:
            raise ctx.error(agent + ["trust_bundle_unix_socket"], "trust_bundle_unix_socket can not be used with trust_bundle_spiffe_workload_api")
        if not (wl.startswith("unix:") or wl.startswith("tcp:")):
            raise ctx.error(agent + ["trust_bundle_spiffe_workload_api"],
                            f'"{wl}" is not a valid SPIFFE Workload API endpoint address; use unix:///path or tcp://ip:port')
    if insecure:
        if url and path:
            raise ctx.error(agent + ["insecure_bootstrap"], "only one of insecure_bootstrap, trust_bundle_url, or trust_bundle_path can be specified, not the three options")
        if url:
            raise ctx.error(agent + ["insecure_bootstrap"], "only one of insecure_bootstrap or trust_bundle_url can be specified, not both")
        if path:
            raise ctx.error(agent + ["insecure_bootstrap"], "only one of insecure_bootstrap or trust_bundle_path can be specified, not both")
    elif not (path or url or wl):
        raise ctx.error(agent, "trust_bundle_path, trust_bundle_url, or trust_bundle_spiffe_workload_api must be configured unless insecure_bootstrap is set")
    if url and path:
        raise ctx.error(agent + ["trust_bundle_url"], "only one of trust_bundle_url or trust_bundle_path can be specified, not both")
    if a["trust_bundle_unix_socket"] and not url:
        raise ctx.error(agent + ["trust_bundle_unix_socket"], "if trust_bundle_unix_socket is specified, so must be trust_bundle_url")
    if url:
        parsed = urllib.parse.urlsplit(url)
        if a["trust_bundle_unix_socket"]:
            if parsed.scheme != "http":
                raise ctx.error(agent + ["trust_bundle_url"], "trust bundle URL must start with http:// when used with trust bundle unix socket")
            for key in urllib.parse.parse_qs(parsed.query):
                if key.startswith(("spiffe-", "spire-")):
                    raise ctx.error(agent + ["trust_bundle_url"], f"trust_bundle_url query params can not start with {key.split('-')[0]}-")
        elif parsed.scheme != "https":
            raise ctx.error(agent + ["trust_bundle_url"], "trust bundle URL must start with https://")


def _join_token(ctx: Ctx, cfg: AgentConfig, a: Values) -> None:
    cfg.join_token = a["join_token"]
    cfg.join_token_file = a["join_token_file"]
    if not cfg.join_token_file:
        return
    key = ["agent", "join_token_file"]
    try:
        token = read_bounded(cfg.join_token_file).decode("utf-8").strip()
    except (OSError, UnicodeDecodeError) as exc:
        reason = exc.strerror if isinstance(exc, OSError) and exc.strerror else str(exc)
        raise ctx.error(key, f'unable to read join token file "{cfg.join_token_file}": {reason}') from None
    if not token:
        raise ctx.error(key, "join token file is empty")
    cfg.join_token = token


def _admin_socket(ctx: Ctx, cfg: AgentConfig, a: Values) -> None:
    if not a["admin_socket_path"]:
        return
    cfg.admin_socket_path = absolute(a["admin_socket_path"])
    if not (cfg.disable_workload_api and cfg.disable_sds_api):
        if cfg.admin_socket_path.startswith(os.path.dirname(cfg.socket_path) + "/"):
            raise ctx.error(["agent", "admin_socket_path"],
                            "admin socket cannot be in the same directory or a subdirectory as that containing the Workload API socket")


def _experimental(ctx: Ctx, cfg: AgentConfig, a: Values, raw: dict[str, Any]) -> None:
    e = a["experimental"]
    path = ["agent", "experimental"]
    cfg.experimental = merge_blocks(ctx, path, merge_blocks(ctx, ["agent"], raw.get("agent")).get("experimental"))
    if sys.platform != "win32":
        if e["named_pipe_name"]:
            raise ctx.error(path + ["named_pipe_name"],
                            "named_pipe_name is not supported in this platform; please use socket_path instead")
        if e["admin_named_pipe_name"]:
            raise ctx.error(path + ["admin_named_pipe_name"],
                            "admin_named_pipe_name is not supported in this platform; please use admin_socket_path instead")
    timeout = e["jwt_svid_cache_hit_timeout"]
    if timeout is not None and not 5 <= timeout < 30:
        raise ctx.error(path + ["jwt_svid_cache_hit_timeout"], "must be at least 5s and less than 30s")
    if timeout is not None:
        ctx.warn(path + ["jwt_svid_cache_hit_timeout"], "The use of 'jwt_svid_cache_hit_timeout' is experimental")
    cfg.sync_interval = e["sync_interval"]
    cfg.jwt_svid_cache_hit_timeout = timeout
    if e["use_sync_authorized_entries"] is not None:
        cfg.use_sync_authorized_entries = e["use_sync_authorized_entries"]
    if e["require_pq_kem"]:
        # Fail closed: TLS here (OpenSSL through Python's ssl) cannot be limited to ML-KEM groups.
        raise ctx.error(path + ["require_pq_kem"], "require_pq_kem is not supported by spire_py: the TLS stack "
                        "cannot require a post-quantum key exchange; remove it or set it to false")
    cfg.workload_api_ratelimit = dict(e["ratelimit"])
    check_feature_flags(ctx, "agent", e["feature_flags"])
    cfg.feature_flags = e["feature_flags"]
    if e["broker"] is not None:
        cfg.broker = _broker(ctx, path + ["broker"], e["broker"])


def _broker(ctx: Ctx, path: list[Any], b: Values) -> BrokerConfig:
    if not b["socket_path"] and not b["bind_address"]:
        raise ctx.error(path, "experimental.broker requires socket_path, bind_address, or both")
    seen: set[str] = set()
    brokers = []
    for i, entry in enumerate(b["brokers"]):
        bid = entry["id"]
        if not bid:
            raise ctx.error(path + ["brokers", i, "id"], "must be specified")
        if bid in seen:
            raise ctx.error(path + ["brokers", i, "id"], f'duplicate broker id "{bid}"')
        seen.add(bid)
        try:
            SpiffeId.parse(bid)
        except SpiffeIdError as exc:
            raise ctx.error(path + ["brokers", i, "id"], str(exc)) from None
        types = entry["allowed_reference_types"]
        if not types:
            raise ctx.error(path + ["brokers", i, "allowed_reference_types"], "must list at least one reference type URL")
        for j, t in enumerate(types):
            if not t["type_url"]:
                raise ctx.error(path + ["brokers", i, "allowed_reference_types", j, "type_url"], "must be specified")
            if t["type_url"] == "*" and len(types) != 1:
                raise ctx.error(path + ["brokers", i, "allowed_reference_types"],
                                'wildcard "*" must be the only allowed reference type')
        brokers.append({"id": bid, "allowed_reference_types": [dict(t) for t in types]})
    socket_path = absolute(b["socket_path"]) if b["socket_path"] else ""
    return BrokerConfig(socket_path=socket_path, bind_address=b["bind_address"], brokers=brokers)


__all__ = ["AgentConfig", "BrokerConfig", "ConfigError", "FLAG_KEYS", "SDSConfig", "agent_config_from",
           "load_agent_config"]
