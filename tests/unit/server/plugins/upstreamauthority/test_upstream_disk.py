"""UpstreamAuthority "disk": CAs made with the openssl CLI (as SPIRE's docs show) and with cryptography."""

from __future__ import annotations

import datetime as dt
import subprocess
import time
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.x509.oid import NameOID

from spire_py.common.keys import generate_key, private_key_to_pem, public_keys_equal
from spire_py.common.plugin import PluginConfigError, PluginContext, lookup
from spire_py.common.spiffeid import SpiffeId, TrustDomain
from spire_py.common.x509util import (
    create_ca_certificate, spiffe_id_of, verify_chain, verify_x509_svid, x509_ca_subject,
)
from spire_py.server.ca.ca import ServerCA
from spire_py.server.plugins.keymanager.memory import MemoryKeyManager
from spire_py.server.plugins.upstreamauthority.disk import DiskUpstreamAuthority, UpstreamAuthorityError

TD = TrustDomain("example.org")
CTX = PluginContext(trust_domain="example.org", side="server")
PEM = serialization.Encoding.PEM


def openssl_root(d: Path, newkey: list[str], name: str = "root") -> tuple[Path, Path]:
    """``openssl req -x509 -newkey ... -keyout root.key -out root.crt -days 365 -nodes -subj /CN=...``"""
    key, crt = d / f"{name}.key", d / f"{name}.crt"
    subprocess.run(["openssl", "req", "-x509", *newkey, "-keyout", str(key), "-out", str(crt), "-days", "365",
                    "-nodes", "-subj", f"/C=US/O=Upstream/CN={name}"], check=True, capture_output=True)
    return crt, key


def ca_pair(d: Path, name: str, issuer=None, ttl: float = 86400, key_type: str = "ec-p256", ca: bool = True,
            now: float | None = None):
    """A CA (or not) made with cryptography; ``issuer`` is (key, cert) or None for self-signed."""
    key = generate_key(key_type)
    subject = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, name)])
    if ca:
        cert = create_ca_certificate(key.public_key(), issuer[0] if issuer else key, subject=subject, ttl=ttl,
                                     now=now or time.time(), issuer=issuer[1] if issuer else None)
    else:
        now = dt.datetime.now(dt.timezone.utc)
        cert = (x509.CertificateBuilder().subject_name(subject).issuer_name(subject).public_key(key.public_key())
                .serial_number(3).not_valid_before(now - dt.timedelta(minutes=1))
                .not_valid_after(now + dt.timedelta(days=1))
                .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
                .sign(key, hashes.SHA256()))
    (d / f"{name}.crt").write_bytes(cert.public_bytes(PEM))
    (d / f"{name}.key").write_bytes(private_key_to_pem(key))
    return key, cert


def configure(**paths: Path) -> DiskUpstreamAuthority:
    return DiskUpstreamAuthority.configure({k: str(v) for k, v in paths.items()}, CTX)


def csr_for(key, uri: str = "spiffe://example.org") -> bytes:
    csr = (x509.CertificateSigningRequestBuilder()
           .subject_name(x509_ca_subject(serial_number="42"))
           .add_extension(x509.SubjectAlternativeName([x509.UniformResourceIdentifier(uri)]), critical=False)
           .sign(key, hashes.SHA256()))
    return csr.public_bytes(serialization.Encoding.DER)


# --- openssl-made roots -----------------------------------------------------------------------
@pytest.mark.parametrize("newkey", [
    ["-newkey", "rsa:2048"],
    ["-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1"],
    ["-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:secp384r1"],
], ids=["rsa-2048", "ec-p256", "ec-p384"])
def test_openssl_self_signed_root_mints_intermediate(tmp_path, newkey):
    crt, key = openssl_root(tmp_path, newkey)
    ua = configure(cert_file_path=crt, key_file_path=key)
    root = x509.load_pem_x509_certificate(crt.read_bytes())
    ca_key = generate_key("ec-p256")
    chain, roots = ua.mint_x509_ca(csr_for(ca_key), TD, 3600)
    assert roots == [root]
    assert len(chain) == 1  # self-signed upstream: just the new intermediate
    inter = chain[0]
    assert public_keys_equal(inter.public_key(), ca_key)  # type: ignore[arg-type]
    assert inter.extensions.get_extension_for_class(x509.BasicConstraints).value.ca
    assert inter.extensions.get_extension_for_class(x509.KeyUsage).value.key_cert_sign
    assert spiffe_id_of(inter) == SpiffeId(TD)
    assert inter.subject == x509_ca_subject(serial_number="42")  # the CSR's subject
    assert inter.issuer == root.subject
    assert inter.not_valid_after_utc.timestamp() == pytest.approx(time.time() + 3600, abs=5)
    assert verify_chain(inter, [], roots) == [inter, root]


