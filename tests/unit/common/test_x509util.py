"""X.509 building and strict verification (common.x509util) against the X509-SVID spec."""

from __future__ import annotations

import datetime as dt
import time

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from spire_py.common.keys import generate_key
from spire_py.common.spiffeid import SpiffeId, TrustDomain
from spire_py.common.x509util import (
    X509SVIDError, authority_id, create_ca_certificate, create_x509_svid, is_self_signed, spiffe_id_of,
    verify_chain, verify_x509_svid, x509_ca_subject,
)

TD = TrustDomain("example.org")
WID = SpiffeId.parse("spiffe://example.org/workload")
NOW = time.time()


def _root(key_type: str = "ec-p256", ttl: float = 86400, now: float = NOW):
    key = generate_key(key_type)
    cert = create_ca_certificate(key.public_key(), key, subject=x509_ca_subject(serial_number="1"), ttl=ttl,
                                 now=now, uris=[TD.id_string()])
    return key, cert


def _intermediate(root_key, root, ttl: float = 3600, now: float = NOW):
    key = generate_key("ec-p256")
    cert = create_ca_certificate(key.public_key(), root_key, subject=x509_ca_subject(common_name="inter"),
                                 ttl=ttl, now=now, issuer=root, uris=[TD.id_string()])
    return key, cert


def _svid(issuer_key, issuer, sid=WID, ttl: float = 600, **kw):
    key = generate_key("ec-p256")
    return key, create_x509_svid(key.public_key(), sid, issuer=issuer, signer=issuer_key, ttl=ttl,
                                 now=kw.pop("now", NOW), **kw)


def _raw_leaf(issuer_key, issuer, sans, ca=False, ku=None):
    key = generate_key("ec-p256")
    now = dt.datetime.now(dt.timezone.utc)
    b = (x509.CertificateBuilder().subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "x")]))
         .issuer_name(issuer.subject).public_key(key.public_key()).serial_number(x509.random_serial_number())
         .not_valid_before(now - dt.timedelta(minutes=1)).not_valid_after(now + dt.timedelta(hours=1))
         .add_extension(x509.BasicConstraints(ca=ca, path_length=None), critical=True))
    if sans:
        b = b.add_extension(x509.SubjectAlternativeName(sans), critical=False)
    if ku is not None:
        b = b.add_extension(ku, critical=True)
    return b.sign(issuer_key, hashes.SHA256())


def _ku(**on: bool) -> x509.KeyUsage:
    names = ["digital_signature", "content_commitment", "key_encipherment", "data_encipherment", "key_agreement",
             "key_cert_sign", "crl_sign", "encipher_only", "decipher_only"]
    return x509.KeyUsage(**{n: on.get(n, False) for n in names})


# --- issuing ---------------------------------------------------------------------------------
@pytest.mark.parametrize("key_type", ["ec-p256", "ec-p384", "rsa-2048"])
def test_self_signed_ca_has_spiffe_properties(key_type):
    key, ca = _root(key_type)
    bc = ca.extensions.get_extension_for_class(x509.BasicConstraints)
    assert bc.critical and bc.value.ca
    ku = ca.extensions.get_extension_for_class(x509.KeyUsage)
    assert ku.critical and ku.value.key_cert_sign and ku.value.crl_sign and not ku.value.digital_signature
    assert spiffe_id_of(ca) == SpiffeId(TD)  # the CA carries spiffe://<td>
    assert is_self_signed(ca)
    assert authority_id(ca) == x509.SubjectKeyIdentifier.from_public_key(key.public_key()).digest.hex()
    with pytest.raises(x509.ExtensionNotFound):
        ca.extensions.get_extension_for_class(x509.AuthorityKeyIdentifier)
    assert ca.subject.get_attributes_for_oid(NameOID.SERIAL_NUMBER)[0].value == "1"
    assert ca.signature_hash_algorithm.name == ("sha384" if key_type == "ec-p384" else "sha256")


def test_serials_are_random_128_bit_and_positive():
    rk, root = _root()
    serials = {_svid(rk, root)[1].serial_number for _ in range(20)}
    assert len(serials) == 20
    assert all(0 < s < 1 << 128 for s in serials)


