"""x509pop: X.509 proof of possession, the wire formats and challenge math both sides share.

Wire compatible with SPIRE's ``pkg/common/plugin/x509pop``: JSON documents whose
byte fields are standard base64 (as Go's encoding/json writes ``[]byte``).

- payload:   ``{"certificates": [DER leaf, DER intermediates...]}``
- challenge: ``{"rsa_signature": {"nonce": N}, "ecdsa_signature": null}`` (or the ECDSA one)
- response:  ``{"rsa_signature": {"nonce": M, "signature": SIG}, ...}`` or
             ``{"ecdsa_signature": {"nonce": M, "r": R, "s": S}, ...}``

Both nonces are 32 random bytes; the agent signs SHA-256(N || M): RSA-PSS with
SHA-256 (salt as long as possible, auto-detected when verifying), or ECDSA over
that digest with big-endian R and S.
"""

from __future__ import annotations

import base64
import binascii
import datetime
import hashlib
import json
import os
import re
import urllib.parse
from typing import Any

from cryptography import x509
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, padding, rsa
from cryptography.hazmat.primitives.asymmetric.utils import (
    Prehashed,
    decode_dss_signature,
    encode_dss_signature,
)
from cryptography.x509.oid import NameOID
from cryptography.x509.verification import (
    Criticality,
    ExtensionPolicy,
    PolicyBuilder,
    Store,
    VerificationError,
)

from ..errors import SpireError

PLUGIN_NAME = "x509pop"
NONCE_LEN = 32
SELECTOR_TYPE = PLUGIN_NAME

DEFAULT_AGENT_PATH_TEMPLATE_CN = "/{{ .PluginName }}/{{ .Fingerprint }}"
DEFAULT_AGENT_PATH_TEMPLATE_SVID = "/{{ .PluginName }}/{{ .SVIDPathTrimmed }}"


class X509PopError(SpireError, ValueError):
    """A malformed document or a failed proof; the message says which."""


# --- Go encoding/json conventions -------------------------------------------------

def b64(data: bytes) -> str:
    return base64.b64encode(data).decode("ascii")


def unb64(value: Any, what: str) -> bytes:
    if value is None:
        return b""
    if not isinstance(value, str):
        raise X509PopError(f"{what}: expected a base64 string")
    try:
        return base64.b64decode(value.replace("\r", "").replace("\n", ""), validate=True)
    except (binascii.Error, ValueError):
        raise X509PopError(f"{what}: illegal base64 data") from None


def json_field(obj: dict[str, Any], name: str) -> Any:
    """Go matches JSON keys to struct fields exactly first, then case-insensitively."""
    if name in obj:
        return obj[name]
    folded = name.casefold()
    for key, value in obj.items():
        if key.casefold() == folded:
            return value
    return None


def load_json_object(data: bytes, what: str) -> dict[str, Any]:
    try:
        obj = json.loads(data)
    except (ValueError, UnicodeDecodeError) as exc:
        raise X509PopError(f"{what}: {exc}") from None
    if not isinstance(obj, dict):
        raise X509PopError(f"{what}: expected a JSON object")
    return obj


# --- attestation data --------------------------------------------------------------

def marshal_attestation_data(certificates: list[bytes]) -> bytes:
    return json.dumps({"certificates": [b64(c) for c in certificates]}).encode()


def unmarshal_attestation_data(data: bytes) -> list[bytes]:
    obj = load_json_object(data, "failed to unmarshal data")
    certs = json_field(obj, "certificates")
    if certs is None:
        return []
    if not isinstance(certs, list):
        raise X509PopError("failed to unmarshal data: certificates must be a list")
    return [unb64(c, "failed to unmarshal data") for c in certs]


# --- PEM files ------------------------------------------------------------------------

_PEM_RE = re.compile(rb"-----BEGIN ([A-Z0-9 ]+)-----\r?\n(.*?)-----END \1-----", re.S)


def pem_blocks(data: bytes) -> list[tuple[str, bytes]]:
    """(type, whole PEM block) pairs, in file order."""
    return [(m.group(1).decode(), m.group(0)) for m in _PEM_RE.finditer(data)]


