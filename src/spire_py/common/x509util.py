"""X.509 CA certificates and X509-SVIDs as SPIRE issues them, and their strict verification.

Issuing follows SPIRE's credential templates: random 128-bit serials, NotBefore
backdated 10 s for clock skew, NotAfter capped at the issuer's NotAfter, SKI from
the SHA-1 of the public key bits, AKI from the issuer, a ``spiffe://<td>`` URI SAN
on CA certificates, and on leaves keyUsage digitalSignature + keyEncipherment +
keyAgreement with extKeyUsage serverAuth + clientAuth. Extensions are emitted in
Go's order so certificates look like the ones Go SPIRE writes.

Verification is used to authenticate agents and servers, so it is strict: path
building and signature checks by ``cryptography``'s verifier, every certificate
above the leaf must be a CA (and allowed to sign certificates when it carries a
keyUsage), every certificate must be valid at the given time.
"""

from __future__ import annotations

import datetime as dt
import functools
import secrets
from typing import Iterable, Mapping, Optional, Sequence, Union

from cryptography import x509
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from cryptography.x509 import verification as xv
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from .errors import SpireError
from .keys import PrivateKey, PublicKey, public_keys_equal, signature_hash_for
from .spiffeid import SpiffeId, SpiffeIdError, TrustDomain

# SPIRE's credtemplate.NotBeforeCushion.
NOT_BEFORE_CUSHION = 10
_MAX_SERIAL = (1 << 128) - 1

Time = Union[float, int, dt.datetime]


class X509SVIDError(SpireError, ValueError):
    """A certificate is not a valid X509-SVID, or a chain does not verify; the message says why."""


# --- time and serials ------------------------------------------------------------------
def to_datetime(t: Optional[Time]) -> dt.datetime:
    """An aware UTC datetime from unix seconds, a datetime, or None (now)."""
    if t is None:
        return dt.datetime.now(dt.timezone.utc)
    if isinstance(t, dt.datetime):
        return t if t.tzinfo else t.replace(tzinfo=dt.timezone.utc)
    return dt.datetime.fromtimestamp(float(t), dt.timezone.utc)


def _whole_seconds(t: dt.datetime) -> dt.datetime:
    return t.replace(microsecond=0)


def new_serial_number() -> int:
    """A random serial in [1, 2^128 - 1], as SPIRE's x509util.NewSerialNumber."""
    return secrets.randbelow(_MAX_SERIAL) + 1


def capped_lifetime(now: Optional[Time], ttl: float,
                    cap: Optional[dt.datetime] = None) -> tuple[dt.datetime, dt.datetime]:
    """(NotBefore, NotAfter): now - 10 s, now + ttl capped at ``cap``."""
    start = to_datetime(now)
    not_before = _whole_seconds(start - dt.timedelta(seconds=NOT_BEFORE_CUSHION))
    not_after = _whole_seconds(start + dt.timedelta(seconds=float(ttl)))
    if cap is not None and not_after > cap:
        not_after = cap
    return not_before, not_after


# --- names -------------------------------------------------------------------------------
# Go's pkix.Name.ToRDNSequence order; several values of one type share one RDN.
_GO_ORDER = (
    NameOID.COUNTRY_NAME, NameOID.STATE_OR_PROVINCE_NAME, NameOID.LOCALITY_NAME,
    NameOID.STREET_ADDRESS, NameOID.POSTAL_CODE, NameOID.ORGANIZATION_NAME,
    NameOID.ORGANIZATIONAL_UNIT_NAME, NameOID.COMMON_NAME, NameOID.SERIAL_NUMBER,
)


def go_name(values: Mapping[x509.ObjectIdentifier, Sequence[str]]) -> x509.Name:
    """An x509.Name laid out as Go's pkix.Name marshals it (unknown types appended)."""
    rdns: list[x509.RelativeDistinguishedName] = []
    for oid in list(_GO_ORDER) + [o for o in values if o not in _GO_ORDER]:
        vals = [v for v in values.get(oid, ()) if v]
        if vals:
            rdns.append(x509.RelativeDistinguishedName([x509.NameAttribute(oid, v) for v in vals]))
    return x509.Name(rdns)


def name_values(name: x509.Name) -> dict[x509.ObjectIdentifier, list[str]]:
    out: dict[x509.ObjectIdentifier, list[str]] = {}
    for attr in name:
        out.setdefault(attr.oid, []).append(str(attr.value))
    return out


