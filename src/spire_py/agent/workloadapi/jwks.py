"""JWT authorities as the standard JWKS document the Workload API hands out.

SPIRE marshals these with ``StandardJWKS`` and without X.509 authorities: a plain
``{"keys": [...]}`` with ``kty``/``kid`` and the key parameters, no ``use`` and no
SPIFFE bundle fields, indented by four spaces (go-jose field order).
"""

from __future__ import annotations

import base64
import json
from typing import Any, Mapping

from cryptography.hazmat.primitives.asymmetric import ec, ed25519, rsa

_CURVES = {"secp256r1": "P-256", "secp384r1": "P-384", "secp521r1": "P-521"}


def _b64(n: int, size: int = 0) -> str:
    raw = n.to_bytes(size or max(1, (n.bit_length() + 7) // 8), "big")
    return base64.urlsafe_b64encode(raw).rstrip(b"=").decode()


def jwk(kid: str, key: Any) -> dict[str, str]:
    """One public key as a JWK (go-jose order: kty, kid, crv, x, y, n, e)."""
    if isinstance(key, ec.EllipticCurvePublicKey):
        crv = _CURVES.get(key.curve.name)
        if crv is None:
            raise ValueError(f'JWT authority "{kid}": unsupported curve {key.curve.name}')
        nums = key.public_numbers()
        size = (key.curve.key_size + 7) // 8
        return {"kty": "EC", "kid": kid, "crv": crv, "x": _b64(nums.x, size), "y": _b64(nums.y, size)}
    if isinstance(key, rsa.RSAPublicKey):
        nums = key.public_numbers()
        return {"kty": "RSA", "kid": kid, "n": _b64(nums.n), "e": _b64(nums.e)}
    if isinstance(key, ed25519.Ed25519PublicKey):
        from cryptography.hazmat.primitives import serialization

        raw = key.public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)
        return {"kty": "OKP", "kid": kid, "crv": "Ed25519", "x": base64.urlsafe_b64encode(raw).rstrip(b"=").decode()}
    raise ValueError(f'JWT authority "{kid}": unsupported key type {type(key).__name__}')


def jwt_authorities_of(bundle: Any) -> dict[str, Any]:
    """kid -> public key, whatever shape the bundle stores them in (key or (key, expires_at))."""
    out: dict[str, Any] = {}
    auth: Mapping[str, Any] = getattr(bundle, "jwt_authorities", None) or {}
    for kid, value in auth.items():
        out[kid] = value[0] if isinstance(value, (tuple, list)) else value
    return out


def jwks_json(bundle: Any) -> bytes:
    keys = [jwk(kid, key) for kid, key in sorted(jwt_authorities_of(bundle).items())]
    return json.dumps({"keys": keys}, indent=4).encode()
