"""spire-server's configuration: the ``server``, ``plugins``, ``health_checks`` and ``telemetry`` sections.

Keys, defaults and checks follow SPIRE's server reference and ``spire-server run``;
every documented key is accepted; those nothing acts on yet are listed in
``common.config.unacted`` and warned about when set.
Durations are seconds. Relative paths are made absolute against the working
directory, as SPIRE resolves them.
"""

from __future__ import annotations

import ipaddress
import sys
from dataclasses import dataclass, field
from typing import Any, Mapping, Optional

from ..common.config import (
    BOOL,
    DURATION,
    INT,
    RAW,
    SERVER_PLUGIN_RULES,
    STR,
    STR_LIST,
    Block,
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
from ..common.config.federation import FEDERATION_SCHEMA, FederationConfig, federation_from
from ..common.config.sections import (
    HEALTH_CHECKS_SCHEMA,
    KEY_TYPES,
    LOG_FORMATS,
    TELEMETRY_SCHEMA,
    check_log_level,
    check_port,
    check_spiffe_ids,
    health_checks_from,
    normalize_log_level,
    parse_trust_domain,
    telemetry_from,
)
from ..common.config.fflag import check_feature_flags
from ..common.config.unacted import warn_unacted
from ..common.duration import format_duration

DEFAULT_SOCKET_PATH = "/tmp/spire-server/private/api.sock"
DEFAULT_CA_TTL = 24 * 3600
DEFAULT_X509_SVID_TTL = 3600
DEFAULT_JWT_SVID_TTL = 300
DEFAULT_CA_SUBJECT_COUNTRY = ["US"]
DEFAULT_CA_SUBJECT_ORGANIZATION = ["SPIFFE"]
# SVIDs get at most a sixth of the CA lifetime, capped at a week (SPIRE's CA rotation thresholds).
_MAX_SVID_TTL = 7 * 24 * 3600
_ACTIVATION_DIVISOR = 6

# spire-server run flag -> server key
FLAG_KEYS = {
    "bindAddress": "bind_address",
    "serverPort": "bind_port",
    "socketPath": "socket_path",
    "trustDomain": "trust_domain",
    "logLevel": "log_level",
    "logFile": "log_file",
    "logFormat": "log_format",
    "logSourceLocation": "log_source_location",
    "dataDir": "data_dir",
}


def _check_cidrs(values: list[str]) -> Optional[str]:
    for v in values:
        try:
            ipaddress.ip_network(v, strict=False)
        except ValueError:
            return f'invalid CIDR "{v}"'
    return None


_CA_SUBJECT = Schema(
    [Field("country", STR_LIST), Field("organization", STR_LIST), Field("common_name", STR, default="")]
)
_RATELIMIT = Schema([Field("attestation", BOOL, default=True), Field("signing", BOOL, default=True)])
_EXPERIMENTAL = Schema(
    [
        Field("agent_spiffe_id_as_selector", BOOL, default=False),
        Field("auth_opa_policy_engine", RAW, default=None),  # refused: see _experimental
        Field("cache_reload_interval", DURATION, default=5),
        Field("full_cache_reload_interval", DURATION, default=24 * 3600),
        Field("events_based_cache", BOOL, default=False),
        Field("prune_events_older_than", DURATION, default=12 * 3600),
        Field("event_timeout", DURATION, default=None),
        Field("sql_transaction_timeout", DURATION, default=None,
              deprecated="experimental.sql_transaction_timeout is deprecated, use experimental.event_timeout instead"),
        Field("require_pq_kem", BOOL, default=False),
        Field("wit_key_type", STR, default=None, choices=KEY_TYPES),
        Field("wit_issuer", STR, default=""),
        Field("feature_flags", STR_LIST),
        Field("named_pipe_name", STR, default=""),
    ],
    unknown="warn",  # SPIRE does not check experimental keys
)

SERVER_SCHEMA = Schema(
    [
        Field("admin_ids", STR_LIST, check=check_spiffe_ids),
        Field("agent_ttl", DURATION, default=None),
        Field("audit_log_enabled", BOOL, default=False),
        Field("bind_address", STR, default="0.0.0.0"),
        Field("bind_port", INT, default=8081, check=check_port),
        Field("ca_key_type", STR, default=None, choices=KEY_TYPES),
        Field("ca_subject", Block(_CA_SUBJECT), default=None),
        Field("ca_ttl", DURATION, default=None),
        Field("data_dir", STR, default="."),
        Field("default_x509_svid_ttl", DURATION, default=None),
        Field("default_jwt_svid_ttl", DURATION, default=None),
        Field("default_svid_ttl", DURATION, default=None,
              deprecated="default_svid_ttl is deprecated; use default_x509_svid_ttl"),
        Field("disable_jwt_svids", BOOL, default=False),
        Field("experimental", Block(_EXPERIMENTAL)),
        Field("federation", Block(FEDERATION_SCHEMA), default=None),
        Field("jwt_issuer", STR, default=""),
        Field("jwt_key_type", STR, default=None, choices=KEY_TYPES),
        Field("log_file", STR, default=""),
        Field("log_format", STR, default="text", choices=LOG_FORMATS),
        Field("log_level", STR, default="INFO", check=check_log_level),
        Field("log_source_location", BOOL, default=False),
        Field("max_attested_node_info_staleness", DURATION, default=0),
        Field("profiling_enabled", BOOL, default=False),
        Field("profiling_freq", INT, default=0),
        Field("profiling_names", STR_LIST),
        Field("profiling_port", INT, default=0, check=check_port),
        Field("proxy_protocol_trusted_cidrs", STR_LIST, check=_check_cidrs),
        Field("prune_attested_nodes_batch_size", INT, default=1000),
        Field("prune_attested_nodes_expired_for", DURATION, default=None),
        Field("prune_tofu_nodes", BOOL, default=False),
        Field("ratelimit", Block(_RATELIMIT)),
        Field("socket_path", STR, default=DEFAULT_SOCKET_PATH),
        Field("trust_domain", STR, required=True),
    ]
)


@dataclass
class CASubject:
    country: list[str] = field(default_factory=lambda: list(DEFAULT_CA_SUBJECT_COUNTRY))
    organization: list[str] = field(default_factory=lambda: list(DEFAULT_CA_SUBJECT_ORGANIZATION))
    common_name: str = ""


@dataclass
class RateLimitConfig:
    attestation: bool = True
    signing: bool = True


@dataclass
class ServerConfig:
    trust_domain: str
    bind_address: str = "0.0.0.0"
    bind_port: int = 8081
    socket_path: str = DEFAULT_SOCKET_PATH
    data_dir: str = "."
    log_file: str = ""
    log_level: str = "INFO"  # DEBUG, INFO, WARN or ERROR
    log_format: str = "text"
    log_source_location: bool = False
    admin_ids: list[str] = field(default_factory=list)
    agent_ttl: Optional[float] = None  # None: default_x509_svid_ttl
    audit_log_enabled: bool = False
    ca_key_type: str = "ec-p256"
    jwt_key_type: str = "ec-p256"
    ca_subject: CASubject = field(default_factory=CASubject)
    ca_ttl: float = DEFAULT_CA_TTL
    default_x509_svid_ttl: float = DEFAULT_X509_SVID_TTL
    default_jwt_svid_ttl: float = DEFAULT_JWT_SVID_TTL
    disable_jwt_svids: bool = False
    jwt_issuer: str = ""
    federation: FederationConfig = field(default_factory=FederationConfig)
    ratelimit: RateLimitConfig = field(default_factory=RateLimitConfig)
    max_attested_node_info_staleness: float = 0
    prune_attested_nodes_expired_for: Optional[float] = None
    prune_attested_nodes_batch_size: int = 1000
    prune_tofu_nodes: bool = False
    proxy_protocol_trusted_cidrs: list[str] = field(default_factory=list)
    profiling_enabled: bool = False
    profiling_port: int = 0
    profiling_freq: int = 0
    profiling_names: list[str] = field(default_factory=list)
    # experimental { ... }: the block as written, and its known keys typed
    experimental: dict[str, Any] = field(default_factory=dict)
    agent_spiffe_id_as_selector: bool = False
    cache_reload_interval: float = 5
    full_cache_reload_interval: float = 24 * 3600
    events_based_cache: bool = False
    prune_events_older_than: float = 12 * 3600
    event_timeout: Optional[float] = None
    wit_key_type: str = "ec-p256"
    wit_issuer: str = ""
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


def load_server_config(
    path: str, *, expand_env: bool = False, overrides: Optional[Mapping[str, Any]] = None
) -> ServerConfig:
    """Load and check a server config file; ``overrides`` are spire-server run flags
    (bindAddress, serverPort, socketPath, trustDomain, logLevel, logFile, logFormat,
    dataDir, ...) and win over the file. Raises ConfigError."""
    raw, source = load_file(path, expand_env)
    return server_config_from(raw, source, overrides)


def server_config_from(
    raw: dict[str, Any], source: Optional[SourceInfo] = None, overrides: Optional[Mapping[str, Any]] = None
) -> ServerConfig:
    ctx = Ctx(source)
    check_top_level(ctx, raw, ("server", "plugins", "telemetry", "health_checks"))
    apply_overrides(ctx, raw, "server", FLAG_KEYS, overrides)
    s = SERVER_SCHEMA.parse(ctx, ["server"], merge_blocks(ctx, ["server"], raw.get("server")))

    cfg = ServerConfig(trust_domain=parse_trust_domain(ctx, ["server", "trust_domain"], s["trust_domain"]))
    cfg.path, cfg.source = ctx.path, source
    cfg.bind_address = s["bind_address"].strip("[]")
    if not cfg.bind_address or not s["bind_port"]:
        raise ctx.error(["server", "bind_port" if cfg.bind_address else "bind_address"],
                        "bind_address and bind_port must be configured")
    cfg.bind_port = s["bind_port"]
    cfg.socket_path = absolute(s["socket_path"] or DEFAULT_SOCKET_PATH)
    if not s["data_dir"]:
        raise ctx.error(["server", "data_dir"], "data_dir must be configured")
    cfg.data_dir = absolute(s["data_dir"])
    cfg.log_file = s["log_file"]
    cfg.log_level = normalize_log_level(s["log_level"])
    cfg.log_format = s["log_format"]
    for name in ("log_source_location", "admin_ids", "audit_log_enabled", "disable_jwt_svids", "jwt_issuer",
                 "max_attested_node_info_staleness", "prune_attested_nodes_batch_size", "prune_tofu_nodes",
                 "proxy_protocol_trusted_cidrs", "profiling_enabled", "profiling_port", "profiling_freq",
                 "profiling_names"):
        setattr(cfg, name, s[name])
    if s["prune_attested_nodes_expired_for"] is not None:
        cfg.prune_attested_nodes_expired_for = s["prune_attested_nodes_expired_for"]
    cfg.ratelimit = RateLimitConfig(**s["ratelimit"])

    _ttls(ctx, cfg, s)
    _keys_and_subject(ctx, cfg, s)
    _experimental(ctx, cfg, s, raw)
    cfg.federation = federation_from(ctx, ["server", "federation"], s["federation"])

    cfg.plugins = parse_plugins(ctx, raw.get("plugins"), SERVER_PLUGIN_RULES)
    hc = HEALTH_CHECKS_SCHEMA.parse(ctx, ["health_checks"], merge_blocks(ctx, ["health_checks"], raw.get("health_checks")))
    cfg.health_checks = health_checks_from(hc)
    tel = TELEMETRY_SCHEMA.parse(ctx, ["telemetry"], merge_blocks(ctx, ["telemetry"], raw.get("telemetry")))
    cfg.telemetry = telemetry_from(tel)
    warn_unacted(ctx, "server", {"server": s, "health_checks": hc, "telemetry": tel})
    cfg.warnings = ctx.warnings
    return cfg


def _ttls(ctx: Ctx, cfg: ServerConfig, s: Values) -> None:
    if s["ca_ttl"] is not None:
        cfg.ca_ttl = s["ca_ttl"]
    if s["default_x509_svid_ttl"] is not None:
        cfg.default_x509_svid_ttl = s["default_x509_svid_ttl"]
    elif s["default_svid_ttl"] is not None:
        cfg.default_x509_svid_ttl = s["default_svid_ttl"]
    if s["default_jwt_svid_ttl"] is not None:
        cfg.default_jwt_svid_ttl = s["default_jwt_svid_ttl"]
    if s["agent_ttl"]:
        cfg.agent_ttl = s["agent_ttl"]
    for key, ttl in (("default_x509_svid_ttl", cfg.default_x509_svid_ttl),
                     ("default_jwt_svid_ttl", cfg.default_jwt_svid_ttl),
                     ("agent_ttl", cfg.agent_ttl)):
        if ttl is None:
            continue
        _warn_ttl(ctx, key, ttl, cfg.ca_ttl)


def _warn_ttl(ctx: Ctx, key: str, ttl: float, ca_ttl: float) -> None:
    """SPIRE warns when a CA rotation could cut an SVID's lifetime short."""
    max_for_ca = min(ca_ttl / _ACTIVATION_DIVISOR, _MAX_SVID_TTL)
    if ttl <= max_for_ca:
        return

    def fmt(v: float) -> str:
        return format_duration(int(v), compact=True)

    if ttl < _MAX_SVID_TTL:
        msg = (f"{key} is too high for the configured ca_ttl value. SVIDs with shorter lifetimes may be issued. "
               f"Please set {key} to {fmt(max_for_ca)} or less, or the ca_ttl to {fmt(ttl * _ACTIVATION_DIVISOR)} "
               f"or more, to guarantee the full {key} lifetime when CA rotations are scheduled.")
    elif ca_ttl < _MAX_SVID_TTL * _ACTIVATION_DIVISOR:
        msg = (f"{key} is too high and the ca_ttl is too low. SVIDs with shorter lifetimes may be issued. "
               f"Please set {key} to {fmt(_MAX_SVID_TTL)} or less, and the ca_ttl to "
               f"{fmt(_MAX_SVID_TTL * _ACTIVATION_DIVISOR)} or more, to guarantee the full {key} lifetime "
               f"when CA rotations are scheduled.")
    else:
        msg = (f"{key} is too high. SVIDs with shorter lifetimes may be issued. Please set {key} to "
               f"{fmt(max_for_ca)} or less to guarantee the full {key} lifetime when CA rotations are scheduled.")
    ctx.warn(["server", key], msg)


def _keys_and_subject(ctx: Ctx, cfg: ServerConfig, s: Values) -> None:
    # jwt_key_type and wit_key_type default to ca_key_type, which defaults to ec-p256.
    cfg.ca_key_type = s["ca_key_type"] or "ec-p256"
    cfg.jwt_key_type = s["jwt_key_type"] or cfg.ca_key_type
    cfg.wit_key_type = s["experimental"]["wit_key_type"] or cfg.ca_key_type
    sub = s["ca_subject"]
    if sub is None:
        return
    if not (sub["country"] or sub["organization"] or sub["common_name"]):
        ctx.warn(["server", "ca_subject"], "ca_subject is set but empty; the default will be used")
        return
    cfg.ca_subject = CASubject(country=sub["country"], organization=sub["organization"], common_name=sub["common_name"])


def _experimental(ctx: Ctx, cfg: ServerConfig, s: Values, raw: dict[str, Any]) -> None:
    e = s["experimental"]
    path = ["server", "experimental"]
    server_raw = merge_blocks(ctx, ["server"], raw.get("server"))
    cfg.experimental = merge_blocks(ctx, path, server_raw.get("experimental"))
    if e["event_timeout"] is not None and e["sql_transaction_timeout"] is not None:
        raise ctx.error(path + ["sql_transaction_timeout"],
                        "both experimental sql_transaction_timeout and event_timeout set, only set event_timeout")
    if e["named_pipe_name"] and sys.platform != "win32":
        raise ctx.error(path + ["named_pipe_name"],
                        "named_pipe_name is not supported in this platform; please use socket_path instead")
    for name in ("agent_spiffe_id_as_selector", "cache_reload_interval", "full_cache_reload_interval",
                 "events_based_cache", "prune_events_older_than", "wit_issuer", "feature_flags"):
        setattr(cfg, name, e[name])
    cfg.event_timeout = e["event_timeout"] if e["event_timeout"] is not None else e["sql_transaction_timeout"]
    check_feature_flags(ctx, "server", e["feature_flags"])
    if e["require_pq_kem"]:
        # Fail closed: TLS here (OpenSSL through Python's ssl) cannot be limited to ML-KEM groups.
        raise ctx.error(path + ["require_pq_kem"], "require_pq_kem is not supported by spire_py: the TLS stack "
                        "cannot require a post-quantum key exchange; remove it or set it to false")
    if "auth_opa_policy_engine" in e.present:
        # Ignoring it would run the default policy while the operator believes theirs is enforced.
        raise ctx.error(path + ["auth_opa_policy_engine"],
                        "auth_opa_policy_engine is not supported by spire_py: it has no OPA engine to evaluate "
                        "the rego policy; remove it to use the default authorization policy")


__all__ = ["CASubject", "ConfigError", "FLAG_KEYS", "RateLimitConfig", "ServerConfig", "load_server_config",
           "server_config_from"]