def test_svid_leaf_properties_match_spire_templates():
    rk, root = _root()
    key, leaf = _svid(rk, root, dns_names=["web.example.org", "alt.example.org"])
    ext = leaf.extensions
    assert ext.get_extension_for_class(x509.BasicConstraints).critical
    assert ext.get_extension_for_class(x509.BasicConstraints).value.ca is False
    ku = ext.get_extension_for_class(x509.KeyUsage)
    assert ku.critical and ku.value.digital_signature and ku.value.key_encipherment and ku.value.key_agreement
    assert not ku.value.key_cert_sign and not ku.value.crl_sign
    eku = ext.get_extension_for_class(x509.ExtendedKeyUsage).value
    assert list(eku) == [ExtendedKeyUsageOID.SERVER_AUTH, ExtendedKeyUsageOID.CLIENT_AUTH]
    san = ext.get_extension_for_class(x509.SubjectAlternativeName).value
    assert san.get_values_for_type(x509.UniformResourceIdentifier) == [str(WID)]
    assert san.get_values_for_type(x509.DNSName) == ["web.example.org", "alt.example.org"]
    assert ext.get_extension_for_class(x509.AuthorityKeyIdentifier).value.key_identifier == bytes.fromhex(
        authority_id(root))
    assert ext.get_extension_for_class(x509.SubjectKeyIdentifier).value.digest == (
        x509.SubjectKeyIdentifier.from_public_key(key.public_key()).digest)
    # SPIRE's default subject, with the first DNS name as CN.
    assert leaf.subject.rfc4514_string() == "CN=web.example.org,O=SPIRE,C=US"


def test_svid_without_dns_names_has_default_subject():
    rk, root = _root()
    _, leaf = _svid(rk, root)
    assert leaf.subject.rfc4514_string() == "O=SPIRE,C=US"


def test_not_before_is_backdated_and_ttl_applies():
    rk, root = _root()
    _, leaf = _svid(rk, root, ttl=600)
    assert leaf.not_valid_before_utc.timestamp() == pytest.approx(NOW - 10, abs=1)
    assert leaf.not_valid_after_utc.timestamp() == pytest.approx(NOW + 600, abs=1)


def test_not_after_is_capped_at_issuer():
    rk, root = _root(ttl=1000)
    _, leaf = _svid(rk, root, ttl=5000)
    assert leaf.not_valid_after_utc == root.not_valid_after_utc
    ik, inter = _intermediate(rk, root, ttl=99999)
    assert inter.not_valid_after_utc == root.not_valid_after_utc


def test_signer_must_match_issuer():
    rk, root = _root()
    with pytest.raises(X509SVIDError, match="does not match"):
        _svid(generate_key("ec-p256"), root)


# --- SPIFFE ID extraction ------------------------------------------------------------------------
def test_spiffe_id_of_requires_exactly_one_uri_san():
    rk, root = _root()
    two = _raw_leaf(rk, root, [x509.UniformResourceIdentifier("spiffe://example.org/a"),
                               x509.UniformResourceIdentifier("spiffe://example.org/b")])
    with pytest.raises(X509SVIDError, match="more than one URI SAN"):
        spiffe_id_of(two)
    none = _raw_leaf(rk, root, [x509.DNSName("a.example")])
    with pytest.raises(X509SVIDError, match="no URI SAN"):
        spiffe_id_of(none)
    bad = _raw_leaf(rk, root, [x509.UniformResourceIdentifier("https://example.org/a")])
    with pytest.raises(X509SVIDError, match="not a valid SPIFFE ID"):
        spiffe_id_of(bad)


# --- verification --------------------------------------------------------------------------------
def test_svid_chains_to_root_directly_and_through_intermediate():
    rk, root = _root()
    _, leaf = _svid(rk, root)
    sid, path = verify_x509_svid([leaf], [root])
    assert sid == WID and path == [leaf, root]
    ik, inter = _intermediate(rk, root)
    _, leaf2 = _svid(ik, inter)
    sid, path = verify_x509_svid([leaf2, inter], [root])
    assert path == [leaf2, inter, root]


def test_rsa_chain_verifies():
    rk, root = _root("rsa-2048")
    ik, inter = _intermediate(rk, root)
    _, leaf = _svid(ik, inter)
    assert verify_chain(leaf, [inter], [root])[-1] == root


def test_wrong_ca_is_refused():
    rk, root = _root()
    _, leaf = _svid(rk, root)
    _, other = _root()
    with pytest.raises(X509SVIDError, match="could not verify"):
        verify_x509_svid([leaf], [other])


