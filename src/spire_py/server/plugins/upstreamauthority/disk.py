"""UpstreamAuthority "disk": mints the server's intermediate CA with a CA key and cert from disk.

Behaviour of SPIRE's disk plugin: ``cert_file_path`` and ``key_file_path`` are
required; without ``bundle_file_path`` the certificate must be a single
self-signed CA, which is then the upstream root; with it, ``cert_file_path``
holds the upstream CA first, then any intermediates, and must chain to a root
of ``bundle_file_path``. Files are reloaded on every mint so an operator can
rotate them without a restart; if the reload fails the last good CA is used.
Keys may be PKCS#1, PKCS#8 or SEC1 PEM (EC or RSA), as openssl writes them.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Any, Optional, Union

from cryptography import x509
from cryptography.hazmat.primitives.asymmetric import ec, rsa

from ....common import log
from ....common.errors import SpireError
from ....common.keys import KeyTypeError, PrivateKey, PublicKey, load_private_key, public_keys_equal
from ....common.plugin import EXACT_STR, Field, Plugin, PluginConfigError, PluginContext, Schema, register
from ....common.spiffeid import TrustDomain
from ....common.x509util import (
    X509SVIDError, create_ca_certificate, is_ca, is_self_signed, key_usage, load_pem_certificates,
    new_serial_number, verify_chain, x509_ca_subject,
)

_log = log.get("upstreamauthority.disk")

# SPIRE's x509svid.DefaultUpstreamCATTL: used when no TTL is asked for.
DEFAULT_UPSTREAM_CA_TTL = 3600


class UpstreamAuthorityError(SpireError, RuntimeError):
    """The upstream CA cannot be loaded or cannot sign; ``key`` names the config key at fault."""

    def __init__(self, message: str, key: Optional[str] = None) -> None:
        super().__init__(message)
        self.key = key


@dataclass
class _UpstreamCA:
    key: PrivateKey
    cert: x509.Certificate
    chain: list[x509.Certificate]  # cert_file_path's certificates when joining a PKI; empty when self-signed
    roots: list[x509.Certificate]


def _read(path: str, what: str, key: str) -> bytes:
    try:
        with open(path, "rb") as f:
            return f.read()
    except OSError as exc:
        raise UpstreamAuthorityError(f"unable to load upstream CA {what}: {exc}", key) from None


def load_upstream_ca(cert_file_path: str, key_file_path: str, bundle_file_path: str = "",
                     now: Optional[float] = None) -> _UpstreamCA:
    """Load and check the CA as SPIRE's loadUpstreamCAAndCerts does (plus: it must be a CA)."""
    try:
        key = load_private_key(_read(key_file_path, "key", "key_file_path"))
    except KeyTypeError as exc:
        raise UpstreamAuthorityError(f"unable to load upstream CA key: {exc}", "key_file_path") from None
    try:
        certs = load_pem_certificates(_read(cert_file_path, "cert", "cert_file_path"))
    except X509SVIDError as exc:
        raise UpstreamAuthorityError(f"unable to load upstream CA cert: {exc}", "cert_file_path") from None
    if not certs:
        raise UpstreamAuthorityError("unable to load upstream CA cert: no certificates found", "cert_file_path")
    ca_cert = certs[0]
    if bundle_file_path:
        try:
            roots = load_pem_certificates(_read(bundle_file_path, "bundle", "bundle_file_path"))
        except X509SVIDError as exc:
            raise UpstreamAuthorityError(f"unable to load upstream CA bundle: {exc}", "bundle_file_path") from None
        chain = certs
    else:
        if len(certs) != 1:
            raise UpstreamAuthorityError(
                "with no bundle_file_path configured only self-signed CAs are supported", "cert_file_path")
        if not is_self_signed(ca_cert):
            raise UpstreamAuthorityError(
                "unable to load upstream CA: certificate cannot be validated with the provided bundle "
                "or is not self-signed", "cert_file_path")
        roots, chain = certs, []
    if not public_keys_equal(ca_cert.public_key(), key):  # type: ignore[arg-type]
        raise UpstreamAuthorityError(
            "unable to load upstream CA: certificate and private key do not match", "key_file_path")
    ku = key_usage(ca_cert)
    if not is_ca(ca_cert) or (ku is not None and not ku.key_cert_sign):
        raise UpstreamAuthorityError(
            "unable to load upstream CA: certificate is not a CA allowed to sign certificates", "cert_file_path")
    try:
        verify_chain(ca_cert, certs[1:], roots, now)
    except X509SVIDError as exc:
        raise UpstreamAuthorityError(
            "unable to load upstream CA: certificate cannot be validated with the provided bundle "
            f"or is not self-signed: {exc}", "cert_file_path") from None
    return _UpstreamCA(key, ca_cert, chain, roots)


