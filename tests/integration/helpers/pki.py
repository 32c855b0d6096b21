"""Credentials for node attestation tests, made with cryptography: an X.509 PKI for x509pop
and an SSH certificate authority for sshpop, written to disk as the agents read them."""

from __future__ import annotations

import datetime as dt
import hashlib
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Optional, Sequence

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, ed25519
from cryptography.hazmat.primitives.serialization import SSHCertificateBuilder, SSHCertificateType
from cryptography.x509.oid import NameOID


def _now() -> dt.datetime:
    return dt.datetime.now(dt.timezone.utc)


def pem(*certs: x509.Certificate) -> bytes:
    return b"".join(c.public_bytes(serialization.Encoding.PEM) for c in certs)


def key_pem(key: Any) -> bytes:
    return key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                             serialization.NoEncryption())


def sha1_fingerprint(cert: x509.Certificate) -> str:
    """What x509pop names agents and CA selectors by: SHA-1 of the DER certificate, hex."""
    return hashlib.sha1(cert.public_bytes(serialization.Encoding.DER)).hexdigest()  # noqa: S324


def serial_hex(cert: x509.Certificate) -> str:
    text = format(cert.serial_number, "x")
    return "0" + text if len(text) % 2 else text


# --- X.509 (x509pop) ------------------------------------------------------------------------

@dataclass
class X509Identity:
    cert: x509.Certificate
    key: Any

    def write(self, d: Path, name: str) -> tuple[Path, Path]:
        """(certificate path, private key path) under ``d``."""
        d.mkdir(parents=True, exist_ok=True)
        cert_path, key_path = d / f"{name}.crt.pem", d / f"{name}.key.pem"
        cert_path.write_bytes(pem(self.cert))
        key_path.write_bytes(key_pem(self.key))
        key_path.chmod(0o600)
        return cert_path, key_path


def _certificate(subject_cn: str, key: Any, issuer: Optional[X509Identity], *, ca: bool,
                 not_before: dt.datetime, not_after: dt.datetime) -> x509.Certificate:
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, subject_cn)])
    builder = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(issuer.cert.subject if issuer else name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(not_before)
        .not_valid_after(not_after)
        .add_extension(x509.BasicConstraints(ca=ca, path_length=None), critical=True)
        .add_extension(x509.KeyUsage(
            digital_signature=True, content_commitment=False, key_encipherment=False, data_encipherment=False,
            key_agreement=False, key_cert_sign=ca, crl_sign=ca, encipher_only=False, decipher_only=False),
            critical=True)
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), critical=False)
    )
    if issuer is not None:
        builder = builder.add_extension(
            x509.AuthorityKeyIdentifier.from_issuer_public_key(issuer.key.public_key()), critical=False)
    return builder.sign(issuer.key if issuer else key, hashes.SHA256())


def make_ca(cn: str = "Test Node CA") -> X509Identity:
    key = ec.generate_private_key(ec.SECP256R1())
    now = _now()
    return X509Identity(_certificate(cn, key, None, ca=True, not_before=now - dt.timedelta(hours=1),
                                     not_after=now + dt.timedelta(days=1)), key)


def make_node_cert(ca: X509Identity, cn: str, *, expired: bool = False) -> X509Identity:
    """A node's client certificate signed by ``ca``; ``expired`` makes one that ended an hour ago."""
    key = ec.generate_private_key(ec.SECP256R1())
    now = _now()
    if expired:
        nb, na = now - dt.timedelta(hours=3), now - dt.timedelta(hours=1)
    else:
        nb, na = now - dt.timedelta(minutes=10), now + dt.timedelta(hours=12)
    return X509Identity(_certificate(cn, key, ca, ca=False, not_before=nb, not_after=na), key)


# --- SSH (sshpop) ------------------------------------------------------------------------------

@dataclass
class SshCA:
    key: ed25519.Ed25519PrivateKey

    @classmethod
    def generate(cls) -> "SshCA":
        return cls(ed25519.Ed25519PrivateKey.generate())

    @property
    def line(self) -> str:
        """The CA's public key as sshpop's cert_authorities lists it."""
        return self.key.public_key().public_bytes(serialization.Encoding.OpenSSH,
                                                  serialization.PublicFormat.OpenSSH).decode()

    def certify(self, host_key: Any, principals: Sequence[str], *, user: bool = False,
                expired: bool = False) -> bytes:
        """An OpenSSH certificate line for ``host_key`` (a host certificate unless ``user``)."""
        now = int(time.time())
        after, before = (now - 7200, now - 3600) if expired else (now - 600, now + 12 * 3600)
        builder = (SSHCertificateBuilder().public_key(host_key.public_key()).serial(int(now))
                   .type(SSHCertificateType.USER if user else SSHCertificateType.HOST)
                   .key_id(principals[0].encode() if principals else b"host")
                   .valid_after(after).valid_before(before)
                   .valid_principals([p.encode() for p in principals]))
        return builder.sign(self.key).public_bytes() + b"\n"


def ssh_fingerprint(cert_line: bytes) -> str:
    """sshpop's default agent path element: unpadded URL-safe base64 of SHA-256 over the cert blob."""
    import base64

    digest = hashlib.sha256(base64.b64decode(cert_line.split()[1])).digest()
    return base64.urlsafe_b64encode(digest).decode().rstrip("=")


def write_ssh_host(d: Path, host_key: Any, cert_line: bytes) -> tuple[Path, Path]:
    """(host key path, host cert path) as sshd lays them out."""
    d.mkdir(parents=True, exist_ok=True)
    key_path, cert_path = d / "ssh_host_ed25519_key", d / "ssh_host_ed25519_key-cert.pub"
    key_path.write_bytes(host_key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.OpenSSH,
                                                serialization.NoEncryption()))
    key_path.chmod(0o600)
    cert_path.write_bytes(cert_line)
    return key_path, cert_path


def new_host_key() -> ed25519.Ed25519PrivateKey:
    return ed25519.Ed25519PrivateKey.generate()
