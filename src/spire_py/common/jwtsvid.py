"""JWT-SVIDs: signing as SPIRE's server does and validation as go-spiffe's jwtsvid does.

Tokens carry header ``alg`` (ES256/ES384 for EC, RS256 for RSA), ``kid`` and
``typ: JWT``, and claims ``aud`` (always a list, as SPIRE emits it), ``exp``,
``iat``, optional ``iss`` and ``sub``. Validation refuses ``alg: none`` and HMAC,
requires ``kid``, ``sub`` (a SPIFFE ID) and ``exp``, finds the key by the
subject's trust domain and ``kid``, checks the signature, expiry (with go-jose's
one-minute leeway) and that the expected audience is present. Error messages
follow go-spiffe's, prefixed ``jwtsvid:``.
"""

from __future__ import annotations

import time
from typing import Any, Mapping, Optional, Sequence, Union

import jwt as pyjwt
from cryptography.hazmat.primitives.asymmetric import ec, rsa

from .errors import SpireError
from .keys import PrivateKey, PublicKey, jwt_alg_for, load_public_key_der
from .spiffeid import SpiffeId, SpiffeIdError, TrustDomain

# go-spiffe's allowedSignatureAlgorithms.
ALLOWED_ALGS = ("RS256", "RS384", "RS512", "ES256", "ES384", "ES512", "PS256", "PS384", "PS512")
_EC_ALG_CURVES = {"ES256": "secp256r1", "ES384": "secp384r1", "ES512": "secp521r1"}
# go-jose's DefaultLeeway for exp/nbf/iat.
DEFAULT_LEEWAY = 60.0


class JWTSVIDError(SpireError, ValueError):
    """A JWT-SVID that cannot be issued or does not validate; the message says why."""

    def __init__(self, message: str) -> None:
        super().__init__(f"jwtsvid: {message}")


def _go_quote_list(values: Sequence[str]) -> str:
    """Go's %q of a []string: ["a" "b"]."""
    return "[" + " ".join('"' + v.replace("\\", "\\\\").replace('"', '\\"') + '"' for v in values) + "]"


def sign_jwt_svid(
    key: PrivateKey,
    key_id: str,
    spiffe_id: Union[SpiffeId, str],
    audience: Sequence[str],
    ttl: float,
    issuer: Optional[str] = None,
    *,
    now: Optional[float] = None,
    expiration_cap: Optional[float] = None,
) -> str:
    """A signed JWT-SVID; ``exp`` is now + ttl, capped at ``expiration_cap`` (the key's expiry)."""
    sid = spiffe_id if isinstance(spiffe_id, SpiffeId) else SpiffeId.parse(spiffe_id)
    aud = [a for a in ([audience] if isinstance(audience, str) else audience) if a]
    if not aud:
        raise JWTSVIDError("audience is required")
    if not key_id:
        raise JWTSVIDError("key id is required")
    issued = int(time.time() if now is None else now)
    expires = issued + int(ttl)
    if expiration_cap is not None and expires > int(expiration_cap):
        expires = int(expiration_cap)
    # Sorted as Go's encoding/json writes a map.
    claims: dict[str, Any] = {"aud": aud, "exp": expires, "iat": issued}
    if issuer:
        claims["iss"] = issuer
    claims["sub"] = str(sid)
    return pyjwt.encode(claims, key, algorithm=jwt_alg_for(key), headers={"kid": key_id, "typ": "JWT"})


def _lookup_keys(jwt_bundles: Mapping[Any, Mapping[str, Any]], td: TrustDomain) -> Optional[Mapping[str, Any]]:
    for k in (td, td.name, td.id_string()):
        keys = jwt_bundles.get(k)
        if keys is not None:
            return keys
    return None


def _as_public_key(value: Any) -> PublicKey:
    if isinstance(value, (tuple, list)):
        value = value[0]
    if isinstance(value, (bytes, bytearray)):
        return load_public_key_der(bytes(value))
    if isinstance(value, (ec.EllipticCurvePublicKey, rsa.RSAPublicKey)):
        return value
    raise JWTSVIDError(f"unsupported JWT authority type {type(value).__name__}")


