"""ServerCA signing with a self-signed CA: X509-SVIDs, server/agent SVIDs, downstream CAs, JWT-SVIDs."""

from __future__ import annotations

import time
from types import SimpleNamespace

import pytest
from cryptography import x509
from cryptography.x509.oid import NameOID

from spire_py.common.jwtsvid import validate_jwt_svid
from spire_py.common.keys import generate_key, key_type_of
from spire_py.common.spiffeid import SpiffeId, TrustDomain
from spire_py.common.x509util import X509SVIDError, spiffe_id_of, verify_chain, verify_x509_svid
from spire_py.server.ca.ca import ServerCA
from spire_py.server.ca.errors import CAError, CARequestError
from spire_py.server.plugins.keymanager.memory import MemoryKeyManager

TD = TrustDomain("example.org")
WID = "spiffe://example.org/workload"


class Clock:
    def __init__(self, t: float) -> None:
        self.t = t

    def __call__(self) -> float:
        return self.t


@pytest.fixture
def clock() -> Clock:
    return Clock(float(int(time.time())))


@pytest.fixture
def ca(clock) -> ServerCA:
    ca = ServerCA(TD, MemoryKeyManager(), clock=clock)
    ca.start()
    return ca


def _pub():
    return generate_key().public_key()


def test_signing_before_start_is_refused():
    ca = ServerCA(TD, MemoryKeyManager())
    with pytest.raises(CAError, match="not available"):
        ca.sign_x509_svid(_pub(), WID)
    with pytest.raises(CAError, match="not available"):
        ca.sign_jwt_svid(WID, ["a"])


def test_self_signed_root_is_the_bundle(ca, clock):
    root = ca.x509_ca
    assert ca.bundle().x509_authorities == [root]
    assert ca.x509_ca_chain == [root]
    assert spiffe_id_of(root) == SpiffeId(TD)
    assert root.issuer == root.subject
    assert [a.oid for a in root.subject] == [NameOID.COUNTRY_NAME, NameOID.ORGANIZATION_NAME,
                                            NameOID.SERIAL_NUMBER]
    assert root.subject.get_attributes_for_oid(NameOID.ORGANIZATION_NAME)[0].value == "SPIFFE"
    assert root.not_valid_after_utc.timestamp() == clock.t + 86400
    assert ca.manager.key_manager.get_key("x509-CA-A") is not None
    assert key_type_of(ca.manager.key_manager.get_key("JWT-Signer-A")) == "ec-p256"


def test_ca_subject_and_key_types_from_config(clock):
    subject = SimpleNamespace(country=["DE"], organization=["ACME"], common_name="acme ca")
    ca = ServerCA(TD, MemoryKeyManager(), ca_key_type="rsa-2048", jwt_key_type="ec-p384", ca_subject=subject,
                  clock=clock)
    ca.start()
    assert ca.x509_ca.subject.rfc4514_string().startswith("2.5.4.5=")
    assert "CN=acme ca,O=ACME,C=DE" in ca.x509_ca.subject.rfc4514_string()
    assert key_type_of(ca.x509_ca.public_key()) == "rsa-2048"  # type: ignore[arg-type]
    token = ca.sign_jwt_svid(WID, ["a"])
    assert token.startswith("eyJhbGciOiJFUzM4NCIs")  # {"alg":"ES384",...


def test_unknown_key_type_is_refused():
    with pytest.raises(CARequestError, match="ca_key_type"):
        ServerCA(TD, MemoryKeyManager(), ca_key_type="ed25519")


def test_x509_svid_is_leaf_only_and_chains_to_bundle(ca):
    chain = ca.sign_x509_svid(_pub(), WID)
    assert len(chain) == 1
    sid, path = verify_x509_svid(chain, ca.bundle().x509_authorities)
    assert str(sid) == WID and path[-1] == ca.x509_ca


def test_x509_svid_ttl_default_requested_and_capped(clock):
    ca = ServerCA(TD, MemoryKeyManager(), ca_ttl=7200, x509_svid_ttl=600, clock=clock)
    ca.start()
    leaf = ca.sign_x509_svid(_pub(), WID)[0]
    assert leaf.not_valid_after_utc.timestamp() == clock.t + 600
    assert leaf.not_valid_before_utc.timestamp() == clock.t - 10
    leaf = ca.sign_x509_svid(_pub(), WID, ttl=60)[0]
    assert leaf.not_valid_after_utc.timestamp() == clock.t + 60
    leaf = ca.sign_x509_svid(_pub(), WID, ttl=99999)[0]
    assert leaf.not_valid_after_utc == ca.x509_ca.not_valid_after_utc


def test_dns_names_and_subject(ca):
    leaf = ca.sign_x509_svid(_pub(), WID, dns_names=["a.example.org", "b.example.org"])[0]
    assert leaf.subject.rfc4514_string() == "CN=a.example.org,O=SPIRE,C=US"
    san = leaf.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    assert san.get_values_for_type(x509.DNSName) == ["a.example.org", "b.example.org"]
    custom = x509.Name([x509.NameAttribute(NameOID.ORGANIZATION_NAME, "Team")])
    assert ca.sign_x509_svid(_pub(), WID, subject=custom)[0].subject == custom


