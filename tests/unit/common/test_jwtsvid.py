"""JWT-SVID signing and validation (common.jwtsvid): round trip and every refusal."""

from __future__ import annotations

import base64
import json
import time

import jwt as pyjwt
import pytest

from spire_py.common.jwtsvid import JWTSVIDError, sign_jwt_svid, validate_jwt_svid
from spire_py.common.keys import generate_key, public_key_der
from spire_py.common.spiffeid import SpiffeId, TrustDomain

TD = TrustDomain("example.org")
SUB = "spiffe://example.org/workload"
NOW = 1_800_000_000.0


def _parts(token: str) -> tuple[dict, dict]:
    h, c, _ = token.split(".")
    dec = lambda s: json.loads(base64.urlsafe_b64decode(s + "=" * (-len(s) % 4)))  # noqa: E731
    return dec(h), dec(c)


@pytest.fixture(scope="module")
def key():
    return generate_key("ec-p256")


@pytest.fixture
def bundles(key):
    return {TD.id_string(): {"kid1": key.public_key()}}


def _token(key, **kw):
    args = dict(key_id="kid1", spiffe_id=SUB, audience=["svc"], ttl=300, issuer=None, now=NOW)
    args.update(kw)
    return sign_jwt_svid(key, **args)


# --- signing ---------------------------------------------------------------------------------------
@pytest.mark.parametrize("key_type,alg", [("ec-p256", "ES256"), ("ec-p384", "ES384"), ("rsa-2048", "RS256")])
def test_round_trip_per_key_type(key_type, alg):
    k = generate_key(key_type)
    token = _token(k, audience=["a", "b"], issuer="https://oidc.example.org")
    header, claims = _parts(token)
    assert header == {"alg": alg, "kid": "kid1", "typ": "JWT"}
    assert claims == {"aud": ["a", "b"], "exp": int(NOW) + 300, "iat": int(NOW),
                      "iss": "https://oidc.example.org", "sub": SUB}
    sid, got = validate_jwt_svid(token, "b", {TD: {"kid1": k.public_key()}}, now=NOW + 10)
    assert sid == SpiffeId.parse(SUB) and got["iss"] == "https://oidc.example.org"


def test_single_audience_is_still_a_list_as_spire_emits():
    assert _parts(_token(generate_key()))[1]["aud"] == ["svc"]


def test_expiry_capped_at_key_expiry(key):
    _, claims = _parts(_token(key, ttl=3600, expiration_cap=NOW + 60))
    assert claims["exp"] == int(NOW) + 60


def test_empty_audience_refused_at_signing(key):
    with pytest.raises(JWTSVIDError, match="audience is required"):
        _token(key, audience=["", ""])


def test_bundle_shapes_accepted(key, bundles):
    token = _token(key)
    for keys in ({"example.org": {"kid1": key.public_key()}},
                 {TD: {"kid1": (key.public_key(), int(NOW) + 999)}},
                 {TD.id_string(): {"kid1": public_key_der(key)}}):
        assert validate_jwt_svid(token, "svc", keys, now=NOW)[0] == SpiffeId.parse(SUB)


def test_validates_with_py_spiffe(key):
    from spiffe import JwtBundle, JwtSvid, TrustDomain as PyTD

    token = sign_jwt_svid(key, "kid1", SUB, ["svc"], 300)
    bundle = JwtBundle(PyTD("example.org"), {"kid1": key.public_key()})
    svid = JwtSvid.parse_and_validate(token, bundle, ["svc"])
    assert str(svid.spiffe_id) == SUB


# --- refusals -------------------------------------------------------------------------------------
def test_unknown_kid(key, bundles):
    with pytest.raises(JWTSVIDError, match='no JWT authority "other" found for trust domain "example.org"'):
        validate_jwt_svid(_token(key, key_id="other"), "svc", bundles, now=NOW)


def test_unknown_trust_domain(key, bundles):
    with pytest.raises(JWTSVIDError, match='no bundle found for trust domain "other.org"'):
        validate_jwt_svid(_token(key, spiffe_id="spiffe://other.org/w"), "svc", bundles, now=NOW)


def test_bad_signature(key, bundles):
    forged = _token(generate_key())  # same kid, another key
    with pytest.raises(JWTSVIDError, match="error in cryptographic primitive"):
        validate_jwt_svid(forged, "svc", bundles, now=NOW)
    h, c, s = _token(key).split(".")
    tampered_claims = base64.urlsafe_b64encode(json.dumps(
        {"aud": ["svc"], "exp": int(NOW) + 9999, "sub": SUB}).encode()).rstrip(b"=").decode()
    with pytest.raises(JWTSVIDError, match="cryptographic primitive"):
        validate_jwt_svid(f"{h}.{tampered_claims}.{s}", "svc", bundles, now=NOW)


