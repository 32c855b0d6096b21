"""sshpop: SSH host certificate proof of possession, what both sides share.

Wire compatible with SPIRE's ``pkg/common/plugin/sshpop`` (Go encoding/json of its
structs, so capitalised keys and standard base64 for bytes):

- payload:   ``{"Certificate": <SSH certificate wire blob>}``
- challenge: ``{"Nonce": <32 random bytes>}``
- response:  ``{"Nonce": <32 bytes>, "Signature": {"Format": ..., "Blob": ..., "Rest": null}}``

The agent signs SHA-256(challenge nonce || response nonce) with its host key, the
signature being golang.org/x/crypto/ssh's ``Signature`` (format name and blob as in
RFC 4253/5656/8332/8709). The server accepts a host certificate signed by a
configured CA, valid now, with at least one principal; the first principal is the
hostname, with ``.<canonical_domain>`` removed when that is configured.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import json
import os
import time
from dataclasses import dataclass
from typing import Any, Callable

from cryptography.exceptions import InvalidSignature, UnsupportedAlgorithm
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, ed25519, padding, rsa
from cryptography.hazmat.primitives.asymmetric.utils import decode_dss_signature, encode_dss_signature
from cryptography.hazmat.primitives.serialization import SSHCertificate, SSHCertificateType

from ..errors import SpireError

PLUGIN_NAME = "sshpop"
NONCE_LEN = 32
DEFAULT_HOST_KEY_PATH = "/etc/ssh/ssh_host_rsa_key"
DEFAULT_HOST_CERT_PATH = "/etc/ssh/ssh_host_rsa_key-cert.pub"
DEFAULT_AGENT_PATH_TEMPLATE = "/{{ .PluginName}}/{{ .Fingerprint }}"

_CERT_TIME_INFINITY = 2**64 - 1
_INT64_MAX = 2**63 - 1
# golang.org/x/crypto/ssh leaves source-address to the SSH server; no other critical
# option is understood, so a certificate carrying one is refused.
_SOURCE_ADDRESS = "source-address"


class SshPopError(SpireError, ValueError):
    """A malformed document, an untrusted certificate or a failed proof."""

    def __init__(self, message: str, malformed: bool = False) -> None:
        super().__init__(message)
        self.malformed = malformed  # the peer sent garbage, rather than failing a check


# --- Go encoding/json conventions -------------------------------------------------

def _b64(data: bytes) -> str:
    return base64.b64encode(data).decode("ascii")


def _unb64(value: Any, what: str) -> bytes:
    if value is None:
        return b""
    if not isinstance(value, str):
        raise SshPopError(f"{what}: expected a base64 string", malformed=True)
    try:
        return base64.b64decode(value.replace("\r", "").replace("\n", ""), validate=True)
    except (binascii.Error, ValueError):
        raise SshPopError(f"{what}: illegal base64 data", malformed=True) from None


def _field(obj: dict[str, Any], name: str) -> Any:
    if name in obj:
        return obj[name]
    for key, value in obj.items():
        if key.casefold() == name.casefold():
            return value
    return None


def _object(data: bytes, what: str) -> dict[str, Any]:
    try:
        obj = json.loads(data)
    except (ValueError, UnicodeDecodeError) as exc:
        raise SshPopError(f"{what}: {exc}", malformed=True) from None
    if not isinstance(obj, dict):
        raise SshPopError(f"{what}: expected a JSON object", malformed=True)
    return obj


# --- SSH wire bits: strings and mpints --------------------------------------------

def _sshstr(data: bytes) -> bytes:
    return len(data).to_bytes(4, "big") + data


def _mpint(n: int) -> bytes:
    if n == 0:
        return _sshstr(b"")
    raw = n.to_bytes((n.bit_length() + 8) // 8, "big", signed=True)
    return _sshstr(raw)


def _read_str(data: bytes, what: str) -> tuple[bytes, bytes]:
    if len(data) < 4:
        raise SshPopError(f"{what}: short data", malformed=True)
    n = int.from_bytes(data[:4], "big")
    if len(data) < 4 + n:
        raise SshPopError(f"{what}: short data", malformed=True)
    return data[4:4 + n], data[4 + n:]


# --- certificates and keys ---------------------------------------------------------

def cert_blob(cert: SSHCertificate) -> bytes:
    """The certificate's wire encoding (what Go's ``cert.Marshal()`` returns)."""
    return base64.b64decode(cert.public_bytes().split()[1])


def parse_cert_blob(blob: bytes) -> SSHCertificate:
    key_type, _ = _read_str(blob, "failed to parse public key")
    try:
        parsed = serialization.load_ssh_public_identity(key_type + b" " + base64.b64encode(blob))
    except (ValueError, UnsupportedAlgorithm) as exc:
        raise SshPopError(f"failed to parse public key: {exc}", malformed=True) from None
    if not isinstance(parsed, SSHCertificate):
        raise SshPopError("pubkey in response is not a certificate", malformed=True)
    return parsed


def fingerprint(blob: bytes) -> str:
    """Unpadded URL-safe base64 of SHA-256 over the certificate: the default agent ID."""
    return base64.urlsafe_b64encode(hashlib.sha256(blob).digest()).decode().rstrip("=")


def _key_line(key: Any) -> bytes:
    return key.public_bytes(serialization.Encoding.OpenSSH, serialization.PublicFormat.OpenSSH)


_KEY_TYPES = (b"ssh-rsa", b"ssh-ed25519", b"ecdsa-sha2-nistp256", b"ecdsa-sha2-nistp384", b"ecdsa-sha2-nistp521")


def parse_authorities(lines: list[str]) -> set[bytes]:
    """CA public keys in authorized_keys format (options before the key type are
    skipped, as are blank and comment lines), as canonical ``type base64`` lines."""
    out = set()
    for line in lines:
        text = line.strip()
        if not text or text.startswith("#"):
            continue
        fields = text.encode().split()
        start = next((i for i, f in enumerate(fields) if f in _KEY_TYPES), None)
        if start is None or start + 1 >= len(fields):
            raise SshPopError(f'failed to parse public key "{line}": no key found')
        try:
            key = serialization.load_ssh_public_key(fields[start] + b" " + fields[start + 1])
        except (ValueError, UnsupportedAlgorithm) as exc:
            raise SshPopError(f'failed to parse public key "{line}": {exc}') from None
        out.add(_key_line(key))
    if not out:
        raise SshPopError("must provide at least one cert authority")
    return out


def load_authorities_file(path: str) -> list[str]:
    with open(path, encoding="utf-8") as f:
        lines = [line for line in f.read().split("\n") if line.strip()]
    if not lines:
        raise SshPopError(f'no data found in file: "{path}"')
    return lines


@dataclass
class VerifiedHost:
    cert: SSHCertificate
    blob: bytes
    hostname: str


def verify_attestation_data(data: bytes, authorities: set[bytes], canonical_domain: str,
                            now: int | None = None) -> VerifiedHost:
    """Check the agent's host certificate as x/crypto's CertChecker.CheckHostKey does."""
    blob = _unb64(_field(_object(data, "failed to unmarshal data"), "Certificate"), "failed to unmarshal data")
    if not blob:
        raise SshPopError("no certificate in response", malformed=True)
    cert = parse_cert_blob(blob)
    principals = [p.decode("utf-8", "replace") for p in cert.valid_principals]
    if not principals:
        raise SshPopError("cert has no valid principals")
    addr = f"{principals[0]}:22"

    def refuse(reason: str) -> SshPopError:
        return SshPopError(f"failed to check host key: {reason}")

    if cert.type != SSHCertificateType.HOST:
        raise refuse(f"ssh: certificate presented as a host key has type {cert.type.value}")
    if _key_line(cert.signature_key()) not in authorities:
        raise refuse(f"ssh: no authorities for hostname: {addr}")
    for opt in sorted(cert.critical_options):
        name = opt.decode("utf-8", "replace")
        if name != _SOURCE_ADDRESS:
            raise refuse(f'ssh: unsupported critical option "{name}" in certificate')
    unix_now = int(time.time()) if now is None else now
    if cert.valid_after > _INT64_MAX or unix_now < cert.valid_after:
        raise refuse("ssh: cert is not yet valid")
    if cert.valid_before != _CERT_TIME_INFINITY and (unix_now >= cert.valid_before or cert.valid_before > _INT64_MAX):
        raise refuse("ssh: cert has expired")
    try:
        cert.verify_cert_signature()
    except (InvalidSignature, UnsupportedAlgorithm, ValueError):
        raise refuse("ssh: certificate signature does not verify") from None
    return VerifiedHost(cert, blob, decanonicalize(principals[0], canonical_domain))


def decanonicalize(fqdn: str, domain: str) -> str:
    if not domain:
        return fqdn
    suffix = "." + domain
    if not fqdn.endswith(suffix):
        raise SshPopError(f'failed to decanonicalize hostname: cert principal is not in domain "{suffix}"')
    return fqdn[: -len(suffix)]


def template_data(host: VerifiedHost) -> dict[str, Any]:
    """SPIRE's fields plus those of Go's embedded ssh.Certificate."""
    cert = host.cert

    def strs(d: dict[bytes, bytes]) -> dict[str, str]:
        return {k.decode("utf-8", "replace"): v.decode("utf-8", "replace") for k, v in d.items()}

    critical, extensions = strs(cert.critical_options), strs(cert.extensions)
    return {
        "PluginName": PLUGIN_NAME,
        "Fingerprint": fingerprint(host.blob),
        "Hostname": host.hostname,
        "Serial": cert.serial,
        "CertType": cert.type.value,
        "KeyId": cert.key_id.decode("utf-8", "replace"),
        "ValidPrincipals": [p.decode("utf-8", "replace") for p in cert.valid_principals],
        "ValidAfter": cert.valid_after,
        "ValidBefore": cert.valid_before,
        "CriticalOptions": critical,
        "Extensions": extensions,
        "Permissions": {"CriticalOptions": critical, "Extensions": extensions},
    }


# --- challenge and response ----------------------------------------------------------

def new_nonce() -> bytes:
    return os.urandom(NONCE_LEN)


def combine_nonces(challenge: bytes, response: bytes) -> bytes:
    if len(challenge) != NONCE_LEN:
        raise SshPopError("failed to combine nonces: invalid challenge nonce size")
    if len(response) != NONCE_LEN:
        raise SshPopError("failed to combine nonces: invalid response nonce size")
    return hashlib.sha256(challenge + response).digest()


def marshal_attestation_data(blob: bytes) -> bytes:
    return json.dumps({"Certificate": _b64(blob)}).encode()


def marshal_challenge(nonce: bytes) -> bytes:
    return json.dumps({"Nonce": _b64(nonce)}).encode()


def unmarshal_challenge(data: bytes) -> bytes:
    return _unb64(_field(_object(data, "failed to unmarshal challenge request"), "Nonce"),
                  "failed to unmarshal challenge request")


_HashFactory = Callable[[], hashes.HashAlgorithm]
_EC_TYPES: dict[str, tuple[str, _HashFactory]] = {"secp256r1": ("ecdsa-sha2-nistp256", hashes.SHA256), "secp384r1": ("ecdsa-sha2-nistp384", hashes.SHA384),
             "secp521r1": ("ecdsa-sha2-nistp521", hashes.SHA512)}
_RSA_FORMATS: dict[str, _HashFactory] = {"ssh-rsa": hashes.SHA1, "rsa-sha2-256": hashes.SHA256, "rsa-sha2-512": hashes.SHA512}


def sign(key: Any, data: bytes) -> tuple[str, bytes]:
    """An SSH signature (format, blob). RSA signs as rsa-sha2-256, which Go verifies
    like the ssh-rsa its own signer sends."""
    if isinstance(key, rsa.RSAPrivateKey):
        return "rsa-sha2-256", key.sign(data, padding.PKCS1v15(), hashes.SHA256())
    if isinstance(key, ec.EllipticCurvePrivateKey):
        if key.curve.name not in _EC_TYPES:
            raise SshPopError(f"unsupported host key curve {key.curve.name}")
        fmt, hash_cls = _EC_TYPES[key.curve.name]
        r, s = decode_dss_signature(key.sign(data, ec.ECDSA(hash_cls())))
        return fmt, _mpint(r) + _mpint(s)
    if isinstance(key, ed25519.Ed25519PrivateKey):
        return "ssh-ed25519", key.sign(data)
    raise SshPopError(f"unsupported host key type {type(key).__name__}")


def _read_mpint(data: bytes) -> tuple[int, bytes]:
    raw, rest = _read_str(data, "ssh: malformed ECDSA signature")
    return int.from_bytes(raw, "big", signed=True), rest


def verify_signature(key: Any, data: bytes, fmt: str, blob: bytes) -> None:
    """Raise SshPopError unless ``blob`` is ``key``'s signature over ``data``, as x/crypto's Verify."""
    try:
        if isinstance(key, rsa.RSAPublicKey):
            if fmt not in _RSA_FORMATS:
                raise SshPopError(f"ssh: signature type {fmt} for key type ssh-rsa")
            size = (key.key_size + 7) // 8
            if len(blob) < size:  # tolerated short signatures, as OpenSSH and Go
                blob = bytes(size - len(blob)) + blob
            key.verify(blob, data, padding.PKCS1v15(), _RSA_FORMATS[fmt]())
        elif isinstance(key, ec.EllipticCurvePublicKey):
            want, hash_cls = _EC_TYPES.get(key.curve.name, ("", hashes.SHA256))
            if fmt != want:
                raise SshPopError(f"ssh: signature type {fmt} for key type {want or key.curve.name}")
            r, rest = _read_mpint(blob)
            s, rest = _read_mpint(rest)
            if rest or r <= 0 or s <= 0:
                raise SshPopError("ssh: signature did not verify")
            key.verify(encode_dss_signature(r, s), data, ec.ECDSA(hash_cls()))
        elif isinstance(key, ed25519.Ed25519PublicKey):
            if fmt != "ssh-ed25519":
                raise SshPopError(f"ssh: signature type {fmt} for key type ssh-ed25519")
            key.verify(blob, data)
        else:
            raise SshPopError(f"ssh: unsupported key type {type(key).__name__}")
    except InvalidSignature:
        raise SshPopError("ssh: signature did not verify") from None


def calculate_response(key: Any, challenge: bytes) -> bytes:
    nonce = new_nonce()
    fmt, blob = sign(key, combine_nonces(unmarshal_challenge(challenge), nonce))
    return json.dumps({"Nonce": _b64(nonce), "Signature": {"Format": fmt, "Blob": _b64(blob), "Rest": None}}).encode()


def verify_response(host: VerifiedHost, nonce: bytes, data: bytes) -> None:
    what = "failed to unmarshal challenge response"
    obj = _object(data, what)
    response_nonce = _unb64(_field(obj, "Nonce"), what)
    sig = _field(obj, "Signature")
    if sig is not None and not isinstance(sig, dict):
        raise SshPopError(f"{what}: Signature must be an object", malformed=True)
    combined = combine_nonces(nonce, response_nonce)
    if not sig:
        raise SshPopError("failed to verify signature: missing signature")
    fmt = _field(sig, "Format")
    if not isinstance(fmt, str):
        raise SshPopError(f"{what}: Signature.Format must be a string", malformed=True)
    blob = _unb64(_field(sig, "Blob"), what)
    try:
        verify_signature(host.cert.public_key(), combined, fmt, blob)
    except SshPopError as exc:
        raise SshPopError(f"failed to verify signature: {exc}") from None