@pytest.mark.parametrize("bad,why", [
    ("spiffe://other.org/w", "not a member of trust domain"),
    ("spiffe://example.org", "path is empty"),
    ("http://example.org/w", "invalid X509-SVID ID"),
])
def test_ids_outside_the_trust_domain_are_refused(ca, bad, why):
    with pytest.raises(CARequestError, match=why):
        ca.sign_x509_svid(_pub(), bad)


def test_public_key_type_is_checked(ca):
    with pytest.raises(CARequestError, match="unsupported public key"):
        ca.sign_x509_svid(generate_key(), WID)  # a private key by mistake


def test_server_svid_has_server_id_and_no_dns(ca):
    leaf = ca.sign_server_svid(_pub())[0]
    assert str(spiffe_id_of(leaf)) == "spiffe://example.org/spire/server"
    san = leaf.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    assert san.get_values_for_type(x509.DNSName) == []
    verify_x509_svid([leaf], ca.bundle().x509_authorities, trust_domain=TD)


def test_agent_svid_uses_agent_ttl(clock):
    ca = ServerCA(TD, MemoryKeyManager(), x509_svid_ttl=600, agent_svid_ttl=1200, clock=clock)
    ca.start()
    leaf = ca.sign_agent_svid(_pub(), "spiffe://example.org/spire/agent/join_token/abc")[0]
    assert leaf.not_valid_after_utc.timestamp() == clock.t + 1200


def test_downstream_ca(ca, clock):
    dkey = generate_key()
    chain = ca.sign_downstream_x509_ca(dkey.public_key(), ttl=3600)
    assert len(chain) == 1
    down = chain[0]
    assert down.extensions.get_extension_for_class(x509.BasicConstraints).value.ca
    assert spiffe_id_of(down) == SpiffeId(TD)
    assert down.subject.get_attributes_for_oid(NameOID.ORGANIZATIONAL_UNIT_NAME)[0].value == "DOWNSTREAM-1"
    assert down.not_valid_after_utc.timestamp() == clock.t + 3600
    # A downstream server's SVIDs chain to our bundle through its CA.
    from spire_py.common.x509util import create_x509_svid

    leaf = create_x509_svid(_pub(), SpiffeId.parse(WID), issuer=down, signer=dkey, ttl=60, now=clock.t)
    sid, path = verify_x509_svid([leaf, down], ca.bundle().x509_authorities, at_time=clock.t)
    assert path == [leaf, down, ca.x509_ca]


def test_jwt_svid_round_trip(ca, clock):
    token = ca.sign_jwt_svid(WID, ["svc", ""])
    keys = {TD: ca.bundle().jwt_keys()}
    sid, claims = validate_jwt_svid(token, "svc", keys, now=clock.t)
    assert str(sid) == WID and claims["aud"] == ["svc"] and claims["exp"] == clock.t + 300
    assert list(keys[TD]) == [ca.jwt_key_id] and len(ca.jwt_key_id) == 32
    assert "iss" not in claims


def test_jwt_svid_issuer_and_cap(clock):
    ca = ServerCA(TD, MemoryKeyManager(), ca_ttl=600, jwt_issuer="https://oidc.example.org", clock=clock)
    ca.start()
    claims = validate_jwt_svid(ca.sign_jwt_svid(WID, "svc", ttl=3600), "svc", {TD: ca.bundle().jwt_keys()},
                               now=clock.t)[1]
    assert claims["iss"] == "https://oidc.example.org"
    assert claims["exp"] == clock.t + 600  # capped at the JWT key's expiry


def test_jwt_svid_refusals(ca):
    with pytest.raises(CARequestError, match="audience"):
        ca.sign_jwt_svid(WID, [""])
    with pytest.raises(CARequestError, match="not a member"):
        ca.sign_jwt_svid("spiffe://other.org/w", ["a"])


def test_bundle_record_matches_datastore_shape(ca):
    rec = ca.bundle().to_record()
    assert rec["trust_domain_id"] == "spiffe://example.org"
    assert len(rec["x509_authorities"]) == 1 and isinstance(rec["x509_authorities"][0], bytes)
    (kid, der, exp), = rec["jwt_authorities"]
    assert kid == ca.jwt_key_id and isinstance(der, bytes) and exp > time.time()


def test_on_bundle_change_gets_the_first_bundle(clock):
    seen = []
    ca = ServerCA(TD, MemoryKeyManager(), clock=clock, on_bundle_change=seen.append)
    ca.start()
    assert len(seen) == 1 and seen[0].x509_authorities == [ca.x509_ca]
    assert not ca.rotate_if_needed()
    assert len(seen) == 1


def test_svids_from_another_ca_are_refused(ca):
    other = ServerCA(TD, MemoryKeyManager())
    other.start()
    chain = other.sign_x509_svid(_pub(), WID)
    with pytest.raises(X509SVIDError):
        verify_x509_svid(chain, ca.bundle().x509_authorities)
    with pytest.raises(X509SVIDError):
        verify_chain(chain[0], [], ca.bundle().x509_authorities)
