"""Private keys as SPIRE names them, and their encodings (atomic files: ``common/files.py``).

Key types are SPIRE's configuration names (``ca_key_type``, ``jwt_key_type``,
agent ``key_type``): ``ec-p256``, ``ec-p384``, ``rsa-2048``, ``rsa-4096``.
Private keys are stored as PKCS#8; public keys travel as SubjectPublicKeyInfo
DER, as in SPIRE's bundle and journal.
"""

from __future__ import annotations

from typing import Union

from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa

from .errors import SpireError

PrivateKey = Union[ec.EllipticCurvePrivateKey, rsa.RSAPrivateKey]
PublicKey = Union[ec.EllipticCurvePublicKey, rsa.RSAPublicKey]

EC_P256 = "ec-p256"
EC_P384 = "ec-p384"
RSA_2048 = "rsa-2048"
RSA_4096 = "rsa-4096"
KEY_TYPES = (EC_P256, EC_P384, RSA_2048, RSA_4096)

_CURVES: dict[str, ec.EllipticCurve] = {EC_P256: ec.SECP256R1(), EC_P384: ec.SECP384R1()}
_RSA_BITS = {RSA_2048: 2048, RSA_4096: 4096}
_CURVE_TYPES = {"secp256r1": EC_P256, "secp384r1": EC_P384}
_CURVE_ALGS = {"secp256r1": "ES256", "secp384r1": "ES384", "secp521r1": "ES512"}


class KeyTypeError(SpireError, ValueError):
    """A key of an unsupported type, or bytes that are not a usable key."""


def generate_key(key_type: str = EC_P256) -> PrivateKey:
    """A fresh private key of one of SPIRE's key types."""
    curve = _CURVES.get(key_type)
    if curve is not None:
        return ec.generate_private_key(curve)
    bits = _RSA_BITS.get(key_type)
    if bits is not None:
        return rsa.generate_private_key(public_exponent=65537, key_size=bits)
    raise KeyTypeError(f'unsupported key type "{key_type}"; supported: {", ".join(KEY_TYPES)}')


def _public(key: PrivateKey | PublicKey) -> PublicKey:
    if isinstance(key, (ec.EllipticCurvePrivateKey, rsa.RSAPrivateKey)):
        return key.public_key()
    if isinstance(key, (ec.EllipticCurvePublicKey, rsa.RSAPublicKey)):
        return key
    raise KeyTypeError(f"unsupported key {type(key).__name__}")


def key_type_of(key: PrivateKey | PublicKey) -> str:
    """SPIRE's name for the type of ``key`` (private or public)."""
    pub = _public(key)
    if isinstance(pub, ec.EllipticCurvePublicKey):
        name = _CURVE_TYPES.get(pub.curve.name)
        if name is None:
            raise KeyTypeError(f"unsupported elliptic curve {pub.curve.name}")
        return name
    name = {2048: RSA_2048, 4096: RSA_4096}.get(pub.key_size)
    if name is None:
        raise KeyTypeError(f"unsupported RSA key size {pub.key_size}")
    return name


def private_key_to_der(key: PrivateKey) -> bytes:
    """PKCS#8 DER, unencrypted (SPIRE's disk KeyManager format)."""
    return key.private_bytes(serialization.Encoding.DER, serialization.PrivateFormat.PKCS8,
                             serialization.NoEncryption())


def private_key_to_pem(key: PrivateKey) -> bytes:
    """PKCS#8 PEM ("PRIVATE KEY"), unencrypted."""
    return key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                             serialization.NoEncryption())


def _check_private(key: object) -> PrivateKey:
    if isinstance(key, (ec.EllipticCurvePrivateKey, rsa.RSAPrivateKey)):
        return key
    raise KeyTypeError(f"unsupported private key type {type(key).__name__}; expected EC or RSA")


