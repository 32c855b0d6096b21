"""NodeAttestor "x509pop" (server): X.509 certificate chained to trusted CAs, plus proof of
possession of its private key by a signature over a fresh nonce.

Agent ID: ``spiffe://<td>/spire/agent/x509pop/<sha1 fingerprint of the leaf>`` by default
(``agent_path_template``). Selectors (type ``x509pop``): ``subject:cn:<CN>``,
``ca:fingerprint:<sha1>`` for each issuer in the verified chain, ``serialnumber:<hex>``,
``san:<key>:<value>`` for ``x509pop://<td>/<key>/<value>`` URI SANs.

Mode ``external_pki`` (default) trusts ``ca_bundle_path(s)``; mode ``spiffe`` trusts the
server's own bundle and derives the agent path from the leaf's SPIFFE ID under
``spiffe_prefix``.
"""

from __future__ import annotations

import asyncio
import urllib.parse
from dataclasses import dataclass
from typing import Optional

from cryptography import x509
from cryptography.hazmat.primitives.asymmetric import rsa
from grpclib.const import Status

from ....common.plugin import (
    BOOL, EXACT_INT, EXACT_STR, EXACT_STR_LIST, Field, PluginConfigError, PluginContext, Schema, register,
)
from ....common.plugins import x509pop as pop
from ....common.plugins.agentpathtemplate import AgentPathTemplate, TemplateError, make_agent_id
from ....common.registration import Selector
from ....common.spiffeid import TrustDomain
from ...datastore.api import DataStore
from ..context import datastore_of
from .base import AttestationError, AttestResult, Challenge, NodeAttestor

MODES = ("external_pki", "spiffe")
DEFAULT_SVID_PREFIX = "/spire-exchange/"
DEFAULT_MAX_INTERMEDIATES = 4
DEFAULT_MAX_RSA_KEY_SIZE = 8192

@dataclass
class X509PopConfig:
    """plugin_data as written."""

    mode: str
    spiffe_prefix: Optional[str]
    svid_prefix: Optional[str]
    ca_bundle_path: str
    ca_bundle_paths: list[str]
    agent_path_template: str
    max_intermediates: int
    max_rsa_key_size: int
    verify_client_ip: bool


@dataclass
class X509PopSettings:
    """What attestation uses: the trust bundle loaded, the template parsed."""

    mode: str
    trust_bundle: list[x509.Certificate]
    template: AgentPathTemplate
    svid_prefix: str
    max_intermediates: int
    max_rsa_key_size: int


def _positive(config: X509PopConfig, key: str) -> int:
    value: int = getattr(config, key)
    if value <= 0:
        raise PluginConfigError(f"{key} must be greater than 0", key)
    return value