def x509_ca_subject(country: Sequence[str] = ("US",), organization: Sequence[str] = ("SPIFFE",),
                    common_name: str = "", serial_number: str = "") -> x509.Name:
    """SPIRE's CA subject: configured C/O/CN (default C=US, O=SPIFFE) plus serialNumber."""
    return go_name({NameOID.COUNTRY_NAME: list(country), NameOID.ORGANIZATION_NAME: list(organization),
                    NameOID.COMMON_NAME: [common_name], NameOID.SERIAL_NUMBER: [serial_number]})


@functools.lru_cache(maxsize=1)
def default_x509_svid_subject() -> x509.Name:
    """SPIRE's default SVID subject: C=US, O=SPIRE (immutable, built once)."""
    return go_name({NameOID.COUNTRY_NAME: ["US"], NameOID.ORGANIZATION_NAME: ["SPIRE"]})


def with_common_name(name: x509.Name, common_name: str) -> x509.Name:
    values = name_values(name)
    values[NameOID.COMMON_NAME] = [common_name]
    return go_name(values)


# --- building ----------------------------------------------------------------------------
def subject_key_id(key: PrivateKey | PublicKey) -> bytes:
    """SHA-1 of the subjectPublicKey bits (RFC 5280 method 1, as SPIRE)."""
    pub = key.public_key() if isinstance(key, (ec.EllipticCurvePrivateKey, rsa.RSAPrivateKey)) else key
    return x509.SubjectKeyIdentifier.from_public_key(pub).digest


def authority_id(cert: x509.Certificate) -> str:
    """SPIRE's authority ID of a CA: its SKI in lowercase hex ("" when absent)."""
    try:
        return cert.extensions.get_extension_for_class(x509.SubjectKeyIdentifier).value.digest.hex()
    except x509.ExtensionNotFound:
        return ""


@functools.lru_cache(maxsize=32)
def _aki_of(issuer: x509.Certificate) -> x509.AuthorityKeyIdentifier:
    try:
        ski = issuer.extensions.get_extension_for_class(x509.SubjectKeyIdentifier).value
        return x509.AuthorityKeyIdentifier.from_issuer_subject_key_identifier(ski)
    except x509.ExtensionNotFound:
        return x509.AuthorityKeyIdentifier.from_issuer_public_key(issuer.public_key())  # type: ignore[arg-type]


def _check_signer(issuer: Optional[x509.Certificate], signer: PrivateKey) -> None:
    if issuer is not None and not _signer_matches(issuer, signer):
        raise X509SVIDError("signing key does not match the issuer certificate")


@functools.lru_cache(maxsize=32)
def _signer_matches(issuer: x509.Certificate, signer: PrivateKey) -> bool:
    # Cached per (certificate, key object): a CA signs thousands of SVIDs with the same pair.
    return public_keys_equal(issuer.public_key(), signer)  # type: ignore[arg-type]


def _finish(builder: x509.CertificateBuilder, public_key: PublicKey, signer: PrivateKey,
            issuer: Optional[x509.Certificate], sans: list[x509.GeneralName],
            subject: x509.Name) -> x509.Certificate:
    builder = builder.add_extension(x509.SubjectKeyIdentifier(subject_key_id(public_key)), critical=False)
    if issuer is not None:
        builder = builder.add_extension(_aki_of(issuer), critical=False)
    if sans:
        # RFC 5280: the SAN extension is critical when the subject is empty.
        builder = builder.add_extension(x509.SubjectAlternativeName(sans), critical=len(subject) == 0)
    return builder.sign(signer, signature_hash_for(signer))  # type: ignore[arg-type]


def create_ca_certificate(
    public_key: PublicKey,
    signer: PrivateKey,
    *,
    subject: x509.Name,
    ttl: float,
    now: Optional[Time] = None,
    issuer: Optional[x509.Certificate] = None,
    uris: Sequence[str] = (),
    serial_number: Optional[int] = None,
) -> x509.Certificate:
    """A CA certificate: self-signed when ``issuer`` is None, else signed by ``signer`` under
    ``issuer`` with NotAfter capped at the issuer's. ``uris`` go in the URI SAN."""
    _check_signer(issuer, signer)
    cap = issuer.not_valid_after_utc if issuer is not None else None
    not_before, not_after = capped_lifetime(now, ttl, cap)
    builder = (
        x509.CertificateBuilder()
        .serial_number(serial_number or new_serial_number())
        .subject_name(subject)
        .issuer_name(issuer.subject if issuer is not None else subject)
        .public_key(public_key)
        .not_valid_before(not_before)
        .not_valid_after(not_after)
        .add_extension(x509.KeyUsage(
            digital_signature=False, content_commitment=False, key_encipherment=False,
            data_encipherment=False, key_agreement=False, key_cert_sign=True, crl_sign=True,
            encipher_only=False, decipher_only=False), critical=True)
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
    )
    sans: list[x509.GeneralName] = [x509.UniformResourceIdentifier(u) for u in uris]
    return _finish(builder, public_key, signer, issuer, sans, subject)