def test_openssl_sec1_and_pkcs1_key_files_load(tmp_path):
    # openssl ecparam writes "EC PARAMETERS" + SEC1; genrsa -traditional writes PKCS#1.
    for gen in (["ecparam", "-name", "prime256v1", "-genkey"], ["genrsa", "-traditional", "2048"]):
        key = tmp_path / "k.pem"
        key.write_bytes(subprocess.run(["openssl", *gen], check=True, capture_output=True).stdout)
        crt = tmp_path / "c.pem"
        subprocess.run(["openssl", "req", "-x509", "-key", str(key), "-out", str(crt), "-days", "30",
                        "-subj", "/CN=legacy"], check=True, capture_output=True)
        chain, roots = configure(cert_file_path=crt, key_file_path=key).mint_x509_ca(csr_for(generate_key()))
        verify_chain(chain[0], chain[1:], roots)


# --- cryptography-made PKI --------------------------------------------------------------------------
def test_intermediate_ttl_is_capped_at_upstream_not_after(tmp_path):
    ca_pair(tmp_path, "root", ttl=600)
    ua = configure(cert_file_path=tmp_path / "root.crt", key_file_path=tmp_path / "root.key")
    chain, roots = ua.mint_x509_ca(csr_for(generate_key()), TD, 86400)
    assert chain[0].not_valid_after_utc == roots[0].not_valid_after_utc
    # No TTL asked: SPIRE's default upstream CA TTL of one hour (here capped too).
    chain, _ = ua.mint_x509_ca(generate_key().public_key(), TD, 0)
    assert chain[0].not_valid_after_utc == roots[0].not_valid_after_utc


def test_joining_a_pki_with_bundle_and_intermediates(tmp_path):
    root = ca_pair(tmp_path, "root", key_type="rsa-2048")
    mid = ca_pair(tmp_path, "mid", issuer=root)
    up = ca_pair(tmp_path, "up", issuer=mid)
    (tmp_path / "chain.crt").write_bytes(up[1].public_bytes(PEM) + mid[1].public_bytes(PEM))
    ua = configure(cert_file_path=tmp_path / "chain.crt", key_file_path=tmp_path / "up.key",
                   bundle_file_path=tmp_path / "root.crt")
    chain, roots = ua.mint_x509_ca(csr_for(generate_key()))
    assert chain[1:] == [up[1], mid[1]] and roots == [root[1]]
    assert verify_chain(chain[0], chain[1:], roots) == [chain[0], up[1], mid[1], root[1]]


def test_server_ca_with_upstream_issues_chained_svids(tmp_path):
    crt, key = openssl_root(tmp_path, ["-newkey", "rsa:2048"])
    ua = configure(cert_file_path=crt, key_file_path=key)
    ca = ServerCA(TD, MemoryKeyManager(), upstream=ua, ca_ttl=7200)
    ca.start()
    inter = ca.x509_ca
    assert ca.x509_ca_chain == [inter]
    svid_key = generate_key()
    chain = ca.sign_x509_svid(svid_key.public_key(), "spiffe://example.org/w")
    assert chain[1:] == [inter]
    bundle = ca.bundle()
    assert bundle.x509_authorities == [x509.load_pem_x509_certificate(crt.read_bytes())]
    assert inter not in bundle.x509_authorities  # the intermediate never becomes a root
    sid, path = verify_x509_svid(chain, bundle.x509_authorities)
    assert str(sid) == "spiffe://example.org/w" and len(path) == 3


def test_server_ca_with_pki_intermediates_sends_them_in_svid_chain(tmp_path):
    root = ca_pair(tmp_path, "root")
    up = ca_pair(tmp_path, "up", issuer=root)
    ua = configure(cert_file_path=tmp_path / "up.crt", key_file_path=tmp_path / "up.key",
                   bundle_file_path=tmp_path / "root.crt")
    ca = ServerCA(TD, MemoryKeyManager(), upstream=ua)
    ca.start()
    chain = ca.sign_x509_svid(generate_key().public_key(), "spiffe://example.org/w")
    assert chain[1:] == [ca.x509_ca, up[1]]
    verify_x509_svid(chain, ca.bundle().x509_authorities)
    downstream = ca.sign_downstream_x509_ca(generate_key().public_key())
    assert downstream[1:] == [ca.x509_ca, up[1]]
    verify_chain(downstream[0], downstream[1:], [root[1]])


