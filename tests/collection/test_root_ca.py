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


# --- a trust root is never replaced by surprise (regenerate, backup) and its directory belongs to its user ---

def _root_args(tmp_path, **kw):
    args = dict(key_path=str(tmp_path / "upstream" / "root.key"), cert_path=str(tmp_path / "upstream" / "root.crt"),
                subject={"common_name": "root"})
    args.update(kw)
    return args


def test_root_ca_module_creates_its_directory_owned_by_the_service_user(tmp_path, module_runner):
    import pwd

    from ansible_collections.spire_py.spire.plugins.modules import root_ca

    if os.getuid() != 0:
        pytest.skip("changing owners needs root")
    nobody = pwd.getpwnam("nobody")
    group = __import__("grp").getgrgid(nobody.pw_gid).gr_name
    checked = module_runner(root_ca, _root_args(tmp_path, owner="nobody", group=group), check_mode=True)
    assert checked["changed"] and not (tmp_path / "upstream").exists()
    made = module_runner(root_ca, _root_args(tmp_path, owner="nobody", group=group))
    assert made["changed"]
    st = os.stat(tmp_path / "upstream")
    assert (st.st_uid, st.st_gid, stat.S_IMODE(st.st_mode)) == (nobody.pw_uid, nobody.pw_gid, 0o700)
    assert os.stat(tmp_path / "upstream" / "root.key").st_uid == nobody.pw_uid
    assert not module_runner(root_ca, _root_args(tmp_path, owner="nobody", group=group))["changed"]


@pytest.mark.parametrize("change", [
    {"key_size": 384},
    {"subject": {"common_name": "another root"}},
    {"key_type": "rsa", "key_size": 2048},
])
def test_root_ca_module_refuses_to_rekey_a_root_by_default(tmp_path, module_runner, change):
    from ansible_collections.spire_py.spire.plugins.modules import root_ca

    created = module_runner(root_ca, _root_args(tmp_path))
    before = (tmp_path / "upstream" / "root.key").read_bytes()
    refused = module_runner(root_ca, _root_args(tmp_path, **change))
    assert refused["failed"] and "does not match the request" in refused["msg"] and "regenerate" in refused["msg"]
    assert (tmp_path / "upstream" / "root.key").read_bytes() == before
    kept = module_runner(root_ca, _root_args(tmp_path, regenerate="never", **change))
    assert not kept["changed"] and kept["mismatch"]
    assert kept["certificate"]["sha256_fingerprint"] == created["certificate"]["sha256_fingerprint"]


def test_root_ca_module_never_overwrites_an_unreadable_key_without_being_told(tmp_path, module_runner):
    from ansible_collections.spire_py.spire.plugins.modules import root_ca

    module_runner(root_ca, _root_args(tmp_path))
    encrypted = b"-----BEGIN ENCRYPTED PRIVATE KEY-----\nMIIBvTBXBgkqhkiG9w0BBQ0wSjApBgkqhkiG9w0BBQwwHAQI\n-----END ENCRYPTED PRIVATE KEY-----\n"
    (tmp_path / "upstream" / "root.key").write_bytes(encrypted)
    refused = module_runner(root_ca, _root_args(tmp_path))
    assert refused["failed"] and "no readable private key" in refused["msg"]
    assert (tmp_path / "upstream" / "root.key").read_bytes() == encrypted


def test_root_ca_module_replaces_with_a_backup_when_allowed(tmp_path, module_runner):
    from ansible_collections.spire_py.spire.plugins.modules import root_ca

    created = module_runner(root_ca, _root_args(tmp_path))
    old_key = (tmp_path / "upstream" / "root.key").read_bytes()
    replaced = module_runner(root_ca, _root_args(tmp_path, key_size=384, regenerate="full_idempotence", backup=True))
    assert replaced["changed"] and replaced["reasons"]
    assert replaced["certificate"]["sha256_fingerprint"] != created["certificate"]["sha256_fingerprint"]
    copies = replaced["backup_files"]
    assert set(copies) == {str(tmp_path / "upstream" / "root.key"), str(tmp_path / "upstream" / "root.crt")}
    key_copy = copies[str(tmp_path / "upstream" / "root.key")]
    assert open(key_copy, "rb").read() == old_key
    assert stat.S_IMODE(os.stat(key_copy).st_mode) == 0o600
    again = module_runner(root_ca, _root_args(tmp_path, key_size=384))
    assert not again["changed"]


def test_root_ca_module_force_is_regenerate_always(tmp_path, module_runner):
    from ansible_collections.spire_py.spire.plugins.modules import root_ca

    first = module_runner(root_ca, _root_args(tmp_path))
    forced = module_runner(root_ca, _root_args(tmp_path, force=True))
    assert forced["changed"]
    assert forced["certificate"]["sha256_fingerprint"] != first["certificate"]["sha256_fingerprint"]


def test_x509pop_ca_is_not_rekeyed_by_default(tmp_path, module_runner):
    from ansible_collections.spire_py.spire.plugins.modules import x509pop_cert

    args = dict(ca_key_path=str(tmp_path / "x509pop" / "ca.key"), ca_cert_path=str(tmp_path / "x509pop" / "ca.crt"))
    assert module_runner(x509pop_cert, args)["changed"]
    refused = module_runner(x509pop_cert, dict(args, ca_subject={"common_name": "other"}))
    assert refused["failed"] and "does not match the request" in refused["msg"]
    allowed = module_runner(x509pop_cert, dict(args, ca_subject={"common_name": "other"},
                                               ca_regenerate="full_idempotence", ca_backup=True))
    assert allowed["changed"] and allowed["ca"]["subject"] == "CN=other"


def test_unknown_owner_fails_before_anything_is_written(tmp_path, module_runner):
    from ansible_collections.spire_py.spire.plugins.modules import root_ca as module

    args = {"key_path": str(tmp_path / "upstream" / "root.key"), "cert_path": str(tmp_path / "upstream" / "root.crt"),
            "owner": "no-such-spire-user"}
    result = module_runner(module, args)
    assert result["failed"] and "no-such-spire-user does not exist" in result["msg"]
    assert not (tmp_path / "upstream").exists()
    bad_group = module_runner(module, dict(args, owner=None, group="no-such-spire-group"))
    assert bad_group["failed"] and not (tmp_path / "upstream").exists()