def resolve(config: X509PopConfig) -> X509PopSettings:
    """Check the config across keys and load the trust bundle; PluginConfigError names the key."""
    mode = config.mode or "external_pki"
    if mode not in MODES:
        raise PluginConfigError("mode can only be either spiffe or external_pki", "mode")

    bundle_path, bundle_paths = config.ca_bundle_path, config.ca_bundle_paths
    trust_bundle: list[x509.Certificate] = []
    if mode == "external_pki":
        if bundle_path and bundle_paths:
            raise PluginConfigError(
                "only one of ca_bundle_path or ca_bundle_paths can be configured, not both", "ca_bundle_paths")
        paths = [bundle_path] if bundle_path else list(bundle_paths)
        if not paths:
            raise PluginConfigError("one of ca_bundle_path or ca_bundle_paths must be configured", "ca_bundle_path")
        key = "ca_bundle_path" if bundle_path else "ca_bundle_paths"
        for path in paths:
            try:
                trust_bundle.extend(pop.load_certificates(path))
            except (OSError, pop.X509PopError) as exc:
                reason = exc.strerror if isinstance(exc, OSError) and exc.strerror else str(exc)
                raise PluginConfigError(f'unable to load trust bundle "{path}": {reason}', key) from None
    elif bundle_path or bundle_paths:
        raise PluginConfigError(
            "you can not use ca_bundle_path or ca_bundle_paths in spiffe mode",
            "ca_bundle_path" if bundle_path else "ca_bundle_paths")

    text = config.agent_path_template
    if not text:
        text = pop.DEFAULT_AGENT_PATH_TEMPLATE_SVID if mode == "spiffe" else pop.DEFAULT_AGENT_PATH_TEMPLATE_CN
    try:
        template = AgentPathTemplate.parse(text)
    except TemplateError as exc:
        raise PluginConfigError(f'failed to parse agent svid template "{text}": {exc}', "agent_path_template") from None

    # SPIRE's code reads "spiffe_prefix" while its docs say "svid_prefix"; accept either.
    if config.spiffe_prefix is not None and config.svid_prefix is not None:
        raise PluginConfigError("only one of spiffe_prefix or svid_prefix can be configured", "svid_prefix")
    prefix = config.svid_prefix if config.svid_prefix is not None else config.spiffe_prefix
    svid_prefix = DEFAULT_SVID_PREFIX
    if prefix is not None:
        svid_prefix = prefix if prefix.endswith("/") else prefix + "/"

    if config.verify_client_ip:
        # The client address is not handed to node attestors here; refusing beats a silent no-op.
        raise PluginConfigError("verify_client_ip is not supported by spire_py", "verify_client_ip")

    return X509PopSettings(
        mode=mode,
        trust_bundle=trust_bundle,
        template=template,
        svid_prefix=svid_prefix,
        max_intermediates=_positive(config, "max_intermediates"),
        max_rsa_key_size=_positive(config, "max_rsa_key_size"),
    )


def _rsa_too_large(cert: x509.Certificate, limit: int) -> bool:
    key = cert.public_key()
    return isinstance(key, rsa.RSAPublicKey) and key.key_size > limit


