"""aws_iid (server): config refusals, signature verification, and attestation against moto's
EC2/IAM in-process (the real boto3 calls, moto answering)."""

from __future__ import annotations

import datetime as dt
import json
from pathlib import Path
from typing import Any, Iterator, Optional

import pytest
from grpclib.const import Status

from spire_py.common import plugin as registry
from spire_py.common.plugin import PluginConfigError, PluginContext
from spire_py.common.plugins import aws_iid as iid
from spire_py.server.plugins.context import ServerPluginContext
from spire_py.server.plugins.nodeattestor.aws_iid import AWSIIDAttestor, check_block_device, instance_profile_name
from spire_py.server.plugins.nodeattestor.base import AttestationError
from tests.unit.helpers.aws import ACCOUNT, REGION, IIDSigner, document, launch_instance

TD = "example.org"
CTX = PluginContext(TD)


@pytest.fixture(scope="module")
def signer() -> IIDSigner:
    return IIDSigner()


@pytest.fixture
def ca_file(tmp_path: Path, signer: IIDSigner) -> Path:
    return signer.write_cert(tmp_path / "aws-iid-ca.pem")


class Nodes:
    """The one datastore call the attestor makes: has this agent ID attested before?"""

    def __init__(self) -> None:
        self.attested: set[str] = set()

    def fetch_attested_node(self, spiffe_id: str, with_selectors: bool = False) -> Optional[object]:
        return object() if spiffe_id in self.attested else None


@pytest.fixture
def aws(monkeypatch: pytest.MonkeyPatch) -> Iterator[tuple[Any, Any]]:
    from moto import mock_aws

    for name in ("AWS_ENDPOINT_URL", "AWS_SESSION_TOKEN", "AWS_PROFILE"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "testing")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "testing")
    monkeypatch.setenv("AWS_CONFIG_FILE", "/dev/null")
    monkeypatch.setenv("AWS_SHARED_CREDENTIALS_FILE", "/dev/null")
    with mock_aws():
        import boto3

        yield boto3.client("ec2", region_name=REGION), boto3.client("iam", region_name=REGION)


def attestor(ca_file: Path, nodes: Optional[Nodes] = None, **extra: Any) -> AWSIIDAttestor:
    data = {"aws_ca_certificates": {REGION: str(ca_file)}, **extra}
    ctx = ServerPluginContext(TD, datastore=nodes or Nodes())  # type: ignore[arg-type]
    return AWSIIDAttestor.configure(data, ctx)


def payload(signer: IIDSigner, doc: str) -> bytes:
    return iid.marshal_attestation_data(signer.sign(doc))


async def no_challenge(_: bytes) -> bytes:
    raise AssertionError("aws_iid does not challenge")


# --- config ------------------------------------------------------------------------------

def test_plugin_is_registered_on_both_sides() -> None:
    import spire_py.agent.plugins  # noqa: F401  (the registries fill on import)
    import spire_py.server.plugins  # noqa: F401

    assert registry.lookup("server", "NodeAttestor", "aws_iid") is AWSIIDAttestor
    assert registry.lookup("agent", "NodeAttestor", "aws_iid").NAME == "aws_iid"