def create_x509_svid(
    public_key: PublicKey,
    spiffe_id: SpiffeId,
    *,
    issuer: x509.Certificate,
    signer: PrivateKey,
    ttl: float,
    now: Optional[Time] = None,
    dns_names: Sequence[str] = (),
    subject: Optional[x509.Name] = None,
) -> x509.Certificate:
    """An X509-SVID leaf for ``spiffe_id`` signed by ``issuer``/``signer``.

    Subject defaults to C=US, O=SPIRE; the first DNS name also becomes the CN, as SPIRE does.
    """
    _check_signer(issuer, signer)
    name = subject if subject is not None and len(subject) else default_x509_svid_subject()
    dns = [d for d in dns_names if d]
    if dns:
        name = with_common_name(name, dns[0])
    not_before, not_after = capped_lifetime(now, ttl, issuer.not_valid_after_utc)
    builder = (
        x509.CertificateBuilder()
        .serial_number(new_serial_number())
        .subject_name(name)
        .issuer_name(issuer.subject)
        .public_key(public_key)
        .not_valid_before(not_before)
        .not_valid_after(not_after)
        .add_extension(x509.KeyUsage(
            digital_signature=True, content_commitment=False, key_encipherment=True,
            data_encipherment=False, key_agreement=True, key_cert_sign=False, crl_sign=False,
            encipher_only=False, decipher_only=False), critical=True)
        .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH, ExtendedKeyUsageOID.CLIENT_AUTH]),
                       critical=False)
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
    )
    # Go writes DNS names before URIs in the SAN.
    sans: list[x509.GeneralName] = [x509.DNSName(d) for d in dns]
    sans.append(x509.UniformResourceIdentifier(str(spiffe_id)))
    return _finish(builder, public_key, signer, issuer, sans, name)


# --- inspecting ----------------------------------------------------------------------------
def uri_sans(cert: x509.Certificate) -> list[str]:
    try:
        san = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    except x509.ExtensionNotFound:
        return []
    return list(san.get_values_for_type(x509.UniformResourceIdentifier))


def spiffe_id_of(cert: x509.Certificate) -> SpiffeId:
    """The SPIFFE ID of an X509-SVID: exactly one URI SAN, a valid SPIFFE ID."""
    uris = uri_sans(cert)
    if not uris:
        raise X509SVIDError("certificate contains no URI SAN")
    if len(uris) > 1:
        raise X509SVIDError("certificate contains more than one URI SAN")
    try:
        return SpiffeId.parse(uris[0])
    except SpiffeIdError as exc:
        raise X509SVIDError(f"certificate URI SAN is not a valid SPIFFE ID: {exc}") from None


def basic_constraints(cert: x509.Certificate) -> Optional[x509.BasicConstraints]:
    try:
        return cert.extensions.get_extension_for_class(x509.BasicConstraints).value
    except x509.ExtensionNotFound:
        return None


def key_usage(cert: x509.Certificate) -> Optional[x509.KeyUsage]:
    try:
        return cert.extensions.get_extension_for_class(x509.KeyUsage).value
    except x509.ExtensionNotFound:
        return None


def is_ca(cert: x509.Certificate) -> bool:
    bc = basic_constraints(cert)
    return bc is not None and bc.ca


def is_self_signed(cert: x509.Certificate) -> bool:
    """Issuer equals subject and the certificate's own key verifies its signature."""
    if cert.issuer != cert.subject:
        return False
    try:
        cert.verify_directly_issued_by(cert)
    except (ValueError, TypeError, InvalidSignature):
        return False
    return True


# --- PEM --------------------------------------------------------------------------------------
def certs_to_pem(certs: Iterable[x509.Certificate]) -> bytes:
    return b"".join(c.public_bytes(serialization.Encoding.PEM) for c in certs)


def certs_to_der_chain(certs: Iterable[x509.Certificate]) -> bytes:
    """Certificates as concatenated DER, as the Workload API and the agent's files carry them."""
    return b"".join(c.public_bytes(serialization.Encoding.DER) for c in certs)


def certs_to_der(certs: Iterable[x509.Certificate]) -> list[bytes]:
    return [c.public_bytes(serialization.Encoding.DER) for c in certs]


