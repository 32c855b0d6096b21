"""Certificates for federation tests: a CA, SPIFFE X.509-SVIDs and web (DNS/IP) certificates
from it, and a bundle endpoint served from them in the test's loop."""

from __future__ import annotations

import datetime as dt
import ipaddress
from contextlib import asynccontextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import AsyncIterator, Optional

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from spire_py.common.bundle import Bundle
from spire_py.common.config.federation import BundleEndpointConfig, ServingCertFileConfig
from spire_py.server.federation.endpoint import BundleEndpoint


@dataclass
class Issued:
    cert: x509.Certificate
    key: ec.EllipticCurvePrivateKey

    def write(self, d: Path, name: str) -> tuple[Path, Path]:
        c, k = d / f"{name}.crt", d / f"{name}.key"
        c.write_bytes(self.cert.public_bytes(serialization.Encoding.PEM))
        k.write_bytes(self.key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                             serialization.NoEncryption()))
        return c, k


def _cert(cn: str, issuer: Optional[Issued], *, ca: bool, san: Optional[x509.SubjectAlternativeName] = None) -> Issued:
    key = ec.generate_private_key(ec.SECP256R1())
    now = dt.datetime.now(dt.timezone.utc)
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, cn)])
    b = (x509.CertificateBuilder().subject_name(name)
         .issuer_name(issuer.cert.subject if issuer else name).public_key(key.public_key())
         .serial_number(x509.random_serial_number())
         .not_valid_before(now - dt.timedelta(minutes=1)).not_valid_after(now + dt.timedelta(hours=1))
         .add_extension(x509.BasicConstraints(ca=ca, path_length=None), critical=True))
    if ca:
        b = b.add_extension(x509.KeyUsage(False, False, False, False, False, True, True, False, False), critical=True)
    else:
        b = b.add_extension(x509.KeyUsage(True, False, False, False, False, False, False, False, False), critical=True)
    if san is not None:
        b = b.add_extension(san, critical=False)
    return Issued(b.sign(issuer.key if issuer else key, hashes.SHA256()), key)


def make_ca(cn: str = "Federation Test CA") -> Issued:
    return _cert(cn, None, ca=True)


def make_svid(ca: Issued, spiffe_id: str) -> Issued:
    return _cert("svid", ca, ca=False, san=x509.SubjectAlternativeName([x509.UniformResourceIdentifier(spiffe_id)]))


def make_web_cert(ca: Issued, host: str = "127.0.0.1") -> Issued:
    try:
        name: x509.GeneralName = x509.IPAddress(ipaddress.ip_address(host))
    except ValueError:
        name = x509.DNSName(host)
    return _cert(host, ca, ca=False, san=x509.SubjectAlternativeName([name]))


def bundle_of(td: str, *roots: x509.Certificate, jwt_key: Optional[ec.EllipticCurvePrivateKey] = None,
              sequence: int = 1) -> Bundle:
    b = Bundle(td, list(roots), sequence_number=sequence)
    if jwt_key is not None:
        b.add_jwt_authority("kid-1", jwt_key.public_key())
    return b


@asynccontextmanager
async def serving_endpoint(bundle: list[Bundle], svid: Optional[Issued] = None, *, web_files: Optional[tuple[Path, Path]] = None,
                           refresh_hint: float = 300) -> AsyncIterator[BundleEndpoint]:
    """A BundleEndpoint on 127.0.0.1 serving ``bundle[0]`` (a list, so tests can swap it),
    https_spiffe with ``svid`` or https_web with ``web_files`` (cert, key)."""
    async def get() -> Bundle:
        return Bundle.from_record(bundle[0].to_record())

    if web_files is not None:
        cfg = BundleEndpointConfig(address="127.0.0.1", port=0, refresh_hint=refresh_hint, profile="https_web",
                                   serving_cert_file=ServingCertFileConfig(str(web_files[0]), str(web_files[1]), 3600))
    else:
        cfg = BundleEndpointConfig(address="127.0.0.1", port=0, refresh_hint=refresh_hint, profile="https_spiffe")
    ep = BundleEndpoint(cfg, get)
    if svid is not None:
        ep.set_svid([svid.cert], svid.key)
    await ep.start()
    try:
        yield ep
    finally:
        await ep.close()