@pytest.mark.parametrize("data", [
    {"access_key_id": "ACCESS_KEY_ID", "secret_access_key": "SECRET_ACCESS_KEY"},  # SPIRE's sample
    {"assume_role": "spire-server-delegate"},                                        # SPIRE's assume_role sample
    {"skip_block_device": True, "disable_instance_profile_selectors": True, "partition": "aws-us-gov",
     "account_ids_for_local_validation": ["123456789012"],
     "agent_path_template": "/{{ .PluginName }}/{{ .Tags.role }}/{{ .InstanceID }}"},
])
def test_spire_sample_configs_validate(data: dict[str, Any], monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("AWS_ACCESS_KEY_ID", raising=False)
    monkeypatch.delenv("AWS_SECRET_ACCESS_KEY", raising=False)
    AWSIIDAttestor.check_config(data, CTX)


@pytest.mark.parametrize("data, key, message", [
    ({"partition": "aws-mars"}, "partition", 'invalid partition "aws-mars", must be one of: [aws aws-cn aws-us-gov]'),
    ({"access_key_id": "AKID"}, "secret_access_key", "configuration missing secret access key, but has access key id"),
    ({"secret_access_key": "s"}, "access_key_id", "configuration missing access key id, but has secret access key"),
    ({"agent_path_template": "/{{ .InstanceID "}, "agent_path_template", "failed to parse agent svid template"),
    ({"verify_organization": {}}, "verify_organization", 'please ensure that "management_account_id" & "assume_org_role"'),
    ({"verify_organization": {"account_list_file": "/x.json", "assume_org_role": "r"}},
     "verify_organization", '"account_list_file" is mutually exclusive'),
    ({"verify_organization": {"management_acount_id": "1"}}, "verify_organization.management_acount_id",
     'unknown key "management_acount_id"'),
    ({"validate_eks_cluster_membership": {}}, "validate_eks_cluster_membership", '"eks_cluster_names" is present'),
    ({"aws_ca_certificates": {"us-east-1": "/nonexistent.pem"}}, "aws_ca_certificates.us-east-1",
     'unable to load certificate "/nonexistent.pem"'),
    ({"aws_ca_certificates": {"us-east-1": 5}}, "aws_ca_certificates.us-east-1", "expected the path"),
    ({"skip_block_device": "yes"}, "skip_block_device", "expected true or false"),
    ({"account_ids_for_local_validation": "123"}, "account_ids_for_local_validation", "expected a list"),
    ({"endpoint": "http://x"}, "endpoint", 'unknown configuration key "endpoint"'),
])
def test_config_refusals_name_the_key(data: dict[str, Any], key: str, message: str,
                                       monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("AWS_ACCESS_KEY_ID", raising=False)
    monkeypatch.delenv("AWS_SECRET_ACCESS_KEY", raising=False)
    with pytest.raises(PluginConfigError) as err:
        AWSIIDAttestor.check_config(data, CTX)
    assert err.value.key == key
    assert message in str(err.value)


def test_a_certificate_file_without_pem_is_refused(tmp_path: Path) -> None:
    bad = tmp_path / "bad.pem"
    bad.write_text("not a certificate")
    with pytest.raises(PluginConfigError) as err:
        AWSIIDAttestor.check_config({"aws_ca_certificates": {"us-east-1": str(bad)}}, CTX)
    assert err.value.key == "aws_ca_certificates.us-east-1"


def test_validate_makes_no_aws_calls(monkeypatch: pytest.MonkeyPatch, ca_file: Path) -> None:
    import boto3

    def refuse(*_: Any, **__: Any) -> None:
        raise AssertionError("validate created an AWS session")

    monkeypatch.setattr(boto3, "Session", refuse)
    AWSIIDAttestor.check_config({"assume_role": "r", "aws_ca_certificates": {REGION: str(ca_file)}}, CTX)


# --- signature ---------------------------------------------------------------------------

def test_signed_document_verifies(signer: IIDSigner, ca_file: Path) -> None:
    doc = attestor(ca_file).verify(payload(signer, document("i-0123")))
    assert (doc.account_id, doc.region, doc.instance_id) == (ACCOUNT, REGION, "i-0123")


def test_tampered_document_is_refused(signer: IIDSigner, ca_file: Path) -> None:
    signed = signer.sign(document("i-0123"))
    forged = iid.AttestationData(signed.document.replace("i-0123", "i-9999"), signed.signature, signed.rsa2048)
    with pytest.raises(AttestationError) as err:
        attestor(ca_file).verify(iid.marshal_attestation_data(forged))
    assert err.value.status == Status.INVALID_ARGUMENT
    assert "does not match the verified PKCS7 content" in str(err.value)


def test_signature_by_another_key_is_refused(signer: IIDSigner, ca_file: Path) -> None:
    with pytest.raises(AttestationError) as err:
        attestor(ca_file).verify(payload(IIDSigner("Impostor"), document("i-0123")))
    assert "no trusted certificate matches the signer" in str(err.value)


def test_same_issuer_and_serial_but_another_key_is_refused(signer: IIDSigner, ca_file: Path) -> None:
    """A look-alike of the trusted certificate (same name and serial, another key) does not verify."""
    import base64

    from cryptography import x509
    from cryptography.hazmat.primitives import hashes
    from cryptography.hazmat.primitives.asymmetric import rsa
    from cryptography.hazmat.primitives.serialization import Encoding, pkcs7

    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    twin = (x509.CertificateBuilder().subject_name(signer.cert.subject).issuer_name(signer.cert.issuer)
            .public_key(key.public_key()).serial_number(signer.cert.serial_number)
            .not_valid_before(signer.cert.not_valid_before_utc).not_valid_after(signer.cert.not_valid_after_utc)
            .sign(key, hashes.SHA256()))
    doc = document("i-0123")
    der = (pkcs7.PKCS7SignatureBuilder().set_data(doc.encode()).add_signer(twin, key, hashes.SHA256())
           .sign(Encoding.DER, [pkcs7.PKCS7Options.NoCerts, pkcs7.PKCS7Options.Binary]))
    forged = iid.AttestationData(doc, "", base64.b64encode(der).decode())
    with pytest.raises(AttestationError, match="verification error"):
        attestor(ca_file).verify(iid.marshal_attestation_data(forged))


@pytest.mark.parametrize("body, message", [
    (b"", "missing attestation payload"),
    (b"{", "failed to unmarshal the attestation data"),
    (b'{"document": 5}', "document must be a string"),
    (b'{"document": "[1]", "rsa2048": "x"}', "failed to unmarshal the IID"),
    (json.dumps({"document": document("i-1")}).encode(), "instance identity cryptographic signature is required"),
    (json.dumps({"document": document("i-1"), "signature": "c2ln"}).encode(), "only RSA-2048"),
    (json.dumps({"document": document("i-1"), "rsa2048": "!!!"}).encode(), "failed to decode"),
    (json.dumps({"document": document("i-1"), "rsa2048": "AAAA"}).encode(), "failed to parse"),
])
def test_malformed_payloads_are_refused(ca_file: Path, body: bytes, message: str) -> None:
    with pytest.raises(AttestationError) as err:
        attestor(ca_file).verify(body)
    assert err.value.status == Status.INVALID_ARGUMENT
    assert message in str(err.value)


def test_region_without_a_certificate_is_refused(signer: IIDSigner, ca_file: Path) -> None:
    with pytest.raises(AttestationError) as err:
        attestor(ca_file).verify(payload(signer, document("i-1", region="xx-nowhere-1")))
    assert 'unsupported region "xx-nowhere-1"' in str(err.value)


def test_bundled_aws_certificates_cover_the_commercial_regions() -> None:
    from cryptography import x509

    from spire_py.server.plugins.nodeattestor.aws_iid_certs import REGION_CERTIFICATES

    for region in ("us-east-1", "eu-west-1", "ap-southeast-2", "us-gov-west-1", "cn-north-1"):
        cert = x509.load_pem_x509_certificate(REGION_CERTIFICATES[region].encode())
        assert cert.public_key().key_size == 2048  # type: ignore[union-attr]


# --- block device ------------------------------------------------------------------------

def _instance(root_attach: dt.datetime, iface_attach: dt.datetime, root_type: str = "ebs") -> dict[str, Any]:
    return {"RootDeviceName": "/dev/sda1", "RootDeviceType": root_type,
            "BlockDeviceMappings": [{"DeviceName": "/dev/sda1", "Ebs": {"AttachTime": root_attach}}],
            "NetworkInterfaces": [{"Attachment": {"DeviceIndex": 0, "AttachTime": iface_attach}}]}


def test_root_volume_attached_after_launch_is_refused() -> None:
    launch = dt.datetime(2026, 1, 1, tzinfo=dt.timezone.utc)
    check_block_device(_instance(launch + dt.timedelta(seconds=60), launch))
    with pytest.raises(ValueError, match="differ by 61 seconds"):
        check_block_device(_instance(launch + dt.timedelta(seconds=61), launch))
    check_block_device(_instance(launch + dt.timedelta(days=1), launch, root_type="instance-store"))


def test_block_device_check_needs_interface_zero_and_the_root_mapping() -> None:
    launch = dt.datetime(2026, 1, 1, tzinfo=dt.timezone.utc)
    inst = _instance(launch, launch)
    inst["NetworkInterfaces"][0]["Attachment"]["DeviceIndex"] = 1
    with pytest.raises(ValueError, match="device index 0 is inaccessible"):
        check_block_device(inst)
    inst = _instance(launch, launch)
    inst["RootDeviceName"] = "/dev/xvda"
    with pytest.raises(ValueError, match='root device block mapping with name "/dev/xvda"'):
        check_block_device(inst)


def test_instance_profile_name_from_arn() -> None:
    assert instance_profile_name("arn:aws:iam::123456789012:instance-profile/path/to/prof") == "prof"
    with pytest.raises(AttestationError, match="not for an instance profile"):
        instance_profile_name("arn:aws:iam::123456789012:role/r")


# --- attestation against moto ------------------------------------------------------------

async def test_attestation_gives_the_agent_id_and_selectors(aws: tuple[Any, Any], signer: IIDSigner,
                                                           ca_file: Path) -> None:
    ec2, iam = aws
    inst = launch_instance(ec2, iam, {"role": "web", "env": "prod"})
    result = await attestor(ca_file).attest(payload(signer, document(inst["InstanceId"])), no_challenge)
    assert str(result.agent_id) == f"spiffe://{TD}/spire/agent/aws_iid/{ACCOUNT}/{REGION}/{inst['InstanceId']}"
    values = {s.value for s in result.selectors}
    assert {s.type for s in result.selectors} == {"aws_iid"}
    assert values == {
        f"account_id:{ACCOUNT}", f"az:{REGION}a", "image:id:ami-12c6146b", f"instance:id:{inst['InstanceId']}",
        f"region:{REGION}", "tag:role:web", "tag:env:prod", f"sg:id:{inst['_sg']}", "sg:name:spire-node-sg",
        f"iamrole:arn:aws:iam::{ACCOUNT}:role/spire-node-role",
    }
    assert [s.value for s in result.selectors] == sorted(values)
    assert result.can_reattest is False


async def test_second_attestation_of_an_instance_is_refused(aws: tuple[Any, Any], signer: IIDSigner,
                                                            ca_file: Path) -> None:
    ec2, iam = aws
    inst = launch_instance(ec2, iam, {})
    nodes = Nodes()
    plugin = attestor(ca_file, nodes)
    first = await plugin.attest(payload(signer, document(inst["InstanceId"])), no_challenge)
    nodes.attested.add(str(first.agent_id))
    with pytest.raises(AttestationError) as err:
        await plugin.attest(payload(signer, document(inst["InstanceId"])), no_challenge)
    assert err.value.status == Status.PERMISSION_DENIED
    assert str(err.value) == "attestation data has already been used to attest an agent"


async def test_unknown_instance_is_refused(aws: tuple[Any, Any], signer: IIDSigner, ca_file: Path) -> None:
    with pytest.raises(AttestationError) as err:
        await attestor(ca_file).attest(payload(signer, document("i-0000000000000dead")), no_challenge)
    assert err.value.status == Status.INTERNAL
    assert "failed to describe instance" in str(err.value)


async def test_document_claiming_another_account_is_refused(aws: tuple[Any, Any], signer: IIDSigner,
                                                            ca_file: Path) -> None:
    ec2, iam = aws
    inst = launch_instance(ec2, iam, {})
    with pytest.raises(AttestationError) as err:
        await attestor(ca_file).attest(payload(signer, document(inst["InstanceId"], account="999999999999")),
                                       no_challenge)
    assert err.value.status == Status.PERMISSION_DENIED
    assert 'not owned by account "999999999999"' in str(err.value)


async def test_assume_role_queries_the_documents_account(aws: tuple[Any, Any], signer: IIDSigner,
                                                         ca_file: Path) -> None:
    ec2, iam = aws
    inst = launch_instance(ec2, iam, {})
    # The instance lives in moto's default account; assuming the role in 999999999999 sees nothing there.
    plugin = attestor(ca_file, assume_role="spire-server-delegate")
    with pytest.raises(AttestationError, match="failed to describe instance"):
        await plugin.attest(payload(signer, document(inst["InstanceId"], account="999999999999")), no_challenge)
    result = await plugin.attest(payload(signer, document(inst["InstanceId"])), no_challenge)
    assert result.agent_id.path.endswith(inst["InstanceId"])


async def test_template_tags_and_disabled_profile_selectors(aws: tuple[Any, Any], signer: IIDSigner,
                                                            ca_file: Path) -> None:
    ec2, iam = aws
    inst = launch_instance(ec2, iam, {"cluster": "blue"})
    plugin = attestor(ca_file, agent_path_template="/{{ .PluginName }}/{{ .Tags.cluster }}/{{ .InstanceID }}",
                      disable_instance_profile_selectors=True)
    result = await plugin.attest(payload(signer, document(inst["InstanceId"])), no_challenge)
    assert str(result.agent_id) == f"spiffe://{TD}/spire/agent/aws_iid/blue/{inst['InstanceId']}"
    assert not any(s.value.startswith("iamrole:") for s in result.selectors)


async def test_swapped_root_volume_is_refused_unless_skipped(aws: tuple[Any, Any], signer: IIDSigner,
                                                             ca_file: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    ec2, iam = aws
    inst = launch_instance(ec2, iam, {})
    original = ec2.describe_instances

    def late_root(**kw: Any) -> Any:
        out = original(**kw)
        for r in out["Reservations"]:
            for i in r["Instances"]:
                for b in i["BlockDeviceMappings"]:
                    b["Ebs"]["AttachTime"] += dt.timedelta(minutes=5)
        return out

    plugin = attestor(ca_file)
    ec2_client, _ = plugin.clients.get(ACCOUNT, REGION)
    monkeypatch.setattr(ec2_client, "describe_instances", late_root)
    with pytest.raises(AttestationError) as err:
        await plugin.attest(payload(signer, document(inst["InstanceId"])), no_challenge)
    assert "failed aws ec2 attestation: failed checking the disparity device attach times" in str(err.value)
    assert err.value.status == Status.INTERNAL

    for extra in ({"skip_block_device": True}, {"account_ids_for_local_validation": [ACCOUNT]}):
        trusting = attestor(ca_file, **extra)
        ec2_client, _ = trusting.clients.get(ACCOUNT, REGION)
        monkeypatch.setattr(ec2_client, "describe_instances", late_root)
        await trusting.attest(payload(signer, document(inst["InstanceId"])), no_challenge)
