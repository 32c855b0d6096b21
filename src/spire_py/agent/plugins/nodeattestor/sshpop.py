"""NodeAttestor "sshpop" (agent): sends the host's SSH certificate and signs the server's
nonce with the host key.

The key and certificate are read again for every attestation, so a renewed host
certificate is picked up; configure checks that they load and belong together.
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass
from typing import Any

from cryptography.exceptions import UnsupportedAlgorithm
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.types import PrivateKeyTypes
from cryptography.hazmat.primitives.serialization import SSHCertificate, SSHPrivateKeyTypes

from ....common.plugin import EXACT_STR, Field, PluginConfigError, PluginContext, Schema, register
from ....common.plugins import sshpop as pop
from .base import AgentAttestationError, AgentNodeAttestor

class CredentialError(AgentAttestationError):
    """Credentials that cannot be loaded; ``key`` names the config key pointing at them."""

    def __init__(self, key: str, message: str) -> None:
        super().__init__(message)
        self.key = key


def _read(path: str, what: str, key: str) -> bytes:
    try:
        with open(path, "rb") as f:
            return f.read()
    except OSError as exc:
        raise CredentialError(key, f'failed to read {what} file "{path}": {exc.strerror or exc}') from None


def load_host_credentials(key_path: str, cert_path: str) -> tuple[Any, bytes]:
    """The host private key and the wire blob of its certificate."""
    key_data = _read(key_path, "host key", "host_key_path")
    cert_data = _read(cert_path, "host cert", "host_cert_path")
    key: PrivateKeyTypes | SSHPrivateKeyTypes
    try:
        if b"-----BEGIN OPENSSH PRIVATE KEY-----" in key_data:
            key = serialization.load_ssh_private_key(key_data, password=None)
        else:
            key = serialization.load_pem_private_key(key_data, password=None)
    except (ValueError, TypeError, UnsupportedAlgorithm) as exc:
        raise CredentialError("host_key_path", f'failed to parse host key "{key_path}": {exc}') from None
    try:
        cert = serialization.load_ssh_public_identity(cert_data.strip())
    except (ValueError, UnsupportedAlgorithm) as exc:
        raise CredentialError("host_cert_path", f'failed to parse host cert "{cert_path}": {exc}') from None
    if not isinstance(cert, SSHCertificate):
        raise CredentialError("host_cert_path", f'host cert "{cert_path}" is a plain public key, not a certificate')
    fmt = (serialization.Encoding.OpenSSH, serialization.PublicFormat.OpenSSH)
    try:
        matches = key.public_key().public_bytes(*fmt) == cert.public_key().public_bytes(*fmt)
    except (ValueError, TypeError):
        matches = False
    if not matches:
        raise CredentialError("host_key_path", f'host key "{key_path}" does not match the certificate "{cert_path}"')
    return key, pop.cert_blob(cert)


@dataclass
class SshPopConfig:
    host_key_path: str
    host_cert_path: str


def _paths(config: SshPopConfig) -> tuple[str, str]:
    return (config.host_key_path or pop.DEFAULT_HOST_KEY_PATH, config.host_cert_path or pop.DEFAULT_HOST_CERT_PATH)


@register("agent")
class SshPopAttestor(AgentNodeAttestor):
    NAME = pop.PLUGIN_NAME
    CONFIG = Schema([Field("host_key_path", EXACT_STR), Field("host_cert_path", EXACT_STR)])
    CONFIG_TYPE = SshPopConfig

    def __init__(self, host_key_path: str, host_cert_path: str) -> None:
        self.host_key_path = host_key_path
        self.host_cert_path = host_cert_path
        self._key: Any = None

    @classmethod
    def validate(cls, config: SshPopConfig, ctx: PluginContext) -> None:
        # As SPIRE: the host key and certificate must load and belong together (read, nothing written).
        try:
            load_host_credentials(*_paths(config))
        except CredentialError as exc:
            raise PluginConfigError(str(exc), exc.key) from None

    @classmethod
    def from_config(cls, config: SshPopConfig, ctx: PluginContext) -> "SshPopAttestor":
        return cls(*_paths(config))

    async def payload(self) -> bytes:
        key, blob = await asyncio.to_thread(load_host_credentials, self.host_key_path, self.host_cert_path)
        self._key = key
        return pop.marshal_attestation_data(blob)

    async def respond(self, challenge: bytes) -> bytes:
        if self._key is None:
            raise AgentAttestationError("sshpop: challenge received before the attestation payload was sent")
        try:
            return await asyncio.to_thread(pop.calculate_response, self._key, challenge)
        except pop.SshPopError as exc:
            raise AgentAttestationError(f"failed to respond to challenge: {exc}") from None
