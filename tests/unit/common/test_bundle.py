"""Trust bundles (common.bundle): SPIFFE JSON, PEM, storage record and API message round trips."""

from __future__ import annotations

import base64
import json
import time
from types import SimpleNamespace

import pytest

from spire_py.common.bundle import Bundle, BundleError
from spire_py.common.keys import generate_key, public_key_der, public_keys_equal
from spire_py.common.spiffeid import TrustDomain
from spire_py.common.x509util import create_ca_certificate, x509_ca_subject

TD = TrustDomain("example.org")


def _ca(key_type: str = "ec-p256", ttl: float = 86400, now: float | None = None):
    key = generate_key(key_type)
    return create_ca_certificate(key.public_key(), key, subject=x509_ca_subject(), ttl=ttl,
                                 now=now or time.time(), uris=[TD.id_string()])


@pytest.fixture(scope="module")
def bundle() -> Bundle:
    b = Bundle(TD, refresh_hint=300, sequence_number=7)
    b.add_x509_authority(_ca("ec-p256"))
    b.add_x509_authority(_ca("rsa-2048"))
    b.add_jwt_authority("kid-ec", generate_key("ec-p384").public_key(), 1_900_000_000)
    b.add_jwt_authority("kid-rsa", generate_key("rsa-2048").public_key(), 0)
    return b


def _same(a: Bundle, b: Bundle, expiry: bool = True) -> None:
    assert a.trust_domain == b.trust_domain
    assert a.x509_authorities == b.x509_authorities
    assert a.jwt_authorities.keys() == b.jwt_authorities.keys()
    for kid, (k, exp) in a.jwt_authorities.items():
        assert public_keys_equal(k, b.jwt_authorities[kid][0])
        if expiry:
            assert exp == b.jwt_authorities[kid][1]


def test_spiffe_json_layout(bundle):
    doc = json.loads(bundle.to_json())
    assert list(doc) == ["keys", "spiffe_sequence", "spiffe_refresh_hint"]
    assert doc["spiffe_sequence"] == 7 and doc["spiffe_refresh_hint"] == 300
    x509_ec, x509_rsa, jwt_ec, jwt_rsa = doc["keys"]
    assert list(x509_ec) == ["use", "kty", "crv", "x", "y", "x5c"] and x509_ec["use"] == "x509-svid"
    assert list(x509_rsa) == ["use", "kty", "n", "e", "x5c"]
    assert base64.b64decode(x509_ec["x5c"][0]) == bundle.to_record()["x509_authorities"][0]
    assert list(jwt_ec) == ["use", "kty", "kid", "crv", "x", "y"] and jwt_ec["use"] == "jwt-svid"
    assert jwt_ec["kid"] == "kid-ec" and jwt_ec["crv"] == "P-384"
    assert list(jwt_rsa) == ["use", "kty", "kid", "n", "e"]


def test_spiffe_json_round_trip(bundle):
    back = Bundle.from_json(TD, bundle.to_json(indent=4))
    _same(bundle, back, expiry=False)  # the SPIFFE format carries no expiry
    assert (back.refresh_hint, back.sequence_number) == (300, 7)


def test_unset_hint_and_sequence_are_omitted():
    assert json.loads(Bundle(TD).to_json()) == {"keys": []}
    assert Bundle.from_json("example.org", b'{"keys": []}').x509_authorities == []


def test_parse_follows_go_spiffe_rules(bundle):
    doc = json.loads(bundle.to_json())
    with pytest.raises(BundleError, match="no authorities found"):
        Bundle.from_json(TD, b'{"spiffe_sequence": 1}')
    two = json.loads(json.dumps(doc))
    two["keys"][0]["x5c"].append(two["keys"][1]["x5c"][0])
    with pytest.raises(BundleError, match="expected a single certificate in x509-svid entry 0; got 2"):
        Bundle.from_json(TD, json.dumps(two))
    nokid = json.loads(json.dumps(doc))
    del nokid["keys"][2]["kid"]
    with pytest.raises(BundleError, match="error adding authority 2 of JWKS: keyID cannot be empty"):
        Bundle.from_json(TD, json.dumps(nokid))
    mismatch = json.loads(json.dumps(doc))
    mismatch["keys"][0]["x"], mismatch["keys"][0]["y"] = doc["keys"][2]["x"][:43], doc["keys"][2]["y"][:43]
    with pytest.raises(BundleError):
        Bundle.from_json(TD, json.dumps(mismatch))
    other_use = {"keys": [{"use": "wit-svid", "kty": "EC", "kid": "w"}, doc["keys"][2]]}
    assert list(Bundle.from_json(TD, json.dumps(other_use)).jwt_authorities) == ["kid-ec"]
    for bad in (b"[]", b"not json", b'{"keys": {}}', b'{"keys": [], "spiffe_sequence": "1"}'):
        with pytest.raises(BundleError):
            Bundle.from_json(TD, bad)


