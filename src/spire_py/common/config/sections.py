"""Sections and values shared by server and agent configs: health_checks, telemetry, logging."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Optional

from ..spiffeid import SpiffeId, SpiffeIdError, TrustDomain
from .schema import BOOL, INT, STR, STR_LIST, Block, BlockList, Ctx, Field, Schema, Values
from .source import KeyPath

KEY_TYPES = ("rsa-2048", "rsa-4096", "ec-p256", "ec-p384")
LOG_FORMATS = ("text", "json")

# logrus accepts more level names than SPIRE documents; all seven are kept (the Logger APIs
# report the launch level by its logrus name).
_LOG_LEVELS = {
    "trace": "TRACE", "debug": "DEBUG", "info": "INFO", "warn": "WARN", "warning": "WARN",
    "error": "ERROR", "fatal": "FATAL", "panic": "PANIC",
}


def check_log_level(value: str) -> Optional[str]:
    if value.lower() not in _LOG_LEVELS:
        return f'invalid log level "{value}"; must be one of: DEBUG, INFO, WARN, ERROR'
    return None


def normalize_log_level(value: str) -> str:
    """"debug" -> "DEBUG", "warning" -> "WARN" (call after check_log_level)."""
    return _LOG_LEVELS.get(value.lower(), "INFO")


def check_port(value: int) -> Optional[str]:
    if not 0 <= value <= 65535:
        return f"invalid port {value}; must be between 0 and 65535"
    return None


def check_spiffe_ids(values: list[str]) -> Optional[str]:
    for v in values:
        try:
            SpiffeId.parse(v)
        except SpiffeIdError as exc:
            return f'invalid SPIFFE ID "{v}": {exc}'
    return None


def parse_trust_domain(ctx: Ctx, path: KeyPath, value: str) -> str:
    """The trust domain name from "example.org" or "spiffe://example.org", as SPIRE accepts it."""
    try:
        td = TrustDomain.parse(value)
    except SpiffeIdError as exc:
        raise ctx.error(path, f'could not parse trust_domain "{value}": {exc}') from None
    if len(td.name) > 255:
        ctx.warn(path, "trust domain name should be at most 255 characters to be SPIFFE compliant")
    return td.name


# --- health_checks --------------------------------------------------------------------


@dataclass
class HealthChecksConfig:
    listener_enabled: bool = False
    bind_address: str = "localhost"
    bind_port: int = 80
    live_path: str = "/live"
    ready_path: str = "/ready"


HEALTH_CHECKS_SCHEMA = Schema(
    [
        Field("listener_enabled", BOOL, default=False),
        Field("bind_address", STR, default="localhost"),
        Field("bind_port", INT, default=80, check=check_port),  # SPIRE: string, "80" or 80
        Field("live_path", STR, default="/live"),
        Field("ready_path", STR, default="/ready"),
    ]
)


def health_checks_from(values: Values) -> HealthChecksConfig:
    # SPIRE treats empty strings as "use the default".
    return HealthChecksConfig(
        listener_enabled=values["listener_enabled"],
        bind_address=(values["bind_address"] or "localhost").strip("[]"),
        bind_port=values["bind_port"] or 80,
        live_path=values["live_path"] or "/live",
        ready_path=values["ready_path"] or "/ready",
    )


# --- telemetry ---------------------------------------------------------------------------


@dataclass
class PrometheusTLSConfig:
    cert_file: str = ""
    key_file: str = ""
    client_ca_file: str = ""
    use_spire_svid: bool = False
    authorized_spiffe_ids: list[str] = field(default_factory=list)


@dataclass
class PrometheusConfig:
    host: str = ""
    port: int = 0
    tls: Optional[PrometheusTLSConfig] = None


@dataclass
class SinkConfig:
    """A DogStatsd, Statsd or M3 collector (``env`` is M3's)."""

    address: str = ""
    env: str = ""


@dataclass
class TelemetryConfig:
    prometheus: Optional[PrometheusConfig] = None
    dogstatsd: list[SinkConfig] = field(default_factory=list)
    statsd: list[SinkConfig] = field(default_factory=list)
    m3: list[SinkConfig] = field(default_factory=list)
    inmem: bool = False  # an InMem {} block is present (and not disabled)
    metric_prefix: str = ""
    enable_trust_domain_label: Optional[bool] = None
    enable_hostname_label: Optional[bool] = None
    allowed_prefixes: list[str] = field(default_factory=list)
    blocked_prefixes: list[str] = field(default_factory=list)
    allowed_labels: list[str] = field(default_factory=list)
    blocked_labels: list[str] = field(default_factory=list)


def prometheus_tls_problem(tls: Any) -> Optional[str]:
    """SPIRE's checks of a Prometheus ``tls`` block, in its words (``tls``: the parsed block or
    a PrometheusTLSConfig)."""
    get = tls.get if isinstance(tls, dict) else lambda k: getattr(tls, k)
    use_svid, cert, key = get("use_spire_svid"), get("cert_file"), get("key_file")
    if use_svid and (cert or key):
        return "cert_file and key_file cannot be configured when use_spire_svid is enabled"
    if not use_svid and (not cert or not key):
        return "cert_file and key_file must both be configured unless use_spire_svid is enabled"
    if get("authorized_spiffe_ids") and get("client_ca_file"):
        return "client_ca_file cannot be configured with authorized_spiffe_ids"
    return None


_TLS_SCHEMA = Schema(
    [
        Field("cert_file", STR, default=""),
        Field("key_file", STR, default=""),
        Field("client_ca_file", STR, default=""),
        Field("use_spire_svid", BOOL, default=False),
        Field("authorized_spiffe_ids", STR_LIST, check=check_spiffe_ids),
    ],
    unknown="warn",  # SPIRE does not check this block
)
_PROMETHEUS_SCHEMA = Schema(
    [
        Field("host", STR, default=""),
        Field("port", INT, default=0, check=check_port),
        Field("tls", Block(_TLS_SCHEMA), default=None,
              check=lambda v: (f"failed to create TLS config for Prometheus: {p}"
                               if (p := prometheus_tls_problem(v)) else None)),
    ]
)
_ADDRESS_SCHEMA = Schema([Field("address", STR, default="")])
_M3_SCHEMA = Schema([Field("address", STR, default=""), Field("env", STR, default="")])
_INMEM_SCHEMA = Schema(
    [Field("enabled", BOOL, default=True, deprecated="InMem.enabled is deprecated; remove the InMem block to disable it")]
)

TELEMETRY_SCHEMA = Schema(
    [
        Field("Prometheus", Block(_PROMETHEUS_SCHEMA), default=None),
        Field("DogStatsd", BlockList(_ADDRESS_SCHEMA)),
        Field("Statsd", BlockList(_ADDRESS_SCHEMA)),
        Field("M3", BlockList(_M3_SCHEMA)),
        Field("InMem", Block(_INMEM_SCHEMA), default=None),
        Field("MetricPrefix", STR, default=""),
        Field("EnableTrustDomainLabel", BOOL, default=None),
        Field("EnableHostnameLabel", BOOL, default=None),
        Field("AllowedPrefixes", STR_LIST),
        Field("BlockedPrefixes", STR_LIST),
        Field("AllowedLabels", STR_LIST),
        Field("BlockedLabels", STR_LIST),
    ],
    unknown="warn",  # SPIRE does not check telemetry's own keys, only its sinks'
)


def telemetry_from(values: Values) -> TelemetryConfig:
    prom = values["Prometheus"]
    prometheus = None
    if prom is not None:
        tls = prom["tls"]
        prometheus = PrometheusConfig(
            host=prom["host"],
            port=prom["port"],
            tls=PrometheusTLSConfig(**tls) if tls is not None else None,
        )
    inmem = values["InMem"]
    return TelemetryConfig(
        prometheus=prometheus,
        dogstatsd=[SinkConfig(address=v["address"]) for v in values["DogStatsd"]],
        statsd=[SinkConfig(address=v["address"]) for v in values["Statsd"]],
        m3=[SinkConfig(address=v["address"], env=v["env"]) for v in values["M3"]],
        inmem=inmem is not None and bool(inmem["enabled"]),
        metric_prefix=values["MetricPrefix"],
        enable_trust_domain_label=values["EnableTrustDomainLabel"],
        enable_hostname_label=values["EnableHostnameLabel"],
        allowed_prefixes=values["AllowedPrefixes"],
        blocked_prefixes=values["BlockedPrefixes"],
        allowed_labels=values["AllowedLabels"],
        blocked_labels=values["BlockedLabels"],
    )

