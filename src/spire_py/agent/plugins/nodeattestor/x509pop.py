"""NodeAttestor "x509pop" (agent): sends the node's certificate chain and signs the server's
nonce with the matching private key.

The credentials are read again for every attestation, so certificates rotated on disk
are picked up; configure only checks that they load. With ``spiffe_endpoint_socket``
the identity is an X509-SVID fetched from a SPIFFE Workload API instead.
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass
from typing import Any

from cryptography import x509
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa

from ....common.plugin import EXACT_STR, Field, PluginConfigError, PluginContext, Schema, register
from ....common.plugins import x509pop as pop
from ....common.x509util import split_der_chain
from .base import AgentAttestationError, AgentNodeAttestor

_KEYS = ("private_key_path", "certificate_path", "intermediates_path", "spiffe_endpoint_socket")


class CredentialError(AgentAttestationError):
    """Credentials that cannot be loaded; ``key`` names the config key pointing at them."""

    def __init__(self, key: str, message: str) -> None:
        super().__init__(message)
        self.key = key


def _reason(exc: BaseException) -> str:
    return exc.strerror if isinstance(exc, OSError) and exc.strerror else str(exc)


def _read(path: str, key: str, what: str) -> bytes:
    try:
        with open(path, "rb") as f:
            return f.read()
    except OSError as exc:
        raise CredentialError(key, f'unable to load keypair: {what} "{path}": {_reason(exc)}') from None


def load_key_pair(cert_path: str, key_path: str) -> tuple[list[x509.Certificate], Any]:
    """Certificates (leaf first) and the private key, which must match the leaf, as Go's
    tls.LoadX509KeyPair."""
    cert_pem = _read(cert_path, "certificate_path", "certificate")
    key_pem = _read(key_path, "private_key_path", "private key")

    def cert_error(reason: str) -> CredentialError:
        return CredentialError("certificate_path", f'unable to load keypair: certificate "{cert_path}": {reason}')

    def key_error(reason: str) -> CredentialError:
        return CredentialError("private_key_path", f'unable to load keypair: private key "{key_path}": {reason}')

    certs = []
    for kind, block in pop.pem_blocks(cert_pem):
        if kind == "CERTIFICATE":
            try:
                certs.append(x509.load_pem_x509_certificate(block))
            except ValueError as exc:
                raise cert_error(str(exc)) from None
    if not certs:
        raise cert_error("failed to find any PEM data in certificate input")
    blocks = [block for kind, block in pop.pem_blocks(key_pem) if kind.endswith("PRIVATE KEY")]
    if not blocks:
        raise key_error("failed to find any PEM data in key input")
    try:
        key = serialization.load_pem_private_key(blocks[0], password=None)
    except (ValueError, TypeError) as exc:
        raise key_error(str(exc)) from None
    if not isinstance(key, (rsa.RSAPrivateKey, ec.EllipticCurvePrivateKey)):
        raise key_error(f"unsupported private key type {type(key).__name__}")
    spki = (serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo)
    if certs[0].public_key().public_bytes(*spki) != key.public_key().public_bytes(*spki):
        raise key_error(f'private key does not match the public key of "{cert_path}"')
    return certs, key


async def fetch_x509_svid(socket: str) -> tuple[list[bytes], Any]:
    """The first X509-SVID of a SPIFFE Workload API: (DER chain, private key)."""
    from grpclib.client import Channel
    from grpclib.exceptions import GRPCError

    from ....proto.workload import workload_grpc, workload_pb2

    path = socket
    for prefix in ("unix://", "unix:"):
        if path.startswith(prefix):
            path = path[len(prefix):]
            break
    channel = Channel(path=path)
    try:
        stub = workload_grpc.SpiffeWorkloadAPIStub(channel)
        async with stub.FetchX509SVID.open(metadata={"workload.spiffe.io": "true"}, timeout=30) as stream:
            await stream.send_message(workload_pb2.X509SVIDRequest(), end=True)
            resp = await stream.recv_message()
            await stream.cancel()
    except (GRPCError, OSError) as exc:
        raise AgentAttestationError(f"unable to fetch SVID from workload API: {exc}") from None
    finally:
        channel.close()
    if resp is None or not resp.svids:
        raise AgentAttestationError("unable to fetch SVID from workload API: no X509-SVID returned")
    svid = resp.svids[0]
    try:
        chain = split_der_chain(bytes(svid.x509_svid))
        key = serialization.load_der_private_key(bytes(svid.x509_svid_key), password=None)
    except (ValueError, TypeError) as exc:
        raise AgentAttestationError(f"unable to fetch SVID from workload API: {exc}") from None
    return chain, key


@dataclass
class X509PopConfig:
    private_key_path: str
    certificate_path: str
    intermediates_path: str
    spiffe_endpoint_socket: str


@register("agent")
class X509PopAttestor(AgentNodeAttestor):
    NAME = pop.PLUGIN_NAME
    CONFIG = Schema([Field(name, EXACT_STR) for name in _KEYS])
    CONFIG_TYPE = X509PopConfig

    def __init__(self, private_key_path: str, certificate_path: str, intermediates_path: str = "",
                 spiffe_endpoint_socket: str = "") -> None:
        self.private_key_path = private_key_path
        self.certificate_path = certificate_path
        self.intermediates_path = intermediates_path
        self.spiffe_endpoint_socket = spiffe_endpoint_socket
        self._key: Any = None

    @classmethod
    def validate(cls, config: X509PopConfig, ctx: PluginContext) -> None:
        # As SPIRE's Validate: keys only; the credentials may not be provisioned yet.
        if not config.spiffe_endpoint_socket:
            if not config.private_key_path:
                raise PluginConfigError("private_key_path is required", "private_key_path")
            if not config.certificate_path:
                raise PluginConfigError("certificate_path is required", "certificate_path")

    @classmethod
    def from_config(cls, config: X509PopConfig, ctx: PluginContext) -> "X509PopAttestor":
        plugin = cls(config.private_key_path, config.certificate_path, config.intermediates_path,
                     config.spiffe_endpoint_socket)
        if not plugin.spiffe_endpoint_socket:
            # As SPIRE's Configure: the configuration must produce usable credentials.
            try:
                plugin._load_files()
            except CredentialError as exc:
                raise PluginConfigError(str(exc), exc.key) from None
        return plugin

    def _load_files(self) -> tuple[list[bytes], Any]:
        certs, key = load_key_pair(self.certificate_path, self.private_key_path)
        ders = [c.public_bytes(serialization.Encoding.DER) for c in certs]
        if self.intermediates_path.strip():
            try:
                intermediates = pop.load_certificates(self.intermediates_path)
            except (OSError, pop.X509PopError) as exc:
                message = f'unable to load intermediate certificates "{self.intermediates_path}": {_reason(exc)}'
                raise CredentialError("intermediates_path", message) from None
            ders.extend(c.public_bytes(serialization.Encoding.DER) for c in intermediates)
        return ders, key

    async def payload(self) -> bytes:
        if self.spiffe_endpoint_socket:
            ders, key = await fetch_x509_svid(self.spiffe_endpoint_socket)
        else:
            ders, key = await asyncio.to_thread(self._load_files)
        self._key = key
        return pop.marshal_attestation_data(ders)

    async def respond(self, challenge: bytes) -> bytes:
        if self._key is None:
            raise AgentAttestationError("x509pop: challenge received before the attestation payload was sent")
        try:
            parsed = pop.unmarshal_challenge(challenge)
            return pop.marshal_response(pop.calculate_response(self._key, parsed))
        except pop.X509PopError as exc:
            raise AgentAttestationError(f"failed to calculate challenge response: {exc}") from None

