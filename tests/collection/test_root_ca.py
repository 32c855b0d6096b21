"""root_ca: a self-signed CA pair kept while valid, regenerated when it must be."""

import datetime
import os
import stat

import pytest

pytest.importorskip("cryptography")

from ansible_collections.spire_py.spire.plugins.module_utils import ca_pair, pki  # noqa: E402


def request(tmp_path, **kw):
    args = dict(key_path=str(tmp_path / "root.key"), cert_path=str(tmp_path / "root.crt"),
                subject={"common_name": "test root"}, key_type="ec", validity=10 * 86400, renew_before=86400)
    args.update(kw)
    return ca_pair.CAPairRequest(**args)


def test_creates_a_ca_pair_with_a_private_key_file(tmp_path):
    result = ca_pair.ensure_ca(request(tmp_path))
    assert result["changed"]
    assert stat.S_IMODE(os.stat(tmp_path / "root.key").st_mode) == 0o600
    cert = pki.load_certificate((tmp_path / "root.crt").read_bytes())
    key = pki.load_private_key((tmp_path / "root.key").read_bytes())
    assert pki.is_ca(cert) and pki.same_public_key(cert.public_key(), key.public_key())
    assert result["after"]["subject"] == "CN=test root"
    assert result["after"]["key"] == "ec 256"


def test_keeps_a_valid_pair(tmp_path):
    first = ca_pair.ensure_ca(request(tmp_path))
    before = (tmp_path / "root.key").read_bytes()
    second = ca_pair.ensure_ca(request(tmp_path))
    assert not second["changed"] and second["reasons"] == []
    assert (tmp_path / "root.key").read_bytes() == before
    assert second["after"]["sha256_fingerprint"] == first["after"]["sha256_fingerprint"]


def test_check_mode_writes_nothing_but_reports_the_change(tmp_path):
    result = ca_pair.ensure_ca(request(tmp_path), check_mode=True)
    assert result["changed"] and result["after"]["subject"] == "CN=test root"
    assert not (tmp_path / "root.key").exists() and not (tmp_path / "root.crt").exists()


def test_regenerates_under_the_renewal_threshold(tmp_path):
    ca_pair.ensure_ca(request(tmp_path))
    later = pki.utcnow() + datetime.timedelta(days=9, hours=12)
    result = ca_pair.ensure_ca(request(tmp_path), now=later)
    assert result["changed"]
    assert "expires in" in result["reasons"][0]


@pytest.mark.parametrize("change,reason", [
    (dict(force=True), "force"),
    (dict(key_type="rsa", key_size=2048), "key is ec 256, want rsa 2048"),
    (dict(subject={"common_name": "other"}), "subject is CN=test root"),
])
def test_regenerates_on_force_key_type_or_subject_change(tmp_path, change, reason):
    ca_pair.ensure_ca(request(tmp_path))
    result = ca_pair.ensure_ca(request(tmp_path, **change))
    assert result["changed"]
    assert reason in result["reasons"][0]


def test_regenerates_when_the_certificate_does_not_match_the_key(tmp_path):
    ca_pair.ensure_ca(request(tmp_path))
    other = pki.private_key_pem(pki.generate_private_key("ec", 256))
    (tmp_path / "root.key").write_bytes(other)
    result = ca_pair.ensure_ca(request(tmp_path))
    assert result["changed"]
    assert "does not match" in result["reasons"][0]


def test_rejects_a_bad_key_size_and_an_unknown_subject_field(tmp_path):
    with pytest.raises(pki.PKIError, match="key_size 1024"):
        request(tmp_path, key_type="rsa", key_size=1024)
    with pytest.raises(pki.PKIError, match="unknown subject field"):
        ca_pair.ensure_ca(request(tmp_path, subject={"cn": "x"}))
    with pytest.raises(pki.PKIError, match="renew_before"):
        request(tmp_path, renew_before=10 * 86400)


def test_root_ca_module_check_mode_diff_and_idempotence(tmp_path, module_runner):
    from ansible_collections.spire_py.spire.plugins.modules import root_ca

    args = dict(key_path=str(tmp_path / "k"), cert_path=str(tmp_path / "c"), subject={"common_name": "m"})
    checked = module_runner(root_ca, args, check_mode=True, diff=True)
    assert checked["changed"] and not (tmp_path / "k").exists()
    assert checked["diff"]["before"] == "absent\n" and "subject: CN=m" in checked["diff"]["after"]
    created = module_runner(root_ca, args, diff=True)
    assert created["changed"] and (tmp_path / "k").exists()
    again = module_runner(root_ca, args, check_mode=True)
    assert not again["changed"]
    again = module_runner(root_ca, args)
    assert not again["changed"]
    assert again["certificate"]["sha256_fingerprint"] == created["certificate"]["sha256_fingerprint"]


def test_root_ca_module_repairs_loose_key_permissions(tmp_path, module_runner):
    from ansible_collections.spire_py.spire.plugins.modules import root_ca

    args = dict(key_path=str(tmp_path / "k"), cert_path=str(tmp_path / "c"))
    module_runner(root_ca, args)
    os.chmod(tmp_path / "k", 0o644)
    fixed = module_runner(root_ca, args)
    assert fixed["changed"] and fixed["reasons"] == []
    assert stat.S_IMODE(os.stat(tmp_path / "k").st_mode) == 0o600


def test_root_ca_module_fails_on_bad_input(tmp_path, module_runner):
    from ansible_collections.spire_py.spire.plugins.modules import root_ca

    result = module_runner(root_ca, dict(key_path=str(tmp_path / "k"), cert_path=str(tmp_path / "c"), validity="ten years"))
    assert result["failed"] and "invalid duration" in result["msg"]
