"""UpstreamAuthority "awssecret": the upstream CA's key and certificates from AWS Secrets Manager.

As SPIRE's plugin: ``cert_file_arn`` and ``key_file_arn`` (required) name secrets whose
SecretString is PEM; without ``bundle_file_arn`` the certificate must be one self-signed
CA, which is the upstream root; with it, ``cert_file_arn`` holds the signing CA then
its intermediates, which must chain to a root in ``bundle_file_arn``. The secrets are
read once, when the server starts (SPIRE advises against rotating them); a missing
secret or a refused call stops the start with the ARN and AWS's answer. Credentials:
``access_key_id``/``secret_access_key``/``secret_token`` (``AWS_SESSION_TOKEN`` when
unset), else boto3's default chain; ``assume_role_arn`` assumes that role first.
"""

from __future__ import annotations

import os
import time
from dataclasses import dataclass
from typing import Any, Optional, Union

from cryptography import x509

from ....common import log
from ....common.keys import KeyTypeError, load_private_key, public_keys_equal
from ....common.plugin import STR, Field, Plugin, PluginConfigError, PluginContext, Schema, register
from ....common.plugins import aws_session
from ....common.spiffeid import TrustDomain
from ....common.x509util import (
    X509SVIDError, is_ca, is_self_signed, key_usage, load_pem_certificates, verify_chain,
)
from .disk import UpstreamAuthorityError, _UpstreamCA, mint_with

_log = log.get("upstreamauthority.awssecret")

_KEYS = ("region", "cert_file_arn", "key_file_arn", "bundle_file_arn", "access_key_id", "secret_access_key",
         "secret_token", "assume_role_arn")


@dataclass
class AWSSecretConfig:
    region: str
    cert_file_arn: str
    key_file_arn: str
    bundle_file_arn: str
    access_key_id: str
    secret_access_key: str
    secret_token: str
    assume_role_arn: str


def read_secret(client: Any, arn: str, key: str) -> str:
    try:
        out = client.get_secret_value(SecretId=arn)
    except Exception as exc:  # botocore: refused, missing, unreachable
        raise UpstreamAuthorityError(f"unable to read {arn}: {aws_session.error_message(exc)}", key) from None
    value = out.get("SecretString")
    if not isinstance(value, str):
        raise UpstreamAuthorityError(f"unable to read {arn}: response or SecretString is nil", key)
    return value


def upstream_ca_from_pem(key_pem: str, certs_pem: str, bundle_pem: str = "",
                         now: Optional[float] = None) -> _UpstreamCA:
    """The checks of SPIRE's loadUpstreamCAAndCerts (and disk's): key matches, CA, chains to a root."""
    try:
        key = load_private_key(key_pem.encode())
    except (KeyTypeError, ValueError) as exc:
        raise UpstreamAuthorityError(f"unable to parse private key: {exc}", "key_file_arn") from None
    try:
        certs = load_pem_certificates(certs_pem.encode())
    except X509SVIDError as exc:
        raise UpstreamAuthorityError(f"unable to parse certificate: {exc}", "cert_file_arn") from None
    if not certs:
        raise UpstreamAuthorityError("unable to parse certificate: no PEM certificates", "cert_file_arn")
    ca_cert = certs[0]
    if bundle_pem:
        try:
            roots = load_pem_certificates(bundle_pem.encode())
        except X509SVIDError as exc:
            raise UpstreamAuthorityError(f"unable to load upstream CA bundle: {exc}", "bundle_file_arn") from None
        if not roots:
            raise UpstreamAuthorityError("unable to load upstream CA bundle: no PEM certificates", "bundle_file_arn")
        chain = certs
    else:
        if len(certs) != 1 or not is_self_signed(ca_cert):
            raise UpstreamAuthorityError("with no bundle_file_arn configured only self-signed CAs are supported",
                                         "cert_file_arn")
        roots, chain = certs, []
    if not public_keys_equal(ca_cert.public_key(), key):  # type: ignore[arg-type]
        raise UpstreamAuthorityError("unable to load upstream CA: certificate and private key do not match",
                                     "key_file_arn")
    ku = key_usage(ca_cert)
    if not is_ca(ca_cert) or (ku is not None and not ku.key_cert_sign):
        raise UpstreamAuthorityError(
            "unable to load upstream CA: certificate is not a CA allowed to sign certificates", "cert_file_arn")
    try:
        verify_chain(ca_cert, certs[1:], roots, now)
    except X509SVIDError:
        raise UpstreamAuthorityError("unable to load upstream CA: certificate could not be validated with the "
                                     "provided bundle or is not self signed", "cert_file_arn") from None
    return _UpstreamCA(key, ca_cert, chain, roots)