def test_same_subject_different_key_is_refused():
    # An impostor CA with an identical subject must not verify the real CA's leaves.
    rk, root = _root()
    _, leaf = _svid(rk, root)
    ik = generate_key("ec-p256")
    impostor = create_ca_certificate(ik.public_key(), ik, subject=root.subject, ttl=3600, now=NOW,
                                     uris=[TD.id_string()])
    with pytest.raises(X509SVIDError):
        verify_chain(leaf, [], [impostor])


def test_expired_leaf_and_not_yet_valid_are_refused():
    rk, root = _root()
    _, leaf = _svid(rk, root, ttl=60)
    verify_x509_svid([leaf], [root], at_time=NOW + 30)
    with pytest.raises(X509SVIDError, match="not valid at validation time"):
        verify_x509_svid([leaf], [root], at_time=NOW + 120)
    with pytest.raises(X509SVIDError):
        verify_x509_svid([leaf], [root], at_time=NOW - 3600)


def test_expired_root_is_refused():
    rk, root = _root(ttl=100)
    _, leaf = _svid(rk, root, ttl=50)
    with pytest.raises(X509SVIDError):
        verify_chain(leaf, [], [root], at_time=NOW + 200)


def test_non_ca_in_the_middle_is_refused():
    rk, root = _root()
    # An SVID (CA:false) used as an issuer.
    mk, middle = _svid(rk, root)
    _, leaf = _svid(mk, middle)
    with pytest.raises(X509SVIDError, match="could not verify"):
        verify_x509_svid([leaf, middle], [root])


def test_ca_without_cert_sign_key_usage_in_the_middle_is_refused():
    rk, root = _root()
    mk = generate_key("ec-p256")
    now = dt.datetime.now(dt.timezone.utc)
    middle = (x509.CertificateBuilder().subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "m")]))
              .issuer_name(root.subject).public_key(mk.public_key()).serial_number(7)
              .not_valid_before(now - dt.timedelta(minutes=1)).not_valid_after(now + dt.timedelta(hours=1))
              .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
              .add_extension(_ku(digital_signature=True), critical=True)
              .sign(rk, hashes.SHA256()))
    _, leaf = _svid(mk, middle)
    with pytest.raises(X509SVIDError, match="keyCertSign"):
        verify_x509_svid([leaf, middle], [root])


def test_leaf_rules_of_x509_svid_spec():
    rk, root = _root()
    ca_leaf = _raw_leaf(rk, root, [x509.UniformResourceIdentifier(str(WID))], ca=True)
    with pytest.raises(X509SVIDError, match="CA flag"):
        verify_x509_svid([ca_leaf], [root])
    signing = _raw_leaf(rk, root, [x509.UniformResourceIdentifier(str(WID))],
                        ku=_ku(digital_signature=True, key_cert_sign=True))
    with pytest.raises(X509SVIDError, match="KeyCertSign"):
        verify_x509_svid([signing], [root])
    crl = _raw_leaf(rk, root, [x509.UniformResourceIdentifier(str(WID))], ku=_ku(digital_signature=True, crl_sign=True))
    with pytest.raises(X509SVIDError, match="KeyCrlSign"):
        verify_x509_svid([crl], [root])
    two = _raw_leaf(rk, root, [x509.UniformResourceIdentifier(str(WID)),
                               x509.UniformResourceIdentifier("spiffe://example.org/other")])
    with pytest.raises(X509SVIDError, match="more than one URI SAN"):
        verify_x509_svid([two], [root])


def test_trust_domain_must_match_when_given():
    rk, root = _root()
    _, leaf = _svid(rk, root, sid=SpiffeId.parse("spiffe://other.org/w"))
    with pytest.raises(X509SVIDError, match="not a member"):
        verify_x509_svid([leaf], [root], trust_domain=TD)


def test_empty_inputs_are_refused():
    rk, root = _root()
    _, leaf = _svid(rk, root)
    with pytest.raises(X509SVIDError, match="empty"):
        verify_x509_svid([], [root])
    with pytest.raises(X509SVIDError, match="no trusted roots"):
        verify_chain(leaf, [], [])


def test_svid_parses_with_py_spiffe():
    from spiffe import X509Svid

    rk, root = _root()
    ik, inter = _intermediate(rk, root)
    key, leaf = _svid(ik, inter)
    der = b"".join(c.public_bytes(serialization.Encoding.DER) for c in (leaf, inter))
    svid = X509Svid.parse_raw(der, key.private_bytes(serialization.Encoding.DER, serialization.PrivateFormat.PKCS8,
                                                      serialization.NoEncryption()))
    assert str(svid.spiffe_id) == str(WID)
