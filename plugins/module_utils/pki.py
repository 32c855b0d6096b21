# -*- coding: utf-8 -*-
# Copyright (c) spire_py contributors
# Apache License 2.0 (see LICENSE or https://www.apache.org/licenses/LICENSE-2.0)
"""X.509 building blocks shared by root_ca and x509pop_cert: keys, CA and leaf certificates.

Everything here is pure (bytes in, bytes out) so it is unit-tested without Ansible.
"""

import datetime
import hashlib
import traceback

try:
    from cryptography import x509
    from cryptography.exceptions import InvalidSignature
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec, padding, rsa
    from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID
except ImportError:
    HAS_CRYPTOGRAPHY = False
    CRYPTOGRAPHY_IMPORT_ERROR = traceback.format_exc()
else:
    HAS_CRYPTOGRAPHY = True
    CRYPTOGRAPHY_IMPORT_ERROR = None

RSA_SIZES = (2048, 3072, 4096)
EC_SIZES = (256, 384, 521)
DEFAULT_SIZES = {"rsa": 2048, "ec": 256}
# Clock skew tolerance: certificates start a minute in the past.
BACKDATE = datetime.timedelta(seconds=60)

# Subject option name -> X.509 attribute.
SUBJECT_FIELDS = (
    ("country", "COUNTRY_NAME"),
    ("state_or_province", "STATE_OR_PROVINCE_NAME"),
    ("locality", "LOCALITY_NAME"),
    ("organization", "ORGANIZATION_NAME"),
    ("organizational_unit", "ORGANIZATIONAL_UNIT_NAME"),
    ("common_name", "COMMON_NAME"),
)


class PKIError(Exception):
    """A request that cannot be satisfied (bad key size, unreadable CA...)."""


def utcnow():
    return datetime.datetime.now(datetime.timezone.utc)


def resolve_key_size(key_type, key_size):
    """Default and check the size: RSA modulus bits or EC curve bits."""
    if key_type not in DEFAULT_SIZES:
        raise PKIError("key_type must be rsa or ec, got %r" % (key_type,))
    size = key_size or DEFAULT_SIZES[key_type]
    allowed = RSA_SIZES if key_type == "rsa" else EC_SIZES
    if size not in allowed:
        raise PKIError("key_size %s is not valid for %s keys: use one of %s"
                       % (size, key_type, ", ".join(str(s) for s in allowed)))
    return size


def generate_private_key(key_type, key_size):
    size = resolve_key_size(key_type, key_size)
    if key_type == "rsa":
        return rsa.generate_private_key(public_exponent=65537, key_size=size)
    curve = {256: ec.SECP256R1, 384: ec.SECP384R1, 521: ec.SECP521R1}[size]
    return ec.generate_private_key(curve())


def key_spec(key):
    """("rsa", 2048) or ("ec", 256) for a private or public key; None for other types."""
    if isinstance(key, (rsa.RSAPrivateKey, rsa.RSAPublicKey)):
        return ("rsa", key.key_size)
    if isinstance(key, (ec.EllipticCurvePrivateKey, ec.EllipticCurvePublicKey)):
        return ("ec", key.curve.key_size)
    return None


def private_key_pem(key):
    return key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )


def certificate_pem(cert):
    return cert.public_bytes(serialization.Encoding.PEM)


def load_private_key(data):
    """The key in PEM data, or None when data is absent or not an unencrypted key."""
    if not data:
        return None
    try:
        return serialization.load_pem_private_key(data, password=None)
    except (ValueError, TypeError):
        return None


def load_certificate(data):
    """The first certificate in PEM data, or None."""
    if not data:
        return None
    try:
        return x509.load_pem_x509_certificate(data)
    except ValueError:
        return None


def public_der(key):
    return key.public_bytes(serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo)


def same_public_key(a, b):
    return public_der(a) == public_der(b)


def build_name(subject):
    """An x509.Name from a dict such as {"common_name": "X", "organization": ["A", "B"]}."""
    unknown = set(subject) - set(name for name, _oid in SUBJECT_FIELDS)
    if unknown:
        raise PKIError("unknown subject field(s): %s; known: %s"
                       % (", ".join(sorted(unknown)), ", ".join(name for name, _oid in SUBJECT_FIELDS)))
    attrs = []
    for name, oid_name in SUBJECT_FIELDS:
        values = subject.get(name)
        if values is None or values == "":
            continue
        if not isinstance(values, (list, tuple)):
            values = [values]
        for value in values:
            attrs.append(x509.NameAttribute(getattr(NameOID, oid_name), str(value)))
    if not attrs:
        raise PKIError("the subject is empty: set at least common_name")
    return x509.Name(attrs)