def split_der_chain(data: bytes) -> list[bytes]:
    """The certificates of a concatenated DER chain, split on their ASN.1 SEQUENCE lengths
    as Go's x509.ParseCertificates reads them (the inverse of ``certs_to_der_chain``)."""
    out, i = [], 0
    while i < len(data):
        if data[i] != 0x30 or i + 2 > len(data):
            raise ValueError("x509: malformed certificate")
        n, hdr = data[i + 1], 2
        if n & 0x80:
            width = n & 0x7F
            if width == 0 or width > 4 or i + 2 + width > len(data):
                raise ValueError("x509: malformed certificate")
            n, hdr = int.from_bytes(data[i + 2:i + 2 + width], "big"), 2 + width
        end = i + hdr + n
        if end > len(data):
            raise ValueError("x509: malformed certificate")
        out.append(data[i:end])
        i = end
    return out


def load_pem_certificates(data: bytes) -> list[x509.Certificate]:
    """Every CERTIFICATE block of ``data``; at least one is required."""
    try:
        return x509.load_pem_x509_certificates(data)
    except ValueError as exc:
        raise X509SVIDError(f"unable to parse certificates: {exc}") from None


# --- verification -------------------------------------------------------------------------------
def _ca_basic_constraints(_policy: object, _cert: x509.Certificate, _ext: object) -> None:
    # Presence is required by the policy; cA=true and pathLen are checked by the verifier.
    return None


def _ca_key_usage(_policy: object, _cert: x509.Certificate, ext: Optional[x509.KeyUsage]) -> None:
    if ext is not None and not ext.key_cert_sign:
        raise ValueError("CA certificate keyUsage does not allow keyCertSign")


def _policies() -> tuple[xv.ExtensionPolicy, xv.ExtensionPolicy]:
    agnostic = xv.Criticality.AGNOSTIC
    ca = (xv.ExtensionPolicy.permit_all()
          .require_present(x509.BasicConstraints, agnostic, _ca_basic_constraints)
          .may_be_present(x509.KeyUsage, agnostic, _ca_key_usage))
    return ca, xv.ExtensionPolicy.permit_all()


def verify_chain(
    leaf: x509.Certificate,
    intermediates: Sequence[x509.Certificate],
    roots: Sequence[x509.Certificate],
    at_time: Optional[Time] = None,
) -> list[x509.Certificate]:
    """Build and check a path leaf → intermediates → one of ``roots`` valid at ``at_time``.

    Returns the path, leaf first and root last. No host name or SPIFFE ID check here:
    use :func:`verify_x509_svid` for SVIDs.
    """
    if not roots:
        raise X509SVIDError("could not verify certificate chain: no trusted roots")
    ca_policy, ee_policy = _policies()
    verifier = (
        xv.PolicyBuilder()
        .store(xv.Store(list(roots)))
        .time(to_datetime(at_time))
        .extension_policies(ca_policy=ca_policy, ee_policy=ee_policy)
        .build_client_verifier()
    )
    try:
        result = verifier.verify(leaf, list(intermediates))
    except xv.VerificationError as exc:
        raise X509SVIDError(f"could not verify certificate chain: {exc}") from None
    return list(result.chain)


def check_x509_svid_leaf(leaf: x509.Certificate) -> SpiffeId:
    """The SPIFFE ID of ``leaf`` after the X509-SVID leaf rules (not a CA, may not sign certs/CRLs)."""
    sid = spiffe_id_of(leaf)
    if is_ca(leaf):
        raise X509SVIDError("leaf certificate with CA flag set to true")
    ku = key_usage(leaf)
    if ku is not None:
        if ku.key_cert_sign:
            raise X509SVIDError("leaf certificate with KeyCertSign key usage")
        if ku.crl_sign:
            raise X509SVIDError("leaf certificate with KeyCrlSign key usage")
        if not ku.digital_signature:
            raise X509SVIDError("leaf certificate without digitalSignature key usage")
    return sid


def verify_x509_svid(
    chain: Sequence[x509.Certificate],
    roots: Sequence[x509.Certificate],
    at_time: Optional[Time] = None,
    trust_domain: Optional[TrustDomain] = None,
) -> tuple[SpiffeId, list[x509.Certificate]]:
    """Authenticate an X509-SVID chain (leaf first) against ``roots``.

    Returns (SPIFFE ID, verified path). With ``trust_domain`` the ID must belong to it.
    """
    if not chain:
        raise X509SVIDError("empty certificates chain")
    sid = check_x509_svid_leaf(chain[0])
    if trust_domain is not None and sid.trust_domain != trust_domain:
        raise X509SVIDError(f'SPIFFE ID "{sid}" is not a member of trust domain "{trust_domain}"')
    return sid, verify_chain(chain[0], chain[1:], roots, at_time)
