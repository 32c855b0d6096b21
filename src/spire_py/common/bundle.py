"""A trust domain's bundle: X.509 authorities, JWT authorities, refresh hint, sequence.

Converts to and from the SPIFFE bundle format (a JWKS with ``x509-svid`` entries
carrying ``x5c`` and ``jwt-svid`` entries carrying ``kid``; ``spiffe_sequence``
and ``spiffe_refresh_hint``), PEM, the SPIRE API message, and the plain record
the datastore keeps (DER certificates; (key id, SPKI DER, expires_at) keys).
Parsing follows go-spiffe's spiffebundle.Parse: unknown ``use`` values are
ignored, an ``x509-svid`` entry must carry exactly one certificate whose key is
the entry's key, a ``jwt-svid`` entry needs a key id.
"""

from __future__ import annotations

import base64
import binascii
import json
from dataclasses import dataclass, field
from typing import Any, Mapping, Optional, Union

from cryptography import x509
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa

from .errors import SpireError
from .keys import KeyTypeError, PublicKey, load_public_key_der, public_key_der
from .spiffeid import TrustDomain

X509_SVID_USE = "x509-svid"
JWT_SVID_USE = "jwt-svid"

_CURVES = {"secp256r1": ("P-256", 32), "secp384r1": ("P-384", 48), "secp521r1": ("P-521", 66)}
_CURVES_BY_NAME: dict[str, ec.EllipticCurve] = {
    "P-256": ec.SECP256R1(), "P-384": ec.SECP384R1(), "P-521": ec.SECP521R1()}


class BundleError(SpireError, ValueError):
    """A bundle document or record that cannot be read; the message says which part."""


def _b64url(raw: bytes) -> str:
    return base64.urlsafe_b64encode(raw).rstrip(b"=").decode()


def _unb64url(value: Any, what: str) -> bytes:
    if not isinstance(value, str) or not value:
        raise BundleError(f'JWK "{what}" is missing or not a string')
    try:
        return base64.urlsafe_b64decode(value + "=" * (-len(value) % 4))
    except (binascii.Error, ValueError):
        raise BundleError(f'JWK "{what}" is not base64url') from None


