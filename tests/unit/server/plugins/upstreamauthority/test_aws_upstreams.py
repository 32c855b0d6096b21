"""UpstreamAuthority "awssecret" and "aws_pca": config refusals, and minting against moto's
Secrets Manager and ACM PCA in-process (the real boto3 calls, moto answering)."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any, Iterator

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import serialization
from cryptography.x509.oid import NameOID

from spire_py.common.keys import generate_key, private_key_to_pem, public_keys_equal
from spire_py.common.plugin import PluginConfigError, PluginContext
from spire_py.common.spiffeid import TrustDomain
from spire_py.common.x509util import create_ca_certificate, uri_sans, verify_chain, x509_ca_subject
from spire_py.server.plugins.upstreamauthority.aws_pca import AWSPCAUpstreamAuthority
from spire_py.server.plugins.upstreamauthority.awssecret import AWSSecretUpstreamAuthority
from tests.unit.helpers.aws import REGION, active_root_pca

TD = TrustDomain("example.org")
CTX = PluginContext("example.org")
PEM = serialization.Encoding.PEM


@pytest.fixture
def aws(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    from moto import mock_aws

    for name in ("AWS_ENDPOINT_URL", "AWS_SESSION_TOKEN", "AWS_PROFILE"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "testing")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "testing")
    monkeypatch.setenv("AWS_CONFIG_FILE", "/dev/null")
    monkeypatch.setenv("AWS_SHARED_CREDENTIALS_FILE", "/dev/null")
    with mock_aws():
        yield


def ca(name: str, issuer: Any = None) -> tuple[Any, x509.Certificate]:
    key = generate_key("ec-p256")
    subject = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, name)])
    cert = create_ca_certificate(key.public_key(), issuer[0] if issuer else key, subject=subject, ttl=86400,
                                 now=time.time(), issuer=issuer[1] if issuer else None)
    return key, cert


def pem(*certs: x509.Certificate) -> str:
    return b"".join(c.public_bytes(PEM) for c in certs).decode()


def csr_der(td: TrustDomain = TD) -> tuple[Any, bytes]:
    key = generate_key("ec-p256")
    from cryptography.hazmat.primitives import hashes

    csr = (x509.CertificateSigningRequestBuilder().subject_name(x509_ca_subject())
           .add_extension(x509.SubjectAlternativeName([x509.UniformResourceIdentifier(td.id_string())]), critical=False)
           .sign(key, hashes.SHA256()))
    return key, csr.public_bytes(serialization.Encoding.DER)


def secrets(values: dict[str, str]) -> dict[str, str]:
    import boto3

    sm = boto3.client("secretsmanager", region_name=REGION)
    return {name: sm.create_secret(Name=name, SecretString=value)["ARN"] for name, value in values.items()}


# --- awssecret -----------------------------------------------------------------------------

def test_awssecret_spire_sample_config_validates() -> None:
    AWSSecretUpstreamAuthority.check_config({
        "region": "us-west-2", "cert_file_arn": "cert", "key_file_arn": "key", "bundle_file_arn": "bundle",
        "access_key_id": "ACCESS_KEY_ID", "secret_access_key": "SECRET_ACCESS_KEY", "secret_token": "SECRET_TOKEN",
        "assume_role_arn": "role"}, CTX)


@pytest.mark.parametrize("data, key, message", [
    ({"key_file_arn": "k"}, "cert_file_arn", "configuration missing 'cert_file_arn' value"),
    ({"cert_file_arn": "c"}, "key_file_arn", "configuration missing 'key_file_arn' value"),
    ({"cert_file_arn": "c", "key_file_arn": "k", "access_key_id": "a"}, "secret_access_key", "missing secret access key"),
    ({"cert_file_arn": "c", "key_file_arn": "k", "endpoint": "x"}, "endpoint", 'unknown configuration key "endpoint"'),
])
def test_awssecret_config_refusals(data: dict[str, Any], key: str, message: str) -> None:
    with pytest.raises(PluginConfigError) as err:
        AWSSecretUpstreamAuthority.check_config(data, CTX)
    assert (err.value.key, message in str(err.value)) == (key, True)


def test_awssecret_self_signed_root_signs_the_server_ca(aws: None) -> None:
    key, root = ca("root")
    arns = secrets({"cert": pem(root), "key": private_key_to_pem(key).decode()})
    ua = AWSSecretUpstreamAuthority.configure(
        {"region": REGION, "cert_file_arn": arns["cert"], "key_file_arn": arns["key"]}, CTX)
    server_key, der = csr_der()
    chain, roots = ua.mint_x509_ca(der, TD, ttl=600)
    assert roots == [root] and len(chain) == 1
    assert public_keys_equal(chain[0].public_key(), server_key)
    assert uri_sans(chain[0]) == ["spiffe://example.org"]
    verify_chain(chain[0], chain[1:], roots)


def test_awssecret_intermediate_with_bundle_chains_to_the_bundle_root(aws: None) -> None:
    root_key, root = ca("root")
    mid_key, mid = ca("intermediate", (root_key, root))
    arns = secrets({"cert": pem(mid), "key": private_key_to_pem(mid_key).decode(), "bundle": pem(root)})
    ua = AWSSecretUpstreamAuthority.configure({"region": REGION, "cert_file_arn": arns["cert"],
                                               "key_file_arn": arns["key"], "bundle_file_arn": arns["bundle"]}, CTX)
    chain, roots = ua.mint_x509_ca(csr_der()[1], TD, ttl=600)
    assert chain[1:] == [mid] and roots == [root]
    verify_chain(chain[0], chain[1:], roots)


def test_awssecret_missing_secret_stops_the_start_naming_the_arn(aws: None) -> None:
    key, root = ca("root")
    arns = secrets({"cert": pem(root)})
    with pytest.raises(PluginConfigError) as err:
        AWSSecretUpstreamAuthority.configure({"region": REGION, "cert_file_arn": arns["cert"],
                                              "key_file_arn": "arn:aws:secretsmanager:us-east-1:123456789012:secret:nope"},
                                             CTX)
    assert err.value.key == "key_file_arn"
    assert "unable to read arn:aws:secretsmanager:us-east-1:123456789012:secret:nope" in str(err.value)
    assert "ResourceNotFoundException" in str(err.value)


@pytest.mark.parametrize("case, key, message", [
    ("mismatch", "key_file_arn", "certificate and private key do not match"),
    ("chain-no-bundle", "cert_file_arn", "with no bundle_file_arn configured only self-signed CAs are supported"),
    ("not-pem", "cert_file_arn", "unable to parse certificate"),
])
def test_awssecret_refuses_bad_ca_material(aws: None, case: str, key: str, message: str) -> None:
    root_key, root = ca("root")
    mid_key, mid = ca("intermediate", (root_key, root))
    other_key, _ = ca("other")
    values = {"mismatch": (pem(root), other_key), "chain-no-bundle": (pem(mid, root), mid_key),
              "not-pem": ("hello", root_key)}[case]
    arns = secrets({"cert": values[0], "key": private_key_to_pem(values[1]).decode()})
    with pytest.raises(PluginConfigError) as err:
        AWSSecretUpstreamAuthority.configure({"region": REGION, "cert_file_arn": arns["cert"],
                                              "key_file_arn": arns["key"]}, CTX)
    assert err.value.key == key and message in str(err.value)


# --- aws_pca -------------------------------------------------------------------------------

def test_aws_pca_spire_sample_config_validates() -> None:
    AWSPCAUpstreamAuthority.check_config({
        "region": "us-west-2",
        "certificate_authority_arn": "arn:aws:acm-pca:us-west-2:123456789012:certificate-authority/12ac02bc",
        "ca_signing_template_arn": "arn:aws:acm-pca:::template/SubordinateCACertificate_PathLen0/V1",
        "signing_algorithm": "SHA256WITHECDSA", "assume_role_arn": "arn:aws:iam::123456789012:role/my-role"}, CTX)


def test_aws_pca_config_refusals(tmp_path: Path) -> None:
    cases = [
        ({"certificate_authority_arn": "a"}, "region", "plugin configuration is missing the region"),
        ({"region": "r"}, "certificate_authority_arn", "missing the certificate_authority_arn"),
        ({"region": "r", "certificate_authority_arn": "a", "supplemental_bundle_path": str(tmp_path / "none.pem")},
         "supplemental_bundle_path", "failed to load supplemental bundle"),
        ({"region": "r", "certificate_authority_arn": "a", "bundle_file_arn": "b"}, "bundle_file_arn",
         "unknown configuration key"),
    ]
    for data, key, message in cases:
        with pytest.raises(PluginConfigError) as err:
            AWSPCAUpstreamAuthority.check_config(data, CTX)
        assert (err.value.key, message in str(err.value)) == (key, True), data


def test_aws_pca_unknown_ca_stops_the_start(aws: None) -> None:
    with pytest.raises(PluginConfigError) as err:
        AWSPCAUpstreamAuthority.configure({"region": REGION, "certificate_authority_arn":
                                           "arn:aws:acm-pca:us-east-1:123456789012:certificate-authority/nope"}, CTX)
    assert err.value.key == "certificate_authority_arn"
    assert "failed to describe CertificateAuthority" in str(err.value)


def test_aws_pca_issues_from_the_csr_and_returns_the_pca_root(aws: None, tmp_path: Path) -> None:
    """What moto's ACM PCA supports: IssueCertificate from our CSR (key and SAN kept), the
    certificate_issued waiter, GetCertificate with the chain. moto gives the
    SubordinateCACertificate templates no CA extensions, so the CA manager's own checks are
    exercised by the integration test, not here."""
    import boto3

    acmpca = boto3.client("acm-pca", region_name=REGION)
    arn = active_root_pca(acmpca)
    _, extra = ca("supplemental")
    (tmp_path / "extra.pem").write_text(pem(extra))
    ua = AWSPCAUpstreamAuthority.configure({"region": REGION, "certificate_authority_arn": arn,
                                            "supplemental_bundle_path": str(tmp_path / "extra.pem")}, CTX)
    assert ua.signing_algorithm == "SHA256WITHRSA"  # the CA's own when not configured
    assert ua.template_arn.endswith("SubordinateCACertificate_PathLen0/V1")
    server_key, der = csr_der()
    chain, roots = ua.mint_x509_ca(der, TD, ttl=600)
    pca_root = x509.load_pem_x509_certificate(
        acmpca.get_certificate_authority_certificate(CertificateAuthorityArn=arn)["Certificate"].encode())
    assert roots == [pca_root, extra]
    assert len(chain) == 1 and public_keys_equal(chain[0].public_key(), server_key)
    assert uri_sans(chain[0]) == ["spiffe://example.org"]
    chain[0].verify_directly_issued_by(pca_root)


def test_aws_pca_refuses_a_public_key_without_csr(aws: None) -> None:
    import boto3

    from spire_py.server.plugins.upstreamauthority.disk import UpstreamAuthorityError

    arn = active_root_pca(boto3.client("acm-pca", region_name=REGION))
    ua = AWSPCAUpstreamAuthority.configure({"region": REGION, "certificate_authority_arn": arn}, CTX)
    with pytest.raises(UpstreamAuthorityError, match="signs certificate signing requests only"):
        ua.mint_x509_ca(generate_key("ec-p256").public_key(), TD)