def _csr_subject_and_key(csr_or_public_key: Any, td: TrustDomain) -> tuple[x509.Name, PublicKey]:
    """As SPIRE's ParseAndValidateCSR: a valid signature and exactly the trust domain ID as URI SAN."""
    if isinstance(csr_or_public_key, (bytes, bytearray)):
        try:
            csr_or_public_key = x509.load_der_x509_csr(bytes(csr_or_public_key))
        except ValueError as exc:
            raise UpstreamAuthorityError(f"unable to sign CSR: unable to parse CSR: {exc}") from None
    if isinstance(csr_or_public_key, (ec.EllipticCurvePublicKey, rsa.RSAPublicKey)):
        return x509_ca_subject(serial_number=str(new_serial_number())), csr_or_public_key
    if not isinstance(csr_or_public_key, x509.CertificateSigningRequest):
        raise UpstreamAuthorityError(f"unable to sign CSR: expected a CSR or an EC/RSA public key, "
                                     f"got {type(csr_or_public_key).__name__}")
    csr = csr_or_public_key
    if not csr.is_signature_valid:
        raise UpstreamAuthorityError("unable to sign CSR: CSR signature check failed")
    try:
        uris = csr.extensions.get_extension_for_class(x509.SubjectAlternativeName).value.get_values_for_type(
            x509.UniformResourceIdentifier)
    except x509.ExtensionNotFound:
        uris = []
    if len(uris) != 1:
        raise UpstreamAuthorityError("unable to sign CSR: CSR must have exactly one URI SAN")
    if uris[0] != td.id_string():
        raise UpstreamAuthorityError(f'unable to sign CSR: CSR with SPIFFE ID "{uris[0]}" is invalid: '
                                     f'must use the trust domain ID for trust domain "{td}"')
    return csr.subject, csr.public_key()  # type: ignore[return-value]


def mint_with(
    ca: _UpstreamCA,
    own_td: TrustDomain,
    csr_or_public_key: Any,
    trust_domain: Union[TrustDomain, str, None],
    ttl: float,
    now: float,
) -> tuple[list[x509.Certificate], list[x509.Certificate]]:
    """Sign an intermediate CA with a locally held upstream CA (disk, awssecret): [new CA, then the
    upstream's chain when not self-signed], upstream roots. NotAfter is now + ttl (1 h when 0),
    capped at the upstream CA's."""
    td = own_td if trust_domain is None else (
        trust_domain if isinstance(trust_domain, TrustDomain) else TrustDomain.parse(trust_domain))
    subject, public_key = _csr_subject_and_key(csr_or_public_key, td)
    cert = create_ca_certificate(public_key, ca.key, subject=subject,
                                 ttl=ttl if ttl and ttl > 0 else DEFAULT_UPSTREAM_CA_TTL, now=now,
                                 issuer=ca.cert, uris=[td.id_string()])
    return [cert] + list(ca.chain), list(ca.roots)


@dataclass
class DiskUpstreamAuthorityConfig:
    cert_file_path: str
    key_file_path: str
    bundle_file_path: str


@register("server")
class DiskUpstreamAuthority(Plugin):
    TYPE = "UpstreamAuthority"
    NAME = "disk"
    CONFIG = Schema([Field(name, EXACT_STR, default="")
                     for name in ("cert_file_path", "key_file_path", "bundle_file_path")])
    CONFIG_TYPE = DiskUpstreamAuthorityConfig

    def __init__(self, trust_domain: Union[TrustDomain, str], cert_file_path: str, key_file_path: str,
                 bundle_file_path: str = "") -> None:
        self.trust_domain = trust_domain if isinstance(trust_domain, TrustDomain) else TrustDomain.parse(trust_domain)
        self.cert_file_path = cert_file_path
        self.key_file_path = key_file_path
        self.bundle_file_path = bundle_file_path
        self._ca = load_upstream_ca(cert_file_path, key_file_path, bundle_file_path)

    @classmethod
    def validate(cls, config: DiskUpstreamAuthorityConfig, ctx: PluginContext) -> None:
        # Files are read by configure, not by validate: they may not be provisioned yet.
        for key in ("cert_file_path", "key_file_path"):
            if not getattr(config, key):
                raise PluginConfigError("'cert_file_path' and 'key_file_path' must be set and not empty", key)

    @classmethod
    def from_config(cls, config: DiskUpstreamAuthorityConfig, ctx: PluginContext) -> "DiskUpstreamAuthority":
        try:
            return cls(ctx.trust_domain, config.cert_file_path, config.key_file_path, config.bundle_file_path)
        except UpstreamAuthorityError as exc:
            raise PluginConfigError(str(exc), exc.key) from None

    def _reload(self, now: float) -> _UpstreamCA:
        try:
            self._ca = load_upstream_ca(self.cert_file_path, self.key_file_path, self.bundle_file_path, now)
        except UpstreamAuthorityError as exc:
            _log.warning("Unable to reload upstream CA; using the one loaded before",
                         extra=log.fields(error=str(exc)))
        return self._ca

    def mint_x509_ca(
        self,
        csr_or_public_key: Any,
        trust_domain: Union[TrustDomain, str, None] = None,
        ttl: float = 0,
        now: Optional[float] = None,
    ) -> tuple[list[x509.Certificate], list[x509.Certificate]]:
        """Sign an intermediate CA for the trust domain from a CSR (DER or object) or a public key.

        Returns (x509_ca_chain: [new CA, upstream CA and intermediates when not self-signed],
        upstream_x509_roots). NotAfter is now + ttl (1 h when 0), capped at the upstream CA's.
        """
        t = time.time() if now is None else now
        return mint_with(self._reload(t), self.trust_domain, csr_or_public_key, trust_domain, ttl, t)

    def publish_jwt_key(self, *_args: Any, **_kwargs: Any) -> None:
        raise NotImplementedError("publishing upstream is unsupported")