def jwk_params(key: PublicKey) -> dict[str, str]:
    """The key parameters of a JWK in go-jose's field order (kty, crv, x, y / n, e)."""
    if isinstance(key, ec.EllipticCurvePublicKey):
        crv = _CURVES.get(key.curve.name)
        if crv is None:
            raise BundleError(f"unsupported elliptic curve {key.curve.name}")
        nums = key.public_numbers()
        return {"kty": "EC", "crv": crv[0], "x": _b64url(nums.x.to_bytes(crv[1], "big")),
                "y": _b64url(nums.y.to_bytes(crv[1], "big"))}
    if isinstance(key, rsa.RSAPublicKey):
        rsa_nums = key.public_numbers()
        return {"kty": "RSA", "n": _b64url(rsa_nums.n.to_bytes((rsa_nums.n.bit_length() + 7) // 8, "big")),
                "e": _b64url(rsa_nums.e.to_bytes((rsa_nums.e.bit_length() + 7) // 8, "big"))}
    raise BundleError(f"unsupported key type {type(key).__name__}")


def key_from_jwk(jwk: Mapping[str, Any]) -> PublicKey:
    kty = jwk.get("kty")
    if kty == "EC":
        curve = _CURVES_BY_NAME.get(str(jwk.get("crv")))
        if curve is None:
            raise BundleError(f'unsupported elliptic curve "{jwk.get("crv")}"')
        x = int.from_bytes(_unb64url(jwk.get("x"), "x"), "big")
        y = int.from_bytes(_unb64url(jwk.get("y"), "y"), "big")
        try:
            return ec.EllipticCurvePublicNumbers(x, y, curve).public_key()
        except ValueError as exc:
            raise BundleError(f"invalid EC key: {exc}") from None
    if kty == "RSA":
        n = int.from_bytes(_unb64url(jwk.get("n"), "n"), "big")
        e = int.from_bytes(_unb64url(jwk.get("e"), "e"), "big")
        try:
            return rsa.RSAPublicNumbers(e, n).public_key()
        except ValueError as exc:
            raise BundleError(f"invalid RSA key: {exc}") from None
    raise BundleError(f'unknown JSON web key type "{kty}"')


def _key_of(value: Any) -> PublicKey:
    """A public key from a key object, SPKI DER, or a (key, expires_at) pair."""
    if isinstance(value, (tuple, list)):
        value = value[0]
    if isinstance(value, (bytes, bytearray, memoryview)):
        return load_public_key_der(bytes(value))
    if isinstance(value, (ec.EllipticCurvePublicKey, rsa.RSAPublicKey)):
        return value
    raise BundleError(f"unsupported JWT authority value {type(value).__name__}")


def _td(value: Union[TrustDomain, str]) -> TrustDomain:
    return value if isinstance(value, TrustDomain) else TrustDomain.parse(value)


def _field(obj: Any, name: str, default: Any = None) -> Any:
    if isinstance(obj, Mapping):
        return obj.get(name, default)
    return getattr(obj, name, default)


@dataclass
class Bundle:
    """Trust material of one trust domain.

    ``jwt_authorities`` maps key id → (public key, expires_at unix seconds; 0 = no expiry).
    ``refresh_hint`` is in seconds; 0 for refresh hint or sequence number means unset.
    """

    trust_domain: TrustDomain
    x509_authorities: list[x509.Certificate] = field(default_factory=list)
    jwt_authorities: dict[str, tuple[PublicKey, int]] = field(default_factory=dict)
    refresh_hint: int = 0
    sequence_number: int = 0

    def __post_init__(self) -> None:
        if isinstance(self.trust_domain, str):
            self.trust_domain = TrustDomain.parse(self.trust_domain)
        # Accept bare keys for convenience; store (key, expires_at).
        self.jwt_authorities = {
            kid: ((_key_of(v[0]), int(v[1] or 0)) if isinstance(v, (tuple, list)) else (_key_of(v), 0))
            for kid, v in self.jwt_authorities.items()
        }

    # --- editing ---------------------------------------------------------------------------
    def add_x509_authority(self, cert: x509.Certificate) -> bool:
        """Add ``cert`` unless already present; True when added."""
        if cert in self.x509_authorities:
            return False
        self.x509_authorities.append(cert)
        return True

    def add_jwt_authority(self, key_id: str, public_key: PublicKey, expires_at: int = 0) -> None:
        if not key_id:
            raise BundleError("keyID cannot be empty")
        self.jwt_authorities[key_id] = (public_key, int(expires_at))

    def jwt_keys(self) -> dict[str, PublicKey]:
        """key id → public key, the shape JWT-SVID validation takes."""
        return {kid: v[0] for kid, v in self.jwt_authorities.items()}

    def prune(self, now: float) -> bool:
        """Drop authorities that expired before ``now``; True when something was dropped."""
        x509s = [c for c in self.x509_authorities if c.not_valid_after_utc.timestamp() >= now]
        jwts = {k: v for k, v in self.jwt_authorities.items() if not v[1] or v[1] >= now}
        changed = len(x509s) != len(self.x509_authorities) or len(jwts) != len(self.jwt_authorities)
        self.x509_authorities, self.jwt_authorities = x509s, jwts
        return changed

    # --- SPIFFE bundle JSON ------------------------------------------------------------------
    def to_jwks(self) -> dict[str, Any]:
        keys: list[dict[str, Any]] = []
        for cert in self.x509_authorities:
            der = cert.public_bytes(serialization.Encoding.DER)
            keys.append({"use": X509_SVID_USE, **jwk_params(cert.public_key()),  # type: ignore[arg-type]
                         "x5c": [base64.b64encode(der).decode()]})
        for kid, (key, _exp) in self.jwt_authorities.items():
            params = jwk_params(key)
            keys.append({"use": JWT_SVID_USE, "kty": params.pop("kty"), "kid": kid, **params})
        doc: dict[str, Any] = {"keys": keys}
        if self.sequence_number > 0:
            doc["spiffe_sequence"] = self.sequence_number
        if self.refresh_hint > 0:
            doc["spiffe_refresh_hint"] = self.refresh_hint
        return doc

    def to_json(self, indent: Optional[int] = None) -> bytes:
        return json.dumps(self.to_jwks(), indent=indent).encode()

    @classmethod
    def from_json(cls, trust_domain: Union[TrustDomain, str], data: Union[bytes, str]) -> "Bundle":
        try:
            doc = json.loads(data)
        except (ValueError, UnicodeDecodeError) as exc:
            raise BundleError(f"unable to parse JWKS: {exc}") from None
        if not isinstance(doc, dict):
            raise BundleError("unable to parse JWKS: document is not a JSON object")
        b = cls(_td(trust_domain))
        for name, attr in (("spiffe_refresh_hint", "refresh_hint"), ("spiffe_sequence", "sequence_number")):
            value = doc.get(name)
            if value is not None:
                if not isinstance(value, int) or isinstance(value, bool):
                    raise BundleError(f'unable to parse JWKS: "{name}" is not an integer')
                setattr(b, attr, value)
        keys = doc.get("keys")
        if keys is None:
            raise BundleError("no authorities found")
        if not isinstance(keys, list):
            raise BundleError('unable to parse JWKS: "keys" is not a list')
        for i, jwk in enumerate(keys):
            if not isinstance(jwk, dict):
                raise BundleError(f"unable to parse JWKS: entry {i} is not an object")
            use = jwk.get("use")
            if use == X509_SVID_USE:
                b.add_x509_authority(_x509_entry(jwk, i))
            elif use == JWT_SVID_USE:
                kid = jwk.get("kid")
                if not isinstance(kid, str) or not kid:
                    raise BundleError(f"error adding authority {i} of JWKS: keyID cannot be empty")
                try:
                    b.jwt_authorities[kid] = (key_from_jwk(jwk), 0)
                except BundleError as exc:
                    raise BundleError(f"unable to parse JWKS: entry {i}: {exc}") from None
        return b

    # --- PEM -------------------------------------------------------------------------------------
    def to_pem(self) -> bytes:
        return b"".join(c.public_bytes(serialization.Encoding.PEM) for c in self.x509_authorities)

    @classmethod
    def from_pem(cls, trust_domain: Union[TrustDomain, str], data: bytes) -> "Bundle":
        if b"-----BEGIN CERTIFICATE-----" not in data:
            raise BundleError("no certificates found in PEM data")
        try:
            certs = x509.load_pem_x509_certificates(data)
        except ValueError as exc:
            raise BundleError(f"unable to parse PEM certificates: {exc}") from None
        b = cls(_td(trust_domain))
        for c in certs:
            b.add_x509_authority(c)
        return b

    # --- storage record (datastore models.Bundle) ------------------------------------------------
    def to_record(self) -> dict[str, Any]:
        """Plain fields: DER certificates and (key id, SPKI DER, expires_at) JWT keys."""
        return {
            "trust_domain_id": self.trust_domain.id_string(),
            "x509_authorities": [c.public_bytes(serialization.Encoding.DER) for c in self.x509_authorities],
            "jwt_authorities": [(kid, public_key_der(k), exp) for kid, (k, exp) in self.jwt_authorities.items()],
            "refresh_hint": self.refresh_hint,
            "sequence_number": self.sequence_number,
        }

    @classmethod
    def from_record(cls, record: Any) -> "Bundle":
        """From :meth:`to_record`'s dict or any object with the same attributes (the datastore's
        Bundle, whose JWT keys carry key_id/public_key/expires_at)."""
        td = _field(record, "trust_domain_id") or _field(record, "trust_domain")
        if not td:
            raise BundleError("bundle record has no trust domain")
        b = cls(TrustDomain.parse(str(td)), refresh_hint=int(_field(record, "refresh_hint", 0) or 0),
                sequence_number=int(_field(record, "sequence_number", 0) or 0))
        for i, der in enumerate(_field(record, "x509_authorities", ()) or ()):
            try:
                b.add_x509_authority(x509.load_der_x509_certificate(bytes(der)))
            except ValueError as exc:
                raise BundleError(f"X.509 authority {i} is not a DER certificate: {exc}") from None
        for item in _field(record, "jwt_authorities", ()) or ():
            kid, der, exp = (item if isinstance(item, (tuple, list))
                             else (_field(item, "key_id"), _field(item, "public_key"), _field(item, "expires_at", 0)))
            try:
                b.add_jwt_authority(str(kid), load_public_key_der(bytes(der)), int(exp or 0))
            except KeyTypeError as exc:
                raise BundleError(f'JWT authority "{kid}": {exc}') from None
        return b

    # --- SPIRE API message (spire.api.types.Bundle) -----------------------------------------------
    @classmethod
    def from_proto(cls, trust_domain: Union[TrustDomain, str, None], pb: Any) -> "Bundle":
        """From a ``spire.api.types.Bundle``; ``trust_domain`` None takes the message's."""
        td = trust_domain if trust_domain is not None else pb.trust_domain
        return cls.from_record({
            "trust_domain_id": td.id_string() if isinstance(td, TrustDomain) else str(td),
            "x509_authorities": [a.asn1 for a in pb.x509_authorities],
            "jwt_authorities": [(k.key_id, k.public_key, k.expires_at) for k in pb.jwt_authorities],
            "refresh_hint": pb.refresh_hint,
            "sequence_number": pb.sequence_number,
        })

    def to_proto(self) -> Any:
        from ..proto.spire.api.types import bundle_pb2

        rec = self.to_record()
        return bundle_pb2.Bundle(
            trust_domain=self.trust_domain.name,
            x509_authorities=[bundle_pb2.X509Certificate(asn1=der) for der in rec["x509_authorities"]],
            jwt_authorities=[bundle_pb2.JWTKey(key_id=k, public_key=der, expires_at=exp)
                             for k, der, exp in rec["jwt_authorities"]],
            refresh_hint=self.refresh_hint,
            sequence_number=self.sequence_number,
        )


def _x509_entry(jwk: Mapping[str, Any], i: int) -> x509.Certificate:
    x5c = jwk.get("x5c") or []
    if not isinstance(x5c, list) or len(x5c) != 1:
        n = len(x5c) if isinstance(x5c, list) else 0
        raise BundleError(f"expected a single certificate in {X509_SVID_USE} entry {i}; got {n}")
    try:
        cert = x509.load_der_x509_certificate(base64.b64decode(x5c[0], validate=True))
    except (binascii.Error, ValueError, TypeError) as exc:
        raise BundleError(f"unable to parse JWKS: entry {i}: bad x5c certificate: {exc}") from None
    if "kty" in jwk:
        try:
            key = key_from_jwk(jwk)
        except BundleError as exc:
            raise BundleError(f"unable to parse JWKS: entry {i}: {exc}") from None
        if public_key_der(key) != public_key_der(cert.public_key()):  # type: ignore[arg-type]
            raise BundleError(f"unable to parse JWKS: entry {i}: invalid JWK, public keys mismatch")
    return cert

