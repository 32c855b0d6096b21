"""x509pop_cert: a provisioning CA created when absent and one node certificate per host."""

import datetime
import os
import stat

import pytest

pytest.importorskip("cryptography")

from ansible_collections.spire_py.spire.plugins.module_utils import ca_pair, pki, x509pop  # noqa: E402


def ca_req(tmp_path, **kw):
    args = dict(key_path=str(tmp_path / "ca.key"), cert_path=str(tmp_path / "ca.crt"),
                subject={"common_name": "provisioning"}, validity=100 * 86400, renew_before=86400)
    args.update(kw)
    return ca_pair.CAPairRequest(**args)


def node_req(tmp_path, host="node1", **kw):
    args = dict(key_path=str(tmp_path / (host + ".key")), cert_path=str(tmp_path / (host + ".crt")),
                common_name=host, validity=10 * 86400, renew_before=86400)
    args.update(kw)
    return x509pop.NodeCertRequest(**args)


def test_creates_the_ca_and_a_node_certificate_that_chains_to_it(tmp_path):
    result = x509pop.ensure(ca_req(tmp_path), node_req(tmp_path, dns_names=["node1.example.org"]))
    assert result["changed"] and result["ca"]["changed"] and result["node"]["changed"]
    ca = pki.load_certificate((tmp_path / "ca.crt").read_bytes())
    node = pki.load_certificate((tmp_path / "node1.crt").read_bytes())
    assert pki.signed_by(node, ca) and not pki.is_ca(node)
    assert pki.dns_names(node) == ["node1.example.org"]
    assert stat.S_IMODE(os.stat(tmp_path / "node1.key").st_mode) == 0o600
    eku = node.extensions.get_extension_for_class(pki.x509.ExtendedKeyUsage).value
    assert pki.ExtendedKeyUsageOID.CLIENT_AUTH in list(eku)


def test_is_idempotent_per_host_and_issues_for_each_host(tmp_path):
    x509pop.ensure(ca_req(tmp_path), node_req(tmp_path, "node1"))
    again = x509pop.ensure(ca_req(tmp_path), node_req(tmp_path, "node1"))
    assert not again["changed"]
    other = x509pop.ensure(ca_req(tmp_path), node_req(tmp_path, "node2"))
    assert other["changed"] and not other["ca"]["changed"]
    assert not x509pop.ensure(ca_req(tmp_path), node_req(tmp_path, "node1"))["changed"]


def test_reissues_when_the_ca_was_replaced(tmp_path):
    x509pop.ensure(ca_req(tmp_path), node_req(tmp_path))
    result = x509pop.ensure(ca_req(tmp_path, force=True), node_req(tmp_path))
    assert result["node"]["changed"]
    assert "not issued by the current provisioning CA" in " ".join(result["node"]["reasons"])


def test_reissues_on_common_name_or_dns_change_and_keeps_a_good_key(tmp_path):
    x509pop.ensure(ca_req(tmp_path), node_req(tmp_path))
    key_before = (tmp_path / "node1.key").read_bytes()
    result = x509pop.ensure(ca_req(tmp_path), node_req(tmp_path, dns_names=["a.example"]))
    assert result["changed"] and "DNS names differ" in result["node"]["reasons"]
    assert (tmp_path / "node1.key").read_bytes() == key_before


def test_reissues_under_the_renewal_threshold(tmp_path):
    x509pop.ensure(ca_req(tmp_path), node_req(tmp_path))
    later = pki.utcnow() + datetime.timedelta(days=9, hours=12)
    result = x509pop.ensure(ca_req(tmp_path), node_req(tmp_path), now=later)
    assert result["node"]["changed"] and not result["ca"]["changed"]


def test_ca_only_when_no_node_is_requested(tmp_path):
    result = x509pop.ensure(ca_req(tmp_path), None)
    assert result["changed"] and result["node"] is None
    assert sorted(os.listdir(tmp_path)) == ["ca.crt", "ca.key"]


def test_module_check_mode_diff_idempotence(tmp_path, module_runner):
    from ansible_collections.spire_py.spire.plugins.modules import x509pop_cert

    args = dict(ca_key_path=str(tmp_path / "ca.key"), ca_cert_path=str(tmp_path / "ca.crt"),
                key_path=str(tmp_path / "n.key"), cert_path=str(tmp_path / "n.crt"), common_name="n1")
    checked = module_runner(x509pop_cert, args, check_mode=True, diff=True)
    assert checked["changed"] and os.listdir(tmp_path) == []
    assert "subject: CN=n1" in checked["diff"]["after"]
    done = module_runner(x509pop_cert, args, diff=True)
    assert done["changed"] and done["ca_changed"]
    again = module_runner(x509pop_cert, args)
    assert not again["changed"] and again["reasons"] == []


