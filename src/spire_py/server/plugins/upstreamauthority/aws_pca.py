"""UpstreamAuthority "aws_pca": AWS Private CA (ACM PCA) signs the server's intermediate CA.

As SPIRE's plugin: at start, DescribeCertificateAuthority must find
``certificate_authority_arn`` (a CA that is not ACTIVE is logged); ``signing_algorithm``
defaults to the CA's own, ``ca_signing_template_arn`` to
``SubordinateCACertificate_PathLen0/V1``. Each mint sends the server's CSR to
IssueCertificate (validity: now + the CA TTL), waits for issuance (the SDK's
``certificate_issued`` waiter, at most 3 minutes) and reads GetCertificate: the chain's
last certificate is the upstream root (plus ``supplemental_bundle_path``'s), the issued
certificate followed by the rest of the chain is the X.509 CA chain. ``endpoint``
overrides the service endpoint; credentials are boto3's default chain, ``assume_role_arn``
assumes that role first.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Any, Optional, Union

from cryptography import x509
from cryptography.hazmat.primitives import serialization

from ....common import log
from ....common.plugin import STR, Field, Plugin, PluginConfigError, PluginContext, Schema, register
from ....common.plugins import aws_session
from ....common.spiffeid import TrustDomain
from ....common.x509util import X509SVIDError, load_pem_certificates
from .disk import DEFAULT_UPSTREAM_CA_TTL, UpstreamAuthorityError, _csr_subject_and_key

_log = log.get("upstreamauthority.aws_pca")

DEFAULT_CA_SIGNING_TEMPLATE_ARN = "arn:aws:acm-pca:::template/SubordinateCACertificate_PathLen0/V1"
MAX_ISSUANCE_WAIT_SECONDS = 180
WAIT_DELAY_SECONDS = 1
_KEYS = ("region", "endpoint", "certificate_authority_arn", "signing_algorithm", "ca_signing_template_arn",
         "assume_role_arn", "supplemental_bundle_path")


@dataclass
class AWSPCAConfig:
    region: str
    endpoint: str
    certificate_authority_arn: str
    signing_algorithm: str
    ca_signing_template_arn: str
    assume_role_arn: str
    supplemental_bundle_path: str


def load_supplemental_bundle(path: str) -> list[x509.Certificate]:
    try:
        with open(path, "rb") as f:
            return load_pem_certificates(f.read(16 * 1024 * 1024))
    except OSError as exc:
        raise PluginConfigError(f"failed to load supplemental bundle: {exc.strerror or exc}",
                                "supplemental_bundle_path") from None
    except X509SVIDError as exc:
        raise PluginConfigError(f"failed to load supplemental bundle: {exc}", "supplemental_bundle_path") from None


def _dedupe(certs: list[x509.Certificate]) -> list[x509.Certificate]:
    seen, out = set(), []
    for c in certs:
        der = c.public_bytes(serialization.Encoding.DER)
        if der not in seen:
            seen.add(der)
            out.append(c)
    return out


@register("server")
class AWSPCAUpstreamAuthority(Plugin):
    TYPE = "UpstreamAuthority"
    NAME = "aws_pca"
    CONFIG = Schema([Field(name, STR, default="") for name in _KEYS])
    CONFIG_TYPE = AWSPCAConfig

    def __init__(self, trust_domain: Union[TrustDomain, str], client: Any, ca_arn: str, signing_algorithm: str,
                 template_arn: str, supplemental: list[x509.Certificate]) -> None:
        self.trust_domain = trust_domain if isinstance(trust_domain, TrustDomain) else TrustDomain.parse(trust_domain)
        self.client = client
        self.ca_arn = ca_arn
        self.signing_algorithm = signing_algorithm
        self.template_arn = template_arn
        self.supplemental = supplemental

    @classmethod
    def validate(cls, config: AWSPCAConfig, ctx: PluginContext) -> None:
        if not config.region:
            raise PluginConfigError("plugin configuration is missing the region", "region")
        if not config.certificate_authority_arn:
            raise PluginConfigError("plugin configuration is missing the certificate_authority_arn",
                                    "certificate_authority_arn")
        if config.supplemental_bundle_path:
            load_supplemental_bundle(config.supplemental_bundle_path)

    @classmethod
    def from_config(cls, config: AWSPCAConfig, ctx: PluginContext) -> "AWSPCAUpstreamAuthority":
        supplemental = load_supplemental_bundle(config.supplemental_bundle_path) if config.supplemental_bundle_path else []
        try:
            session = aws_session.new_session(config.region, assume_role_arn=config.assume_role_arn)
            client = aws_session.client(session, "acm-pca", config.region, config.endpoint or None)
        except Exception as exc:
            raise PluginConfigError(f"failed to create client: {aws_session.error_message(exc)}", "region") from None
        _log.info("Looking up certificate authority from ACM",
                  extra=log.fields(certificate_authority_arn=config.certificate_authority_arn))
        try:
            ca = client.describe_certificate_authority(
                CertificateAuthorityArn=config.certificate_authority_arn)["CertificateAuthority"]
        except Exception as exc:
            raise PluginConfigError(f"failed to describe CertificateAuthority: {aws_session.error_message(exc)}",
                                    "certificate_authority_arn") from None
        if ca.get("Status") != "ACTIVE":
            _log.warning("Certificate is in an invalid state for issuance", extra=log.fields(
                certificate_authority_arn=config.certificate_authority_arn, status=ca.get("Status")))
        algorithm = config.signing_algorithm or ca.get("CertificateAuthorityConfiguration", {}).get(
            "SigningAlgorithm", "")
        template = config.ca_signing_template_arn or DEFAULT_CA_SIGNING_TEMPLATE_ARN
        return cls(ctx.trust_domain, client, config.certificate_authority_arn, algorithm, template, supplemental)

    def mint_x509_ca(
        self,
        csr_or_public_key: Any,
        trust_domain: Union[TrustDomain, str, None] = None,
        ttl: float = 0,
        now: Optional[float] = None,
    ) -> tuple[list[x509.Certificate], list[x509.Certificate]]:
        if not isinstance(csr_or_public_key, (bytes, bytearray, x509.CertificateSigningRequest)):
            raise UpstreamAuthorityError("aws_pca signs certificate signing requests only")
        td = self.trust_domain if trust_domain is None else (
            trust_domain if isinstance(trust_domain, TrustDomain) else TrustDomain.parse(trust_domain))
        _csr_subject_and_key(csr_or_public_key, td)  # the same CSR checks as the other upstreams
        csr = (x509.load_der_x509_csr(bytes(csr_or_public_key))
               if isinstance(csr_or_public_key, (bytes, bytearray)) else csr_or_public_key)
        t = time.time() if now is None else now
        ttl = ttl if ttl and ttl > 0 else DEFAULT_UPSTREAM_CA_TTL
        try:
            issued = self.client.issue_certificate(
                CertificateAuthorityArn=self.ca_arn, Csr=csr.public_bytes(serialization.Encoding.PEM),
                SigningAlgorithm=self.signing_algorithm, TemplateArn=self.template_arn,
                Validity={"Type": "ABSOLUTE", "Value": int(t + ttl)})
        except Exception as exc:
            raise UpstreamAuthorityError(f"failed submitting CSR: {aws_session.error_message(exc)}") from None
        cert_arn = issued["CertificateArn"]
        _log.info("Waiting for issuance from ACM", extra=log.fields(certificate_arn=cert_arn))
        request = {"CertificateAuthorityArn": self.ca_arn, "CertificateArn": cert_arn}
        try:
            self.client.get_waiter("certificate_issued").wait(**request, WaiterConfig={
                "Delay": WAIT_DELAY_SECONDS, "MaxAttempts": MAX_ISSUANCE_WAIT_SECONDS // WAIT_DELAY_SECONDS})
            got = self.client.get_certificate(**request)
        except Exception as exc:
            raise UpstreamAuthorityError(f"failed waiting for issuance: {aws_session.error_message(exc)}") from None
        try:
            cert = x509.load_pem_x509_certificate(got["Certificate"].encode())
            chain = load_pem_certificates(got.get("CertificateChain", "").encode())
        except (ValueError, X509SVIDError) as exc:
            raise UpstreamAuthorityError(f"failed to parse certificate from response: {exc}") from None
        if not chain:
            raise UpstreamAuthorityError("ACM returned no certificate chain for the issued CA")
        # ACM's chain runs from the issuer up to the root: the last one is the upstream root.
        roots = _dedupe([chain[-1]] + self.supplemental)
        _log.info("Certificate and chain received", extra=log.fields(certificate_arn=cert_arn))
        return [cert] + chain[:-1], roots

    def publish_jwt_key(self, *_args: Any, **_kwargs: Any) -> None:
        raise NotImplementedError("publishing upstream is unsupported")

    async def close(self) -> None:
        return None