# --- refusals ----------------------------------------------------------------------------------------
def test_registered_and_config_keys_checked(tmp_path):
    assert lookup("server", "UpstreamAuthority", "disk") is DiskUpstreamAuthority
    with pytest.raises(PluginConfigError, match="must be set") as err:
        DiskUpstreamAuthority.configure({"cert_file_path": "x"}, CTX)
    assert err.value.key == "key_file_path"
    with pytest.raises(PluginConfigError) as err:
        DiskUpstreamAuthority.configure({"cert_file_path": "a", "key_file_path": "b", "ttl": "1h"}, CTX)
    assert err.value.key == "ttl"
    DiskUpstreamAuthority.check_config({"cert_file_path": "/nope", "key_file_path": "/nope"}, CTX)
    with pytest.raises(PluginConfigError, match="unable to load upstream CA key") as err:
        DiskUpstreamAuthority.configure({"cert_file_path": "/nope", "key_file_path": "/nope"}, CTX)
    assert err.value.key == "key_file_path"


def test_key_must_match_cert(tmp_path):
    ca_pair(tmp_path, "a")
    ca_pair(tmp_path, "b")
    with pytest.raises(PluginConfigError, match="do not match") as err:
        configure(cert_file_path=tmp_path / "a.crt", key_file_path=tmp_path / "b.key")
    assert err.value.key == "key_file_path"


def test_without_bundle_cert_must_be_single_self_signed(tmp_path):
    root = ca_pair(tmp_path, "root")
    ca_pair(tmp_path, "up", issuer=root)
    with pytest.raises(PluginConfigError, match="not self-signed"):
        configure(cert_file_path=tmp_path / "up.crt", key_file_path=tmp_path / "up.key")
    (tmp_path / "two.crt").write_bytes((tmp_path / "up.crt").read_bytes() + (tmp_path / "root.crt").read_bytes())
    with pytest.raises(PluginConfigError, match="only self-signed CAs are supported"):
        configure(cert_file_path=tmp_path / "two.crt", key_file_path=tmp_path / "up.key")


def test_chain_must_reach_bundle(tmp_path):
    root = ca_pair(tmp_path, "root")
    ca_pair(tmp_path, "up", issuer=root)
    ca_pair(tmp_path, "other")
    with pytest.raises(PluginConfigError, match="cannot be validated with the provided bundle") as err:
        configure(cert_file_path=tmp_path / "up.crt", key_file_path=tmp_path / "up.key",
                  bundle_file_path=tmp_path / "other.crt")
    assert err.value.key == "cert_file_path"


def test_cert_must_be_a_ca(tmp_path):
    ca_pair(tmp_path, "leaf", ca=False)
    with pytest.raises(PluginConfigError, match="not a CA"):
        configure(cert_file_path=tmp_path / "leaf.crt", key_file_path=tmp_path / "leaf.key")


def test_expired_upstream_is_refused(tmp_path):
    ca_pair(tmp_path, "old", ttl=3600, now=time.time() - 7200)
    with pytest.raises(PluginConfigError, match="cannot be validated"):
        configure(cert_file_path=tmp_path / "old.crt", key_file_path=tmp_path / "old.key")


def test_csr_must_name_the_trust_domain(tmp_path):
    ca_pair(tmp_path, "root")
    ua = configure(cert_file_path=tmp_path / "root.crt", key_file_path=tmp_path / "root.key")
    with pytest.raises(UpstreamAuthorityError, match="must use the trust domain ID"):
        ua.mint_x509_ca(csr_for(generate_key(), "spiffe://other.org"))
    with pytest.raises(UpstreamAuthorityError, match="must use the trust domain ID"):
        ua.mint_x509_ca(csr_for(generate_key(), "spiffe://example.org/workload"))
    with pytest.raises(UpstreamAuthorityError, match="unable to parse CSR"):
        ua.mint_x509_ca(b"garbage")


def test_reload_picks_up_new_files_and_falls_back_when_broken(tmp_path):
    first = ca_pair(tmp_path, "root")
    ua = configure(cert_file_path=tmp_path / "root.crt", key_file_path=tmp_path / "root.key")
    second = ca_pair(tmp_path, "root")  # rotated on disk
    _, roots = ua.mint_x509_ca(csr_for(generate_key()))
    assert roots == [second[1]] and roots != [first[1]]
    (tmp_path / "root.key").write_text("broken")
    chain, roots = ua.mint_x509_ca(csr_for(generate_key()))
    assert roots == [second[1]]
    verify_chain(chain[0], [], roots)