@register("server")
class X509PopAttestor(NodeAttestor):
    NAME = pop.PLUGIN_NAME
    CONFIG = Schema([
        Field("mode", EXACT_STR),
        Field("spiffe_prefix", EXACT_STR, default=None),
        Field("svid_prefix", EXACT_STR, default=None),
        Field("ca_bundle_path", EXACT_STR),
        Field("ca_bundle_paths", EXACT_STR_LIST),
        Field("agent_path_template", EXACT_STR),
        Field("max_intermediates", EXACT_INT, default=DEFAULT_MAX_INTERMEDIATES),
        Field("max_rsa_key_size", EXACT_INT, default=DEFAULT_MAX_RSA_KEY_SIZE),
        Field("verify_client_ip", BOOL, default=False),
    ])
    CONFIG_TYPE = X509PopConfig

    def __init__(self, trust_domain: TrustDomain, config: X509PopSettings,
                 datastore: Optional[DataStore] = None) -> None:
        self.trust_domain = trust_domain
        self.config = config
        self.datastore = datastore

    @classmethod
    def validate(cls, config: X509PopConfig, ctx: PluginContext) -> None:
        resolve(config)  # loads the trust bundle: a missing CA file is a config error, as in SPIRE

    @classmethod
    def from_config(cls, config: X509PopConfig, ctx: PluginContext) -> "X509PopAttestor":
        return cls(TrustDomain(ctx.trust_domain), resolve(config), datastore_of(ctx))

    async def _trust_bundle(self) -> list[x509.Certificate]:
        if self.config.mode == "external_pki":
            return self.config.trust_bundle
        fetch = getattr(self.datastore, "fetch_bundle", None)
        if fetch is None:
            raise AttestationError("failed to get trust bundle: no datastore", Status.INTERNAL)
        try:
            bundle = await asyncio.to_thread(fetch, self.trust_domain.id_string())
            return [x509.load_der_x509_certificate(der) for der in (bundle.x509_authorities if bundle else [])]
        except Exception as exc:  # a datastore or parse failure is the server's problem
            raise AttestationError(f"failed to get trust bundle: {exc}", Status.INTERNAL) from None

    async def attest(self, payload: bytes, challenge: Challenge) -> AttestResult:
        cfg = self.config
        if not payload:
            raise AttestationError("missing attestation payload", Status.INVALID_ARGUMENT)
        try:
            ders = pop.unmarshal_attestation_data(payload)
        except pop.X509PopError as exc:
            raise AttestationError(str(exc), Status.INVALID_ARGUMENT) from None
        if not ders:
            raise AttestationError("no certificate to attest", Status.INVALID_ARGUMENT)
        if len(ders) - 1 > cfg.max_intermediates:
            raise AttestationError("too many intermediate certificates", Status.INVALID_ARGUMENT)
        try:
            leaf = x509.load_der_x509_certificate(ders[0])
        except ValueError as exc:
            raise AttestationError(f"unable to parse leaf certificate: {exc}", Status.INVALID_ARGUMENT) from None
        if _rsa_too_large(leaf, cfg.max_rsa_key_size):
            raise AttestationError("leaf certificate key size too large", Status.INVALID_ARGUMENT)
        intermediates = []
        for i, der in enumerate(ders[1:]):
            try:
                cert = x509.load_der_x509_certificate(der)
            except ValueError as exc:
                raise AttestationError(
                    f"unable to parse intermediate certificate {i}: {exc}", Status.INVALID_ARGUMENT) from None
            if _rsa_too_large(cert, cfg.max_rsa_key_size):
                raise AttestationError(f"intermediate certificate {i} key size too large", Status.INVALID_ARGUMENT)
            intermediates.append(cert)

        roots = await self._trust_bundle()
        try:
            chain = await asyncio.to_thread(pop.verify_chain, leaf, intermediates, roots)
        except pop.X509PopError as exc:
            raise AttestationError(f"certificate verification failed: {exc}") from None

        # The chain is trusted; now the agent must prove it holds the leaf's private key.
        try:
            issued = pop.generate_challenge(leaf)
        except pop.X509PopError as exc:
            raise AttestationError(f"unable to generate challenge: {exc}") from None
        reply = await challenge(pop.marshal_challenge(issued))
        try:
            response = pop.unmarshal_response(reply)
        except pop.X509PopError as exc:
            raise AttestationError(str(exc), Status.INVALID_ARGUMENT) from None
        try:
            await asyncio.to_thread(pop.verify_response, leaf.public_key(), issued, response)
        except pop.X509PopError as exc:
            raise AttestationError(f"challenge response verification failed: {exc}") from None

        svid_path = ""
        if cfg.mode == "spiffe":
            svid_path = self._svid_path(leaf)
        san = pop.uri_san_selectors(leaf, self.trust_domain.name)
        try:
            sid = make_agent_id(self.trust_domain, cfg.template,
                                pop.template_data(self.trust_domain.name, leaf, svid_path, san))
        except TemplateError as exc:
            raise AttestationError(f"failed to make spiffe id: {exc}", Status.INTERNAL) from None
        selectors = [Selector(pop.SELECTOR_TYPE, v) for v in pop.selector_values(leaf, chain, san)]
        return AttestResult(sid, selectors, can_reattest=True)

    def _svid_path(self, leaf: x509.Certificate) -> str:
        uris = [u for u in pop.uri_sans(leaf) if urllib.parse.urlsplit(u).scheme == "spiffe"]
        if not uris:
            raise AttestationError("valid SVID x509 cert not found")
        path = urllib.parse.urlsplit(uris[0]).path
        if not path.startswith(self.config.svid_prefix):
            raise AttestationError("x509 cert doesnt match SVID prefix")
        return path[len(self.config.svid_prefix):]