def _check_key_alg(key: PublicKey, alg: str) -> None:
    if isinstance(key, ec.EllipticCurvePublicKey):
        if _EC_ALG_CURVES.get(alg) != key.curve.name:
            raise JWTSVIDError(f'unable to get claims from token: algorithm "{alg}" does not match the EC key')
    elif not alg.startswith(("RS", "PS")):
        raise JWTSVIDError(f'unable to get claims from token: algorithm "{alg}" does not match the RSA key')


def _number(claims: Mapping[str, Any], name: str) -> Optional[float]:
    value = claims.get(name)
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise JWTSVIDError(f'unable to get claims from token: "{name}" is not a number')
    return float(value)


def validate_jwt_svid(
    token: str,
    audience: Union[str, Sequence[str]],
    jwt_bundles: Mapping[Any, Mapping[str, Any]],
    *,
    now: Optional[float] = None,
    leeway: float = DEFAULT_LEEWAY,
) -> tuple[SpiffeId, dict[str, Any]]:
    """Validate ``token`` for ``audience`` against ``jwt_bundles``.

    ``jwt_bundles`` maps a trust domain (TrustDomain, name or ``spiffe://`` ID) to
    kid → public key (a key object, SPKI DER, or a (key, expires_at) pair).
    Returns (SPIFFE ID, all claims).
    """
    expected = [audience] if isinstance(audience, str) else list(audience)
    expected = [a for a in expected if a]
    if not expected:
        raise JWTSVIDError("audience is required")
    if not isinstance(token, str) or not token:
        raise JWTSVIDError("unable to parse JWT token")
    try:
        header = pyjwt.get_unverified_header(token)
        claims = pyjwt.decode(token, options={"verify_signature": False})
    except pyjwt.PyJWTError:
        raise JWTSVIDError("unable to parse JWT token") from None
    alg = header.get("alg")
    if alg not in ALLOWED_ALGS:
        raise JWTSVIDError(f'unable to parse JWT token: unsupported signature algorithm "{alg}"')
    typ = header.get("typ")
    if typ is not None and typ not in ("JWT", "JOSE"):
        raise JWTSVIDError("token header type not equal to either JWT or JOSE")
    kid = header.get("kid")
    if not kid or not isinstance(kid, str):
        raise JWTSVIDError("token header missing key id")
    sub = claims.get("sub")
    if not sub:
        raise JWTSVIDError("token missing subject claim")
    exp = _number(claims, "exp")
    if exp is None:
        raise JWTSVIDError("token missing exp claim")
    try:
        sid = SpiffeId.parse(sub) if isinstance(sub, str) else SpiffeId.parse("")
    except SpiffeIdError as exc:
        raise JWTSVIDError(f"token has an invalid subject claim: {exc}") from None

    keys = _lookup_keys(jwt_bundles, sid.trust_domain)
    if keys is None:
        raise JWTSVIDError(f'no bundle found for trust domain "{sid.trust_domain}"')
    if kid not in keys:
        raise JWTSVIDError(f'no JWT authority "{kid}" found for trust domain "{sid.trust_domain}"')
    key = _as_public_key(keys[kid])
    _check_key_alg(key, alg)
    try:
        claims = pyjwt.decode(token, key, algorithms=[alg], options={
            "verify_exp": False, "verify_aud": False, "verify_iat": False, "verify_nbf": False,
            "verify_iss": False, "verify_sub": False, "verify_jti": False})
    except pyjwt.InvalidSignatureError:
        raise JWTSVIDError("unable to get claims from token: go-jose/go-jose: error in cryptographic primitive") from None
    except pyjwt.PyJWTError as exc:
        raise JWTSVIDError(f"unable to get claims from token: {exc}") from None

    t = time.time() if now is None else now
    nbf, iat = _number(claims, "nbf"), _number(claims, "iat")
    if nbf is not None and t + leeway < nbf:
        raise JWTSVIDError("token not valid yet")
    if t - leeway > exp:
        raise JWTSVIDError("token has expired")
    if iat is not None and t + leeway < iat:
        raise JWTSVIDError("token issued in the future")
    aud = claims.get("aud")
    aud_list = [aud] if isinstance(aud, str) else list(aud) if isinstance(aud, list) else []
    if not any(a in aud_list for a in expected):
        raise JWTSVIDError(f"expected audience in {_go_quote_list(expected)} (audience={_go_quote_list(aud_list)})")
    return sid, dict(claims)