def test_expired_with_go_jose_leeway(key, bundles):
    token = _token(key, ttl=300)
    validate_jwt_svid(token, "svc", bundles, now=NOW + 330)  # within the one-minute leeway
    with pytest.raises(JWTSVIDError, match="token has expired"):
        validate_jwt_svid(token, "svc", bundles, now=NOW + 361)


def test_issued_in_the_future(key, bundles):
    with pytest.raises(JWTSVIDError, match="issued in the future"):
        validate_jwt_svid(_token(key, now=NOW + 3600), "svc", bundles, now=NOW)


def test_audience_mismatch(key, bundles):
    with pytest.raises(JWTSVIDError, match=r'expected audience in \["other"\] \(audience=\["svc"\]\)'):
        validate_jwt_svid(_token(key), "other", bundles, now=NOW)
    with pytest.raises(JWTSVIDError, match="audience is required"):
        validate_jwt_svid(_token(key), "", bundles, now=NOW)


def test_subject_must_be_a_spiffe_id(key, bundles):
    token = pyjwt.encode({"sub": "https://example.org/x", "aud": ["svc"], "exp": int(NOW) + 60}, key,
                         algorithm="ES256", headers={"kid": "kid1"})
    with pytest.raises(JWTSVIDError, match="invalid subject claim"):
        validate_jwt_svid(token, "svc", bundles, now=NOW)


def test_missing_claims_and_headers(key, bundles):
    no_sub = pyjwt.encode({"aud": ["svc"], "exp": int(NOW) + 60}, key, algorithm="ES256", headers={"kid": "kid1"})
    with pytest.raises(JWTSVIDError, match="missing subject"):
        validate_jwt_svid(no_sub, "svc", bundles, now=NOW)
    no_exp = pyjwt.encode({"aud": ["svc"], "sub": SUB}, key, algorithm="ES256", headers={"kid": "kid1"})
    with pytest.raises(JWTSVIDError, match="missing exp"):
        validate_jwt_svid(no_exp, "svc", bundles, now=NOW)
    no_kid = pyjwt.encode({"aud": ["svc"], "sub": SUB, "exp": int(NOW) + 60}, key, algorithm="ES256")
    with pytest.raises(JWTSVIDError, match="missing key id"):
        validate_jwt_svid(no_kid, "svc", bundles, now=NOW)
    bad_typ = pyjwt.encode({"aud": ["svc"], "sub": SUB, "exp": int(NOW) + 60}, key, algorithm="ES256",
                           headers={"kid": "kid1", "typ": "at+jwt"})
    with pytest.raises(JWTSVIDError, match="JWT or JOSE"):
        validate_jwt_svid(bad_typ, "svc", bundles, now=NOW)


def test_alg_none_and_hmac_refused(key, bundles):
    claims = {"aud": ["svc"], "sub": SUB, "exp": int(NOW) + 60}
    none = pyjwt.encode(claims, None, algorithm="none", headers={"kid": "kid1"})
    with pytest.raises(JWTSVIDError, match='unsupported signature algorithm "none"'):
        validate_jwt_svid(none, "svc", bundles, now=NOW)
    # HS256 keyed with the public key bytes: the classic algorithm-confusion forgery.
    hs = pyjwt.encode(claims, "x" * 32, algorithm="HS256", headers={"kid": "kid1"})
    with pytest.raises(JWTSVIDError, match='unsupported signature algorithm "HS256"'):
        validate_jwt_svid(hs, "svc", bundles, now=NOW)


def _with_header(token: str, header: dict) -> str:
    h = base64.urlsafe_b64encode(json.dumps(header).encode()).rstrip(b"=").decode()
    return h + token[token.index("."):]


def test_alg_must_fit_the_key():
    p384, rsa_key = generate_key("ec-p384"), generate_key("rsa-2048")
    token = _with_header(_token(p384), {"alg": "ES256", "kid": "kid1", "typ": "JWT"})
    with pytest.raises(JWTSVIDError, match='"ES256" does not match the EC key'):
        validate_jwt_svid(token, "svc", {TD: {"kid1": p384.public_key()}}, now=NOW)
    token = _with_header(_token(rsa_key), {"alg": "ES256", "kid": "kid1"})
    with pytest.raises(JWTSVIDError, match='"ES256" does not match the RSA key'):
        validate_jwt_svid(token, "svc", {TD: {"kid1": rsa_key.public_key()}}, now=NOW)


def test_garbage_token(bundles):
    for bad in ("", "a.b", "not-a-token", "a.b.c"):
        with pytest.raises(JWTSVIDError, match="unable to parse JWT token"):
            validate_jwt_svid(bad, "svc", bundles, now=NOW)


def test_real_time_default(key, bundles):
    token = sign_jwt_svid(key, "kid1", SUB, ["svc"], 60)
    assert validate_jwt_svid(token, "svc", bundles)[1]["exp"] <= time.time() + 60