@register("server")
class AWSSecretUpstreamAuthority(Plugin):
    TYPE = "UpstreamAuthority"
    NAME = "awssecret"
    CONFIG = Schema([Field(name, STR, default="") for name in _KEYS])
    CONFIG_TYPE = AWSSecretConfig

    def __init__(self, trust_domain: Union[TrustDomain, str], ca: _UpstreamCA) -> None:
        self.trust_domain = trust_domain if isinstance(trust_domain, TrustDomain) else TrustDomain.parse(trust_domain)
        self._ca = ca

    @classmethod
    def validate(cls, config: AWSSecretConfig, ctx: PluginContext) -> None:
        for key in ("cert_file_arn", "key_file_arn"):
            if not getattr(config, key):
                raise PluginConfigError(f"configuration missing '{key}' value", key)
        try:
            aws_session.check_static_credentials(config.access_key_id, config.secret_access_key)
        except aws_session.AWSConfigError as exc:
            raise PluginConfigError(str(exc), "secret_access_key" if config.access_key_id else "access_key_id") from None

    @classmethod
    def from_config(cls, config: AWSSecretConfig, ctx: PluginContext) -> "AWSSecretUpstreamAuthority":
        token = config.secret_token or os.environ.get("AWS_SESSION_TOKEN", "")
        try:
            session = aws_session.new_session(config.region, config.access_key_id, config.secret_access_key,
                                              token, config.assume_role_arn)
            client = aws_session.client(session, "secretsmanager", config.region)
        except Exception as exc:
            raise PluginConfigError(f"failed to create AWS client: {aws_session.error_message(exc)}", "region") from None
        try:
            key_pem = read_secret(client, config.key_file_arn, "key_file_arn")
            certs_pem = read_secret(client, config.cert_file_arn, "cert_file_arn")
            bundle_pem = read_secret(client, config.bundle_file_arn, "bundle_file_arn") if config.bundle_file_arn else ""
            ca = upstream_ca_from_pem(key_pem, certs_pem, bundle_pem)
        except UpstreamAuthorityError as exc:
            raise PluginConfigError(str(exc), exc.key) from None
        _log.info("Loaded upstream CA from AWS Secrets Manager", extra=log.fields(
            cert_file_arn=config.cert_file_arn, subject=ca.cert.subject.rfc4514_string()))
        return cls(ctx.trust_domain, ca)

    def mint_x509_ca(
        self,
        csr_or_public_key: Any,
        trust_domain: Union[TrustDomain, str, None] = None,
        ttl: float = 0,
        now: Optional[float] = None,
    ) -> tuple[list[x509.Certificate], list[x509.Certificate]]:
        """As disk's: [new CA, then cert_file_arn's certificates when not self-signed], roots. NotAfter is
        now + ttl (1 h when 0), capped at the upstream CA's."""
        return mint_with(self._ca, self.trust_domain, csr_or_public_key, trust_domain, ttl,
                         time.time() if now is None else now)

    def publish_jwt_key(self, *_args: Any, **_kwargs: Any) -> None:
        raise NotImplementedError("publishing upstream is unsupported")

    async def close(self) -> None:
        return None
