"""aws_iid's verify_organization and validate_eks_cluster_membership, against moto's
Organizations, EKS and Auto Scaling in-process (the real boto3 calls, moto answering), and
the member cache's TTL and burst guard on their own."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Iterator

import pytest
from grpclib.const import Status

from spire_py.common.plugin import PluginConfigError, PluginContext
from spire_py.common.plugins import aws_iid as iid
from spire_py.server.plugins.context import ServerPluginContext
from spire_py.server.plugins.nodeattestor.aws_iid import AWSIIDAttestor
from spire_py.server.plugins.nodeattestor.aws_iid_membership import RETRIES, MemberSet, MembershipError
from spire_py.server.plugins.nodeattestor.base import AttestationError
from tests.unit.helpers.aws import ACCOUNT, REGION, IIDSigner, document, launch_instance

TD = "example.org"
CTX = PluginContext(TD)
OTHER_ACCOUNT = "999999999999"


class Nodes:
    def fetch_attested_node(self, spiffe_id: str, with_selectors: bool = False) -> None:
        return None


@pytest.fixture(scope="module")
def signer() -> IIDSigner:
    return IIDSigner()


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


def attestor(signer: IIDSigner, tmp_path: Path, **extra: Any) -> AWSIIDAttestor:
    ca = signer.write_cert(tmp_path / "aws-iid-ca.pem")
    ctx = ServerPluginContext(TD, datastore=Nodes())  # type: ignore[arg-type]
    return AWSIIDAttestor.configure({"aws_ca_certificates": {REGION: str(ca)}, **extra}, ctx)


async def no_challenge(_: bytes) -> bytes:
    raise AssertionError("aws_iid does not challenge")


def payload(signer: IIDSigner, instance_id: str, account: str = ACCOUNT) -> bytes:
    return iid.marshal_attestation_data(signer.sign(document(instance_id, account=account)))


# --- config ----------------------------------------------------------------------------

@pytest.mark.parametrize("block", [
    {"management_account_id": "123456789012", "assume_org_role": "spire-org-reader"},
    {"management_account_id": "123456789012", "assume_org_role": "r", "management_account_region": "eu-west-1",
     "org_account_map_ttl": "5m"},
])
def test_spire_sample_organization_blocks_validate(block: dict[str, Any]) -> None:
    AWSIIDAttestor.check_config({"verify_organization": block}, CTX)


@pytest.mark.parametrize("block, message", [
    ({"management_account_id": "1", "assume_org_role": "r", "org_account_map_ttl": "30s"},
     'greater than or equal to "1m"'),
    ({"management_account_id": "1", "assume_org_role": "r", "org_account_map_ttl": "soon"},
     "it should be in duration"),
    ({"account_list_file": "/nonexistent/accounts.json"}, 'invalid "account_list_file"'),
])
def test_organization_block_refusals(block: dict[str, Any], message: str) -> None:
    with pytest.raises(PluginConfigError) as err:
        AWSIIDAttestor.check_config({"verify_organization": block}, CTX)
    assert err.value.key == "verify_organization"
    assert message in str(err.value)


@pytest.mark.parametrize("content, message", [
    ('["12345"]', 'invalid account id "12345"'),
    ('{"accounts": []}', "expected a JSON array"),
    ("[", "expected a JSON array"),
])
def test_malformed_account_list_files_are_refused_at_configuration(tmp_path: Path, content: str,
                                                                  message: str) -> None:
    f = tmp_path / "accounts.json"
    f.write_text(content)
    with pytest.raises(PluginConfigError) as err:
        AWSIIDAttestor.check_config({"verify_organization": {"account_list_file": str(f)}}, CTX)
    assert message in str(err.value)


def test_eks_sample_block_validates_and_bad_names_are_refused() -> None:
    AWSIIDAttestor.check_config(
        {"validate_eks_cluster_membership": {"eks_cluster_names": ["production-cluster", "staging-cluster"]}}, CTX)
    with pytest.raises(PluginConfigError) as err:
        AWSIIDAttestor.check_config({"validate_eks_cluster_membership": {"eks_cluster_names": "prod"}}, CTX)
    assert err.value.key == "validate_eks_cluster_membership"


# --- the member cache ----------------------------------------------------------------------

def test_member_set_reloads_after_ttl_and_bounds_reloads_on_misses() -> None:
    now = [0.0]
    loads: list[int] = []
    members = {"a"}

    def load() -> set[str]:
        loads.append(1)
        return set(members)

    cache = MemberSet(load, ttl=60, clock=lambda: now[0])
    assert cache.contains("a") and len(loads) == 1
    assert cache.contains("a") and len(loads) == 1   # cached
    members.add("b")
    assert cache.contains("b") and len(loads) == 2   # a miss on a cached list reloads it
    for _ in range(RETRIES + 3):
        assert not cache.contains("stranger")
    assert len(loads) == 2 + RETRIES - 1              # at most RETRIES reloads per TTL (one spent on "b")
    now[0] = 61
    assert not cache.contains("stranger") and len(loads) == 2 + RETRIES  # fresh list after the TTL: final


def test_member_set_load_failure_propagates() -> None:
    def load() -> set[str]:
        raise MembershipError("issue while getting list of accounts: denied")

    with pytest.raises(MembershipError):
        MemberSet(load, ttl=60).contains("a")


# --- attestation against moto ----------------------------------------------------------------

async def test_account_in_the_organization_attests_and_another_is_refused(aws: tuple[Any, Any], signer: IIDSigner,
                                                                         tmp_path: Path) -> None:
    import boto3

    ec2, iam = aws
    boto3.client("organizations", region_name="us-west-2").create_organization(FeatureSet="ALL")
    inst = launch_instance(ec2, iam, {})
    plugin = attestor(signer, tmp_path, verify_organization={
        "management_account_id": ACCOUNT, "assume_org_role": "spire-org-reader"})
    result = await plugin.attest(payload(signer, inst["InstanceId"]), no_challenge)
    assert str(result.agent_id).endswith(inst["InstanceId"])
    with pytest.raises(AttestationError) as err:
        await plugin.attest(payload(signer, inst["InstanceId"], account=OTHER_ACCOUNT), no_challenge)
    assert err.value.status == Status.INTERNAL
    assert str(err.value) == (f"failed aws ec2 attestation, nodes account id: {OTHER_ACCOUNT} is not part of "
                              "configured organization or doesn't have ACTIVE status")


async def test_without_an_organization_no_account_is_a_member(aws: tuple[Any, Any], signer: IIDSigner,
                                                               tmp_path: Path) -> None:
    ec2, iam = aws
    inst = launch_instance(ec2, iam, {})  # no organization: ListAccounts lists nothing
    plugin = attestor(signer, tmp_path, verify_organization={
        "management_account_id": ACCOUNT, "assume_org_role": "spire-org-reader"})
    with pytest.raises(AttestationError) as err:
        await plugin.attest(payload(signer, inst["InstanceId"]), no_challenge)
    assert f"nodes account id: {ACCOUNT} is not part of configured organization" in str(err.value)


async def test_account_list_file_decides_and_fails_closed(aws: tuple[Any, Any], signer: IIDSigner,
                                                          tmp_path: Path) -> None:
    ec2, iam = aws
    inst = launch_instance(ec2, iam, {})
    accounts = tmp_path / "accounts.json"
    accounts.write_text(json.dumps([ACCOUNT]))
    plugin = attestor(signer, tmp_path, verify_organization={"account_list_file": str(accounts)})
    await plugin.attest(payload(signer, inst["InstanceId"]), no_challenge)
    with pytest.raises(AttestationError):
        await plugin.attest(payload(signer, inst["InstanceId"], account=OTHER_ACCOUNT), no_challenge)
    # The file turns unreadable after the TTL: attestation fails rather than passing.
    accounts.write_text("not json")
    assert plugin.organization is not None
    plugin.organization.accounts._valid_until = -1.0
    with pytest.raises(AttestationError) as err:
        await plugin.attest(payload(signer, inst["InstanceId"]), no_challenge)
    assert "unable to parse account list file" in str(err.value)


def _eks_cluster_with(instance_id: str, cluster: str = "production-cluster") -> None:
    import boto3

    eks = boto3.client("eks", region_name=REGION)
    role = f"arn:aws:iam::{ACCOUNT}:role/eks"
    eks.create_cluster(name=cluster, roleArn=role, resourcesVpcConfig={})
    group = eks.create_nodegroup(clusterName=cluster, nodegroupName="ng1", nodeRole=role, subnets=["subnet-1"])
    asg_name = group["nodegroup"]["resources"]["autoScalingGroups"][0]["name"]
    autoscaling = boto3.client("autoscaling", region_name=REGION)
    autoscaling.create_launch_configuration(LaunchConfigurationName="lc", ImageId="ami-12c6146b",
                                            InstanceType="t3.micro")
    autoscaling.create_auto_scaling_group(AutoScalingGroupName=asg_name, LaunchConfigurationName="lc", MinSize=0,
                                          MaxSize=5, DesiredCapacity=0, AvailabilityZones=[REGION + "a"])
    autoscaling.attach_instances(InstanceIds=[instance_id], AutoScalingGroupName=asg_name)


async def test_instance_in_an_eks_node_group_attests_and_one_outside_is_refused(
        aws: tuple[Any, Any], signer: IIDSigner, tmp_path: Path) -> None:
    ec2, iam = aws
    member = launch_instance(ec2, iam, {})
    outsider = ec2.run_instances(ImageId="ami-12c6146b", MinCount=1, MaxCount=1)["Instances"][0]
    _eks_cluster_with(member["InstanceId"])
    plugin = attestor(signer, tmp_path,
                      validate_eks_cluster_membership={"eks_cluster_names": ["production-cluster"]})
    result = await plugin.attest(payload(signer, member["InstanceId"]), no_challenge)
    assert str(result.agent_id).endswith(member["InstanceId"])
    with pytest.raises(AttestationError) as err:
        await plugin.attest(payload(signer, outsider["InstanceId"]), no_challenge)
    assert str(err.value) == (f"failed aws eks attestation, nodes id: {outsider['InstanceId']} is not part of "
                              "configured EKS cluster")


async def test_unknown_eks_cluster_refuses(aws: tuple[Any, Any], signer: IIDSigner, tmp_path: Path) -> None:
    ec2, iam = aws
    inst = launch_instance(ec2, iam, {})
    plugin = attestor(signer, tmp_path, validate_eks_cluster_membership={"eks_cluster_names": ["nope"]})
    with pytest.raises(AttestationError) as err:
        await plugin.attest(payload(signer, inst["InstanceId"]), no_challenge)
    assert "issue while getting list of EKS Nodegroups" in str(err.value)