def load_private_key(data: bytes) -> PrivateKey:
    """An EC or RSA private key from PEM (PKCS#8, PKCS#1 or SEC1) or PKCS#8 DER.

    A PEM file may hold an "EC PARAMETERS" block before the key, as
    ``openssl ecparam -genkey`` writes; any other extra block is refused.
    """
    if b"-----BEGIN" in data:
        blocks = [b for b in _pem_blocks(data) if b[0] != "EC PARAMETERS"]
        keys = [b for b in blocks if b[0].endswith("PRIVATE KEY")]
        if len(keys) != 1 or len(blocks) != 1:
            raise KeyTypeError(f"expected a single PEM private key block; found {len(keys)} key block(s) "
                               f"and {len(blocks) - len(keys)} other block(s)")
        if keys[0][0] == "ENCRYPTED PRIVATE KEY":
            raise KeyTypeError("encrypted private keys are not supported")
        try:
            return _check_private(serialization.load_pem_private_key(keys[0][1], password=None))
        except (ValueError, TypeError) as exc:
            raise KeyTypeError(f"unable to parse private key: {exc}") from None
    try:
        return _check_private(serialization.load_der_private_key(data, password=None))
    except (ValueError, TypeError) as exc:
        raise KeyTypeError(f"unable to parse private key: {exc}") from None


def _pem_blocks(data: bytes) -> list[tuple[str, bytes]]:
    """(label, whole block) for each PEM block in ``data``."""
    out: list[tuple[str, bytes]] = []
    pos = 0
    while True:
        start = data.find(b"-----BEGIN ", pos)
        if start < 0:
            return out
        label_end = data.find(b"-----", start + 11)
        if label_end < 0:
            raise KeyTypeError("malformed PEM: unterminated BEGIN line")
        label = data[start + 11:label_end].decode("ascii", "replace")
        end_marker = b"-----END " + label.encode() + b"-----"
        end = data.find(end_marker, label_end)
        if end < 0:
            raise KeyTypeError(f'malformed PEM: no END line for "{label}"')
        out.append((label, data[start:end + len(end_marker)] + b"\n"))
        pos = end + len(end_marker)


def public_key_der(key: PrivateKey | PublicKey) -> bytes:
    """SubjectPublicKeyInfo DER of ``key`` (Go's x509.MarshalPKIXPublicKey)."""
    return _public(key).public_bytes(serialization.Encoding.DER,
                                     serialization.PublicFormat.SubjectPublicKeyInfo)


def load_public_key_der(der: bytes) -> PublicKey:
    try:
        key = serialization.load_der_public_key(der)
    except ValueError as exc:
        raise KeyTypeError(f"unable to parse public key: {exc}") from None
    if not isinstance(key, (ec.EllipticCurvePublicKey, rsa.RSAPublicKey)):
        raise KeyTypeError(f"unsupported public key type {type(key).__name__}; expected EC or RSA")
    return key


def public_keys_equal(a: PrivateKey | PublicKey, b: PrivateKey | PublicKey) -> bool:
    return public_key_der(a) == public_key_der(b)


def jwt_alg_for(key: PrivateKey | PublicKey) -> str:
    """The JWS algorithm SPIRE signs JWT-SVIDs with for ``key``: ES256/ES384 or RS256."""
    pub = _public(key)
    if isinstance(pub, ec.EllipticCurvePublicKey):
        alg = _CURVE_ALGS.get(pub.curve.name)
        if alg is None:
            raise KeyTypeError(f"unsupported elliptic curve {pub.curve.name}")
        return alg
    return "RS256"


def signature_hash_for(key: PrivateKey | PublicKey) -> hashes.HashAlgorithm:
    """The digest Go's x509 picks when signing certificates with ``key``."""
    pub = _public(key)
    if isinstance(pub, ec.EllipticCurvePublicKey):
        size = pub.curve.key_size
        if size > 384:
            return hashes.SHA512()
        if size > 256:
            return hashes.SHA384()
    return hashes.SHA256()
