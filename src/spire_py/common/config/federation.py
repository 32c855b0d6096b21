"""The server's ``federation { bundle_endpoint {...} federates_with "td" {...} }`` section."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Optional

from ..spiffeid import SpiffeId, SpiffeIdError
from .schema import (
    BOOL,
    DURATION,
    INT,
    RAW,
    STR,
    Block,
    Ctx,
    Field,
    LabeledBlocks,
    Schema,
    Values,
    block_list,
    merge_blocks,
)
from .sections import check_port, parse_trust_domain
from .source import KeyPath

DEFAULT_ACME_DIRECTORY = "https://acme-v02.api.letsencrypt.org/directory"
DEFAULT_REFRESH_HINT = 300


@dataclass
class ACMEConfig:
    directory_url: str = DEFAULT_ACME_DIRECTORY
    domain_name: str = ""
    email: str = ""
    tos_accepted: bool = False


@dataclass
class ServingCertFileConfig:
    cert_file_path: str = ""
    key_file_path: str = ""
    file_sync_interval: float = 3600


@dataclass
class BundleEndpointConfig:
    address: str = "0.0.0.0"
    port: int = 443
    refresh_hint: float = DEFAULT_REFRESH_HINT
    profile: str = "https_spiffe"  # or "https_web"
    acme: Optional[ACMEConfig] = None
    serving_cert_file: Optional[ServingCertFileConfig] = None


@dataclass
class FederatesWithConfig:
    bundle_endpoint_url: str
    profile: str  # "https_spiffe" or "https_web"
    endpoint_spiffe_id: Optional[str] = None  # https_spiffe only


@dataclass
class FederationConfig:
    bundle_endpoint: Optional[BundleEndpointConfig] = None
    federates_with: dict[str, FederatesWithConfig] = field(default_factory=dict)


_ACME = Schema(
    [
        Field("directory_url", STR, default=""),
        Field("domain_name", STR, default=""),
        Field("email", STR, default=""),
        Field("tos_accepted", BOOL, default=False),
    ]
)
_SERVING_CERT_FILE = Schema(
    [
        Field("cert_file_path", STR, default=""),
        Field("key_file_path", STR, default=""),
        Field("file_sync_interval", DURATION, default=None),
    ],
    unknown="warn",
)
_HTTPS_WEB = Schema([Field("acme", Block(_ACME), default=None), Field("serving_cert_file", Block(_SERVING_CERT_FILE), default=None)])
_EMPTY = Schema([], unknown="warn")
_BUNDLE_ENDPOINT = Schema(
    [
        Field("address", STR, default=""),
        Field("port", INT, default=443, check=check_port),
        Field("refresh_hint", DURATION, default=None),
        Field("acme", Block(_ACME), default=None, deprecated=(
            "acme inside bundle_endpoint is deprecated; configure it in profile \"https_web\" { acme { ... } }")),
        Field("profile", RAW, default=None),
    ]
)
_FEDERATES_WITH = Schema(
    [Field("bundle_endpoint_url", STR, default=""), Field("bundle_endpoint_profile", RAW, default=None)],
    unknown="warn",  # SPIRE does not check these keys
)
FEDERATION_SCHEMA = Schema(
    [
        Field("bundle_endpoint", Block(_BUNDLE_ENDPOINT), default=None),
        Field("federates_with", LabeledBlocks(_FEDERATES_WITH)),
    ],
    unknown="warn",
)


def _one_profile(ctx: Ctx, path: KeyPath, raw: Any) -> tuple[str, dict[str, Any]]:
    """``profile "https_web" { ... }`` -> ("https_web", body); exactly one is allowed."""
    labeled: list[tuple[str, Any]] = []
    for item in block_list(ctx, path, raw):
        labeled.extend(item.items())
    if len(labeled) != 1:
        raise ctx.error(path, f"exactly one bundle endpoint profile is expected, found {len(labeled)}")
    name, body = labeled[0]
    if name not in ("https_web", "https_spiffe"):
        raise ctx.error(list(path) + [name], f'unknown bundle endpoint profile "{name}"; supported profiles are "https_spiffe" and "https_web"')
    return name, merge_blocks(ctx, list(path) + [name], body)


ACME_REFUSED = ("ACME is not supported by spire_py: spire-server run refuses this bundle endpoint; "
                "use profile \"https_web\" { serving_cert_file { ... } }")


def _acme(ctx: Ctx, path: KeyPath, v: Values) -> ACMEConfig:
    for key in ("domain_name", "email"):
        if not v[key]:
            raise ctx.error(list(path) + [key], "must be configured")
    ctx.warn(path, ACME_REFUSED)
    return ACMEConfig(v["directory_url"] or DEFAULT_ACME_DIRECTORY, v["domain_name"], v["email"], v["tos_accepted"])


def _bundle_endpoint(ctx: Ctx, path: list[Any], v: Values) -> BundleEndpointConfig:
    be = BundleEndpointConfig(address=v["address"] or "0.0.0.0", port=v["port"])
    if v["refresh_hint"] is not None:
        be.refresh_hint = v["refresh_hint"]
        if be.refresh_hint >= 24 * 3600:
            ctx.warn(path + ["refresh_hint"], "refresh hint set to a high value; a smaller one such as 5m is recommended")
        elif be.refresh_hint < 60:
            ctx.warn(path + ["refresh_hint"], "refresh hint set too low; bundles are not refreshed more often than every minute")
    if v["acme"] is not None and v["profile"] is not None:
        raise ctx.error(path + ["acme"], "either bundle endpoint 'acme' or 'profile' can be set, but not both")
    if v["acme"] is not None:
        be.profile = "https_web"
        be.acme = _acme(ctx, path + ["acme"], v["acme"])
        return be
    if v["profile"] is None:
        ctx.warn(path, "bundle endpoint has no profile set; using https_spiffe (configure a profile explicitly)")
        return be
    ppath = path + ["profile"]
    name, body = _one_profile(ctx, ppath, v["profile"])
    be.profile = name
    if name == "https_spiffe":
        _EMPTY.parse(ctx, ppath + [name], body)
        return be
    web = _HTTPS_WEB.parse(ctx, ppath + [name], body)
    if web["acme"] is not None:
        be.acme = _acme(ctx, ppath + [name, "acme"], web["acme"])
    elif web["serving_cert_file"] is not None:
        scf = web["serving_cert_file"]
        be.serving_cert_file = ServingCertFileConfig(
            scf["cert_file_path"], scf["key_file_path"], scf["file_sync_interval"] or 3600
        )
    else:
        raise ctx.error(ppath + [name], "malformed https_web profile configuration: 'acme' or 'serving_cert_file' is required")
    return be


def _federates_with(ctx: Ctx, path: list[Any], td: str, v: Values) -> FederatesWithConfig:
    url = v["bundle_endpoint_url"]
    if not url:
        raise ctx.error(path + ["bundle_endpoint_url"], "must be configured")
    if not url.lower().startswith("https://"):
        raise ctx.error(path + ["bundle_endpoint_url"], f'must use the HTTPS protocol; URL found: "{url}"')
    if v["bundle_endpoint_profile"] is None:
        raise ctx.error(path, f'federation configuration for trust domain "{td}": missing bundle endpoint configuration')
    ppath = path + ["bundle_endpoint_profile"]
    name, body = _one_profile(ctx, ppath, v["bundle_endpoint_profile"])
    if name == "https_web":
        _EMPTY.parse(ctx, ppath + [name], body)
        return FederatesWithConfig(url, name)
    spiffe = Schema([Field("endpoint_spiffe_id", STR, default="")], unknown="warn").parse(ctx, ppath + [name], body)
    sid = spiffe["endpoint_spiffe_id"]
    try:
        SpiffeId.parse(sid)
    except SpiffeIdError as exc:
        raise ctx.error(ppath + [name, "endpoint_spiffe_id"], f"could not get endpoint SPIFFE ID: {exc}") from None
    return FederatesWithConfig(url, name, sid)


def federation_from(ctx: Ctx, path: list[Any], v: Optional[Values]) -> FederationConfig:
    fed = FederationConfig()
    if v is None:
        return fed
    if v["bundle_endpoint"] is not None:
        fed.bundle_endpoint = _bundle_endpoint(ctx, path + ["bundle_endpoint"], v["bundle_endpoint"])
    for td, body in v["federates_with"].items():
        fpath = path + ["federates_with", td]
        name = parse_trust_domain(ctx, fpath, td)
        fed.federates_with[name] = _federates_with(ctx, fpath, td, body)
    return fed