def test_py_spiffe_reads_our_jwks_and_pem(bundle):
    from spiffe import JwtBundle, TrustDomain as PyTD, X509Bundle

    # py-spiffe's JwtBundle wants every key to carry a kid: the JWT-only JWKS of the Workload API.
    jwt_only = Bundle(TD, jwt_authorities=dict(bundle.jwt_authorities))
    jb = JwtBundle.parse(PyTD("example.org"), jwt_only.to_json())
    assert set(jb.jwt_authorities) == {"kid-ec", "kid-rsa"}
    xb = X509Bundle.parse(PyTD("example.org"), bundle.to_pem())
    assert len(xb.x509_authorities) == 2


def test_pem_round_trip(bundle):
    pem = bundle.to_pem()
    assert pem.count(b"-----BEGIN CERTIFICATE-----") == 2
    back = Bundle.from_pem(TD, pem)
    assert back.x509_authorities == bundle.x509_authorities and back.jwt_authorities == {}
    with pytest.raises(BundleError, match="no certificates"):
        Bundle.from_pem(TD, b"")


def test_record_round_trip(bundle):
    rec = bundle.to_record()
    assert rec["trust_domain_id"] == "spiffe://example.org"
    assert all(isinstance(d, bytes) for d in rec["x509_authorities"])
    kid, der, exp = rec["jwt_authorities"][0]
    assert (kid, exp) == ("kid-ec", 1_900_000_000) and der == public_key_der(bundle.jwt_authorities["kid-ec"][0])
    _same(bundle, Bundle.from_record(rec))


def test_record_from_datastore_shaped_object(bundle):
    rec = bundle.to_record()
    stored = SimpleNamespace(
        trust_domain_id=rec["trust_domain_id"], x509_authorities=rec["x509_authorities"],
        jwt_authorities=[SimpleNamespace(key_id=k, public_key=d, expires_at=e, tainted=False)
                         for k, d, e in rec["jwt_authorities"]],
        refresh_hint=300, sequence_number=7)
    back = Bundle.from_record(stored)
    _same(bundle, back)
    assert (back.refresh_hint, back.sequence_number) == (300, 7)
    with pytest.raises(BundleError, match="not a DER certificate"):
        Bundle.from_record({"trust_domain_id": "spiffe://example.org", "x509_authorities": [b"junk"]})


def test_proto_round_trip(bundle):
    pb = bundle.to_proto()
    assert pb.trust_domain == "example.org" and pb.sequence_number == 7
    _same(bundle, Bundle.from_proto(TD, pb))
    _same(bundle, Bundle.from_proto(None, pb))


def test_prune_drops_expired_authorities():
    now = time.time()
    old, fresh = _ca(ttl=60, now=now - 3600), _ca()
    b = Bundle(TD, [old, fresh], {"gone": (generate_key().public_key(), int(now) - 1),
                                  "live": (generate_key().public_key(), int(now) + 60),
                                  "forever": (generate_key().public_key(), 0)})
    assert b.prune(now)
    assert b.x509_authorities == [fresh] and set(b.jwt_authorities) == {"live", "forever"}
    assert not b.prune(now)


def test_construction_accepts_bare_keys_and_strings():
    key = generate_key().public_key()
    b = Bundle("spiffe://example.org", jwt_authorities={"k": key})  # type: ignore[arg-type,dict-item]
    assert b.trust_domain == TD and b.jwt_authorities["k"] == (key, 0)
    assert b.jwt_keys() == {"k": key}
    with pytest.raises(BundleError, match="keyID cannot be empty"):
        b.add_jwt_authority("", key)