def not_after(cert):
    value = getattr(cert, "not_valid_after_utc", None)
    if value is None:  # cryptography < 42
        value = cert.not_valid_after.replace(tzinfo=datetime.timezone.utc)
    return value


def seconds_left(cert, now=None):
    return int((not_after(cert) - (now or utcnow())).total_seconds())


def is_ca(cert):
    try:
        return cert.extensions.get_extension_for_class(x509.BasicConstraints).value.ca
    except x509.ExtensionNotFound:
        return False


def dns_names(cert):
    try:
        san = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    except x509.ExtensionNotFound:
        return []
    return san.get_values_for_type(x509.DNSName)


def signed_by(cert, issuer):
    """True when issuer's key signed cert (and the names chain)."""
    if cert.issuer != issuer.subject:
        return False
    key = issuer.public_key()
    try:
        if isinstance(key, rsa.RSAPublicKey):
            key.verify(cert.signature, cert.tbs_certificate_bytes, padding.PKCS1v15(), cert.signature_hash_algorithm)
        elif isinstance(key, ec.EllipticCurvePublicKey):
            key.verify(cert.signature, cert.tbs_certificate_bytes, ec.ECDSA(cert.signature_hash_algorithm))
        else:
            return False
    except InvalidSignature:
        return False
    return True


def _ski(public_key):
    return x509.SubjectKeyIdentifier.from_public_key(public_key)


def make_ca_certificate(key, subject, validity_seconds, now=None):
    """A self-signed CA certificate for key (a root: path length unconstrained)."""
    now = now or utcnow()
    name = build_name(subject)
    return (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - BACKDATE)
        .not_valid_after(now + datetime.timedelta(seconds=validity_seconds))
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .add_extension(
            x509.KeyUsage(
                digital_signature=True, content_commitment=False, key_encipherment=False,
                data_encipherment=False, key_agreement=False, key_cert_sign=True,
                crl_sign=True, encipher_only=False, decipher_only=False,
            ),
            critical=True,
        )
        .add_extension(_ski(key.public_key()), critical=False)
        .sign(key, hashes.SHA256())
    )


def issue_leaf_certificate(ca_key, ca_cert, public_key, common_name, dns, validity_seconds, now=None):
    """A client-auth leaf certificate (what x509pop agents present), signed by the CA."""
    now = now or utcnow()
    builder = (
        x509.CertificateBuilder()
        .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, common_name)]))
        .issuer_name(ca_cert.subject)
        .public_key(public_key)
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - BACKDATE)
        .not_valid_after(min(now + datetime.timedelta(seconds=validity_seconds), not_after(ca_cert)))
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(
            x509.KeyUsage(
                digital_signature=True, content_commitment=False,
                key_encipherment=isinstance(public_key, rsa.RSAPublicKey),
                data_encipherment=False, key_agreement=False, key_cert_sign=False,
                crl_sign=False, encipher_only=False, decipher_only=False,
            ),
            critical=True,
        )
        .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.CLIENT_AUTH]), critical=False)
        .add_extension(_ski(public_key), critical=False)
        .add_extension(x509.AuthorityKeyIdentifier.from_issuer_public_key(ca_cert.public_key()), critical=False)
    )
    if dns:
        builder = builder.add_extension(x509.SubjectAlternativeName([x509.DNSName(d) for d in dns]), critical=False)
    return builder.sign(ca_key, hashes.SHA256())


def certificate_info(cert):
    """What modules return and diff: stable, human-readable facts about a certificate."""
    if cert is None:
        return None
    spec = key_spec(cert.public_key())
    return {
        "subject": cert.subject.rfc4514_string(),
        "issuer": cert.issuer.rfc4514_string(),
        "serial": format(cert.serial_number, "x"),
        "not_after": not_after(cert).strftime("%Y-%m-%dT%H:%M:%SZ"),
        "sha256_fingerprint": hashlib.sha256(cert.public_bytes(serialization.Encoding.DER)).hexdigest(),
        "key": "%s %s" % spec if spec else "unknown",
        "is_ca": is_ca(cert),
        "dns_names": dns_names(cert),
    }


def describe(info):
    """Text for Ansible's diff: one 'field: value' per line."""
    if info is None:
        return "absent\n"
    return "".join("%s: %s\n" % (k, info[k]) for k in sorted(info))


def load_csr(data):
    """A certificate signing request in PEM whose signature verifies (proof of the key), or PKIError."""
    try:
        csr = x509.load_pem_x509_csr(data if isinstance(data, bytes) else data.encode())
    except ValueError as exc:
        raise PKIError("csr is not a PEM certificate signing request: %s" % exc)
    if not csr.is_signature_valid:
        raise PKIError("csr signature does not verify: the request was not made with its key")
    return csr