def test_module_requires_common_name_with_cert_path(tmp_path, module_runner):
    from ansible_collections.spire_py.spire.plugins.modules import x509pop_cert

    result = module_runner(x509pop_cert, dict(ca_key_path=str(tmp_path / "k"), ca_cert_path=str(tmp_path / "c"),
                                              key_path=str(tmp_path / "n.key"), cert_path=str(tmp_path / "n.crt")))
    assert result["failed"] and "common_name" in result["msg"]


def test_module_returns_content_for_copying_to_the_agent(tmp_path, module_runner):
    from ansible_collections.spire_py.spire.plugins.modules import x509pop_cert

    args = dict(ca_key_path=str(tmp_path / "ca.key"), ca_cert_path=str(tmp_path / "ca.crt"),
                key_path=str(tmp_path / "n.key"), cert_path=str(tmp_path / "n.crt"), common_name="n1",
                return_content=True)
    checked = module_runner(x509pop_cert, args, check_mode=True)
    assert checked["private_key_pem"].startswith("-----BEGIN PRIVATE KEY-----")
    done = module_runner(x509pop_cert, args)
    assert done["certificate_pem"] == (tmp_path / "n.crt").read_text()
    assert done["private_key_pem"] == (tmp_path / "n.key").read_text()
    assert done["ca_certificate_pem"] == (tmp_path / "ca.crt").read_text()


def _csr(key, cn="whatever-the-agent-says"):
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes
    from cryptography.x509.oid import NameOID

    return (x509.CertificateSigningRequestBuilder()
            .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, cn)]))
            .sign(key, hashes.SHA256()).public_bytes(pki.serialization.Encoding.PEM))


def test_csr_is_signed_for_the_agents_key_with_the_cas_names_and_then_kept(tmp_path):
    ca = x509pop.ensure(ca_req(tmp_path), None)["ca"]
    agent_key = pki.generate_private_key("ec", 256)
    request = x509pop.NodeCertRequest(None, None, "node1", ["node1.example.org"], validity=10 * 86400, renew_before=86400)
    first = x509pop.sign_csr(request, ca["key"], ca["cert"], _csr(agent_key))
    cert = first["cert"]
    assert first["changed"] and pki.same_public_key(cert.public_key(), agent_key.public_key())
    assert pki.signed_by(cert, ca["cert"]) and pki.dns_names(cert) == ["node1.example.org"]
    assert [a.value for a in cert.subject.get_attributes_for_oid(pki.NameOID.COMMON_NAME)] == ["node1"]
    # Nothing of the agent's key was written on the CA host.
    assert sorted(os.listdir(tmp_path)) == ["ca.crt", "ca.key"]
    kept = x509pop.sign_csr(request, ca["key"], ca["cert"], _csr(agent_key), pki.certificate_pem(cert))
    assert not kept["changed"] and kept["cert"] == cert
    # A new agent key, or a certificate from another CA, gets a new certificate.
    assert x509pop.sign_csr(request, ca["key"], ca["cert"], _csr(pki.generate_private_key("ec", 256)),
                            pki.certificate_pem(cert))["changed"]
    other = x509pop.ensure(ca_req(tmp_path / "other"), None)["ca"] if (tmp_path / "other").mkdir() is None else None
    moved = x509pop.sign_csr(request, other["key"], other["cert"], _csr(agent_key), pki.certificate_pem(cert))
    assert moved["changed"] and "not issued by the current provisioning CA" in " ".join(moved["reasons"])


def test_csr_with_a_bad_signature_is_refused(tmp_path):
    ca = x509pop.ensure(ca_req(tmp_path), None)["ca"]
    request = x509pop.NodeCertRequest(None, None, "node1", validity=10 * 86400, renew_before=86400)
    with pytest.raises(pki.PKIError, match="not a PEM"):
        x509pop.sign_csr(request, ca["key"], ca["cert"], b"-----BEGIN CERTIFICATE REQUEST-----\nAAAA\n-----END CERTIFICATE REQUEST-----\n")