def load_certificates(path: str) -> list[x509.Certificate]:
    """Every CERTIFICATE block of a PEM file (other blocks skipped), as SPIRE's util.LoadCertificates."""
    with open(path, "rb") as f:
        data = f.read()
    certs = []
    for number, (kind, block) in enumerate(pem_blocks(data)):
        if kind != "CERTIFICATE":
            continue
        try:
            certs.append(x509.load_pem_x509_certificate(block))
        except ValueError as exc:
            raise X509PopError(f"unable to parse certificate in block {number}: {exc}") from None
    if not certs:
        raise X509PopError("no certificates found in file")
    return certs


# --- challenge and response --------------------------------------------------------

def _nonce() -> bytes:
    return os.urandom(NONCE_LEN)


def combine_nonces(challenge: bytes, response: bytes) -> bytes:
    if len(challenge) != NONCE_LEN:
        raise X509PopError("invalid challenge nonce")
    if len(response) != NONCE_LEN:
        raise X509PopError("invalid response nonce")
    return hashlib.sha256(challenge + response).digest()


def generate_challenge(leaf: x509.Certificate) -> dict[str, Any]:
    """A fresh challenge for the leaf's key; the leaf must allow digital signatures."""
    try:
        usage = leaf.extensions.get_extension_for_class(x509.KeyUsage).value
        signs = usage.digital_signature
    except x509.ExtensionNotFound:
        signs = False
    if not signs:
        raise X509PopError("certificate not intended for digital signature use")
    key = leaf.public_key()
    if isinstance(key, rsa.RSAPublicKey):
        return {"rsa_signature": {"nonce": _nonce()}, "ecdsa_signature": None}
    if isinstance(key, ec.EllipticCurvePublicKey):
        return {"rsa_signature": None, "ecdsa_signature": {"nonce": _nonce()}}
    raise X509PopError(f"unsupported public key type {type(key).__name__}")


def _encode_nested(doc: dict[str, Any]) -> bytes:
    out = {k: (None if v is None else {f: b64(b) for f, b in v.items()}) for k, v in doc.items()}
    return json.dumps(out).encode()


def marshal_challenge(challenge: dict[str, Any]) -> bytes:
    return _encode_nested(challenge)


def _decode_nested(data: bytes, what: str, fields: dict[str, tuple[str, ...]]) -> dict[str, Any]:
    obj = load_json_object(data, what)
    out: dict[str, Any] = {}
    for kind, names in fields.items():
        part = json_field(obj, kind)
        if part is None:
            out[kind] = None
            continue
        if not isinstance(part, dict):
            raise X509PopError(f"{what}: {kind} must be an object")
        out[kind] = {n: unb64(json_field(part, n), what) for n in names}
    return out


def unmarshal_challenge(data: bytes) -> dict[str, Any]:
    return _decode_nested(data, "unable to unmarshal challenge",
                          {"rsa_signature": ("nonce",), "ecdsa_signature": ("nonce",)})


def marshal_response(response: dict[str, Any]) -> bytes:
    return _encode_nested(response)


def unmarshal_response(data: bytes) -> dict[str, Any]:
    return _decode_nested(data, "unable to unmarshal challenge response", {
        "rsa_signature": ("nonce", "signature"),
        "ecdsa_signature": ("nonce", "r", "s"),
    })


