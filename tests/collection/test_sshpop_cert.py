"""sshpop_cert: SSH host certificates signed by a CA key created when absent."""

import os
import stat
import time

import pytest

pytest.importorskip("cryptography")

from cryptography.hazmat.primitives.asymmetric import ed25519  # noqa: E402
from cryptography.hazmat.primitives.serialization import load_ssh_public_identity  # noqa: E402

from ansible_collections.spire_py.spire.plugins.module_utils import sshpop  # noqa: E402
from ansible_collections.spire_py.spire.plugins.module_utils.pki import PKIError  # noqa: E402


def host_public_key():
    return sshpop.openssh_public(ed25519.Ed25519PrivateKey.generate().public_key()) + " root@host\n"


def req(tmp_path, public_key, **kw):
    args = dict(ca_key_path=str(tmp_path / "ca"), cert_path=str(tmp_path / "host-cert.pub"), public_key=public_key,
                principals=["node1.example.org", "node1"], validity=10 * 86400, renew_before=86400)
    args.update(kw)
    return sshpop.HostCertRequest(**args)


def test_creates_the_ca_and_signs_a_host_certificate(tmp_path):
    pub = host_public_key()
    result = sshpop.ensure_host_cert(req(tmp_path, pub))
    assert result["changed"] and result["ca_created"]
    assert stat.S_IMODE(os.stat(tmp_path / "ca").st_mode) == 0o600
    assert (tmp_path / "ca.pub").read_text().strip() == result["ca_public_key"]
    cert = load_ssh_public_identity((tmp_path / "host-cert.pub").read_bytes().strip())
    cert.verify_cert_signature()
    assert cert.valid_principals == [b"node1.example.org", b"node1"]
    assert cert.key_id == b"node1.example.org"
    assert result["after"]["type"] == "host"
    assert sshpop.openssh_public(cert.public_key()) == " ".join(pub.split()[:2])


def test_keeps_a_valid_certificate(tmp_path):
    pub = host_public_key()
    first = sshpop.ensure_host_cert(req(tmp_path, pub))
    again = sshpop.ensure_host_cert(req(tmp_path, pub))
    assert not again["changed"] and not again["ca_created"]
    assert again["certificate"] == first["certificate"]


@pytest.mark.parametrize("change,reason", [
    (dict(principals=["other"]), "principals differ"),
    (dict(key_id="x"), "key id differs"),
    (dict(force=True), "force"),
])
def test_resigns_on_changed_principals_key_id_or_force(tmp_path, change, reason):
    pub = host_public_key()
    sshpop.ensure_host_cert(req(tmp_path, pub))
    result = sshpop.ensure_host_cert(req(tmp_path, pub, **change))
    assert result["changed"] and reason in " ".join(result["reasons"])


def test_resigns_for_another_host_key_and_near_expiry(tmp_path):
    sshpop.ensure_host_cert(req(tmp_path, host_public_key()))
    result = sshpop.ensure_host_cert(req(tmp_path, host_public_key()))
    assert "another public key" in " ".join(result["reasons"])
    pub = host_public_key()
    sshpop.ensure_host_cert(req(tmp_path, pub))
    later = time.time() + 9.5 * 86400
    assert "expires in" in " ".join(sshpop.ensure_host_cert(req(tmp_path, pub), now=later)["reasons"])


def test_check_mode_writes_nothing(tmp_path):
    result = sshpop.ensure_host_cert(req(tmp_path, host_public_key()), check_mode=True)
    assert result["changed"] and os.listdir(tmp_path) == []


def test_never_replaces_an_unreadable_ca_key(tmp_path):
    (tmp_path / "ca").write_text("not a key")
    with pytest.raises(PKIError, match="refusing"):
        sshpop.ensure_host_cert(req(tmp_path, host_public_key()))


def test_rejects_a_public_key_that_is_not_openssh(tmp_path):
    with pytest.raises(PKIError, match="not an OpenSSH public key"):
        req(tmp_path, "-----BEGIN PUBLIC KEY-----")


def test_module_check_mode_diff_idempotence(tmp_path, module_runner):
    from ansible_collections.spire_py.spire.plugins.modules import sshpop_cert

    args = dict(ca_key_path=str(tmp_path / "ca"), cert_path=str(tmp_path / "c.pub"),
                public_key=host_public_key(), principals=["n1"])
    checked = module_runner(sshpop_cert, args, check_mode=True, diff=True)
    assert checked["changed"] and os.listdir(tmp_path) == []
    assert "principals: ['n1']" in checked["diff"]["after"]
    done = module_runner(sshpop_cert, args)
    assert done["changed"] and done["certificate"].startswith("ssh-ed25519-cert-v01@openssh.com ")
    again = module_runner(sshpop_cert, args, diff=True)
    assert not again["changed"] and again["diff"]["before"] == again["diff"]["after"]


def test_ca_only_without_a_public_key(tmp_path, module_runner):
    from ansible_collections.spire_py.spire.plugins.modules import sshpop_cert

    first = module_runner(sshpop_cert, dict(ca_key_path=str(tmp_path / "ca")))
    assert first["changed"] and first["ca_created"] and first["ca_public_key"].startswith("ssh-ed25519 ")
    again = module_runner(sshpop_cert, dict(ca_key_path=str(tmp_path / "ca")))
    assert not again["changed"] and again["ca_public_key"] == first["ca_public_key"]
    assert sorted(os.listdir(tmp_path)) == ["ca", "ca.pub"]