def _int_bytes(n: int) -> bytes:
    return n.to_bytes((n.bit_length() + 7) // 8, "big")


_PSS_SIGN = padding.PSS(mgf=padding.MGF1(hashes.SHA256()), salt_length=padding.PSS.MAX_LENGTH)
_PSS_VERIFY = padding.PSS(mgf=padding.MGF1(hashes.SHA256()), salt_length=padding.PSS.AUTO)


def calculate_response(private_key: Any, challenge: dict[str, Any]) -> dict[str, Any]:
    if isinstance(private_key, rsa.RSAPrivateKey):
        if not challenge.get("rsa_signature"):
            raise X509PopError("expecting RSA challenge")
        nonce = _nonce()
        combined = combine_nonces(challenge["rsa_signature"]["nonce"], nonce)
        sig = private_key.sign(combined, _PSS_SIGN, Prehashed(hashes.SHA256()))
        return {"rsa_signature": {"nonce": nonce, "signature": sig}, "ecdsa_signature": None}
    if isinstance(private_key, ec.EllipticCurvePrivateKey):
        if not challenge.get("ecdsa_signature"):
            raise X509PopError("expecting ECDSA challenge")
        nonce = _nonce()
        combined = combine_nonces(challenge["ecdsa_signature"]["nonce"], nonce)
        r, s = decode_dss_signature(private_key.sign(combined, ec.ECDSA(Prehashed(hashes.SHA256()))))
        return {"rsa_signature": None, "ecdsa_signature": {"nonce": nonce, "r": _int_bytes(r), "s": _int_bytes(s)}}
    raise X509PopError(f"unsupported private key type {type(private_key).__name__}")


def verify_response(public_key: Any, challenge: dict[str, Any], response: dict[str, Any]) -> None:
    """Raise X509PopError unless ``response`` proves possession of ``public_key``'s private key."""
    if isinstance(public_key, rsa.RSAPublicKey):
        if not challenge.get("rsa_signature"):
            raise X509PopError("expecting RSA challenge")
        if not response.get("rsa_signature"):
            raise X509PopError("expecting RSA response")
        resp = response["rsa_signature"]
        combined = combine_nonces(challenge["rsa_signature"]["nonce"], resp["nonce"])
        try:
            public_key.verify(resp["signature"], combined, _PSS_VERIFY, Prehashed(hashes.SHA256()))
        except (InvalidSignature, ValueError):
            raise X509PopError("RSA signature verify failed") from None
        return
    if isinstance(public_key, ec.EllipticCurvePublicKey):
        if not challenge.get("ecdsa_signature"):
            raise X509PopError("expecting ECDSA challenge")
        if not response.get("ecdsa_signature"):
            raise X509PopError("expecting ECDSA response")
        resp = response["ecdsa_signature"]
        combined = combine_nonces(challenge["ecdsa_signature"]["nonce"], resp["nonce"])
        r, s = int.from_bytes(resp["r"], "big"), int.from_bytes(resp["s"], "big")
        try:
            public_key.verify(encode_dss_signature(r, s), combined, ec.ECDSA(Prehashed(hashes.SHA256())))
        except (InvalidSignature, ValueError):
            raise X509PopError("ECDSA signature verify failed") from None
        return
    raise X509PopError(f"unsupported public key type {type(public_key).__name__}")


# --- chain of trust ----------------------------------------------------------------

def _is_ca(policy: Any, cert: x509.Certificate, bc: x509.BasicConstraints) -> None:
    if not bc.ca:
        raise ValueError("certificate is not a CA")


# Issuers must carry basicConstraints with cA, as Go demands of intermediates
# (cryptography insists on it for roots too, so a v1 root cannot anchor a chain).
_CA_POLICY = ExtensionPolicy.permit_all().require_present(x509.BasicConstraints, Criticality.AGNOSTIC, _is_ca)
# Go's x509.Verify with ExtKeyUsageAny does not judge the leaf's extensions or EKUs
# (the Web PKI profile would demand clientAuth and SANs).
_EE_POLICY = ExtensionPolicy.permit_all()


def verify_chain(
    leaf: x509.Certificate,
    intermediates: list[x509.Certificate],
    roots: list[x509.Certificate],
    now: datetime.datetime | None = None,
) -> list[x509.Certificate]:
    """Return the verified chain, leaf first and trust anchor last."""
    if not roots:
        raise X509PopError("x509: certificate signed by unknown authority (no trusted roots)")
    builder = (
        PolicyBuilder()
        .store(Store(roots))
        .time(now or datetime.datetime.now(datetime.timezone.utc))
        .extension_policies(ca_policy=_CA_POLICY, ee_policy=_EE_POLICY)
    )
    try:
        return list(builder.build_client_verifier().verify(leaf, intermediates).chain)
    except VerificationError as exc:
        message = str(exc)
        if "all candidates exhausted with no interior errors" in message:
            message = "certificate signed by unknown authority"
        elif "not valid at validation time" in message:
            message = "certificate has expired or is not yet valid: " + message
        raise X509PopError(message) from None


# --- identity ----------------------------------------------------------------------

def fingerprint(cert: x509.Certificate) -> str:
    """SHA-1 of the DER certificate, lowercase hex: what the agent ID and CA selectors use."""
    return hashlib.sha1(cert.public_bytes(serialization.Encoding.DER)).hexdigest()  # noqa: S324 - as SPIRE specifies


def serial_number_hex(serial: int) -> str:
    text = format(serial, "x")
    return "0" + text if len(text) % 2 else text


def uri_san_selectors(leaf: x509.Certificate, trust_domain: str) -> dict[str, str]:
    """``x509pop://<td>/<key>/<value>`` URI SANs become ``{key: value}``."""
    prefix = f"x509pop://{trust_domain}/"
    out: dict[str, str] = {}
    for uri in uri_sans(leaf):
        if not uri.startswith(prefix):
            continue
        path = urllib.parse.unquote(urllib.parse.urlsplit(uri).path)
        segments = path.strip("/").split("/", 1)
        if len(segments) == 2:
            out[segments[0]] = segments[1]
    return out


def selector_values(leaf: x509.Certificate, chain: list[x509.Certificate], san: dict[str, str]) -> list[str]:
    values = []
    cn = _name_fields(leaf.subject)["CommonName"]
    if cn:
        values.append("subject:cn:" + cn)
    seen = set()
    for cert in chain[1:]:
        fp = fingerprint(cert)
        if fp not in seen:
            seen.add(fp)
            values.append("ca:fingerprint:" + fp)
    values.append("serialnumber:" + serial_number_hex(leaf.serial_number))
    values.extend(f"san:{k}:{v}" for k, v in sorted(san.items()))
    return values


def template_data(
    trust_domain: str, leaf: x509.Certificate, svid_path_trimmed: str, san: dict[str, str]
) -> dict[str, Any]:
    """What ``agent_path_template`` can reference: SPIRE's fields plus the common
    ones of Go's embedded x509.Certificate."""
    sans = _san(leaf)
    return {
        "PluginName": PLUGIN_NAME,
        "TrustDomain": trust_domain,
        "Fingerprint": fingerprint(leaf),
        "SerialNumberHex": serial_number_hex(leaf.serial_number),
        "SVIDPathTrimmed": svid_path_trimmed,
        "URISanSelectors": dict(san),
        "Subject": _name_fields(leaf.subject),
        "Issuer": _name_fields(leaf.issuer),
        "SerialNumber": leaf.serial_number,
        "Version": leaf.version.value + 1,
        "DNSNames": [n.value for n in sans if isinstance(n, x509.DNSName)],
        "EmailAddresses": [n.value for n in sans if isinstance(n, x509.RFC822Name)],
        "IPAddresses": [str(n.value) for n in sans if isinstance(n, x509.IPAddress)],
        "URIs": uri_sans(leaf),
    }


_NAME_FIELDS = {
    "Country": NameOID.COUNTRY_NAME,
    "Organization": NameOID.ORGANIZATION_NAME,
    "OrganizationalUnit": NameOID.ORGANIZATIONAL_UNIT_NAME,
    "Locality": NameOID.LOCALITY_NAME,
    "Province": NameOID.STATE_OR_PROVINCE_NAME,
    "StreetAddress": NameOID.STREET_ADDRESS,
    "PostalCode": NameOID.POSTAL_CODE,
}


def _name_fields(name: x509.Name) -> dict[str, Any]:
    """Go's pkix.Name: list fields, and the last CN / serialNumber attribute."""
    def values(oid: x509.ObjectIdentifier) -> list[str]:
        return [str(a.value) for a in name.get_attributes_for_oid(oid)]

    out: dict[str, Any] = {k: values(oid) for k, oid in _NAME_FIELDS.items()}
    cns, serials = values(NameOID.COMMON_NAME), values(NameOID.SERIAL_NUMBER)
    out["CommonName"] = cns[-1] if cns else ""
    out["SerialNumber"] = serials[-1] if serials else ""
    return out


def _san(cert: x509.Certificate) -> list[x509.GeneralName]:
    try:
        return list(cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value)
    except x509.ExtensionNotFound:
        return []


def uri_sans(cert: x509.Certificate) -> list[str]:
    """The leaf's URI SANs as written."""
    return [n.value for n in _san(cert) if isinstance(n, x509.UniformResourceIdentifier)]
