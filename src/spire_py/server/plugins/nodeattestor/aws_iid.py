"""NodeAttestor "aws_iid" (server): EC2 instances by their signed instance identity document.

As SPIRE's plugin: the document's RSA-2048 PKCS#7 signature must verify against AWS's
certificate for the document's region (``aws_iid_certs.py``, plus any configured in
``aws_ca_certificates``, a spire_py key for regions AWS added since and private test
CAs); EC2 DescribeInstances (credentials, ``assume_role`` into the document's account)
must find the instance running or pending; unless ``skip_block_device`` or the account
is in ``account_ids_for_local_validation``, the root volume must have been attached
within 60 s of network interface 0 (a volume swapped after launch is refused). Trust on
first use: an agent ID already attested is refused until the agent is evicted.

Agent ID: ``agent_path_template`` (default ``/aws_iid/<account>/<region>/<instance>``,
``.Tags`` available). Selectors (type ``aws_iid``): ``account_id:``, ``az:``,
``image:id:``, ``instance:id:``, ``region:``, ``tag:<key>:<value>``, ``sg:id:``,
``sg:name:``, ``iamrole:<role ARN>`` (IAM GetInstanceProfile, unless
``disable_instance_profile_selectors``).

``verify_organization`` (the account must be an ACTIVE member of an AWS Organization, from
Organizations ListAccounts through ``assume_org_role`` or from ``account_list_file``) and
``validate_eks_cluster_membership`` (the instance must be in an Auto Scaling group of a
node group of one of ``eks_cluster_names``) are checked after the signature, as SPIRE's
(``aws_iid_membership.py``).

Beyond SPIRE: the reservation's owner must be the document's account (a document cannot
borrow an instance ID seen through another account's credentials). Refused rather than
trusted: documents carrying only the legacy RSA-1024 signature (every agent since SPIRE
1.0 sends the RSA-2048 one).
"""

from __future__ import annotations

import asyncio
import os
import re
import threading
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, Optional

from cryptography import x509
from grpclib.const import Status

from ....common import log
from ....common.plugin import (
    BOOL, STR, STR_LIST, Ctx, Field, Kind, KeyPath, PluginConfigError, PluginContext, Schema, register,
)
from ....common.plugins import aws_iid as iid
from ....common.plugins import aws_session
from ....common.plugins.agentpathtemplate import AgentPathTemplate, TemplateError, make_agent_id
from ....common.registration import Selector
from ....common.spiffeid import TrustDomain
from ...datastore.api import DataStore
from ..context import datastore_of
from . import aws_iid_membership as membership
from .aws_iid_certs import REGION_CERTIFICATES
from .aws_iid_signature import SignatureError, verify_rsa2048
from .base import AttestationError, AttestResult, Challenge, NodeAttestor

_log = log.get("nodeattestor.aws_iid")

PARTITIONS = ("aws", "aws-cn", "aws-us-gov")
MAX_SECONDS_BETWEEN_DEVICE_ATTACHMENTS = 60
INSTANCE_FILTERS = [{"Name": "instance-state-name", "Values": ["pending", "running"]}]
_PROFILE_RESOURCE = re.compile(r"instance-profile[/:](.+)")

ORGANIZATION_KEYS = ("management_account_id", "management_account_region", "assume_org_role",
                     "org_account_map_ttl", "account_list_file")
EKS_KEYS = ("eks_cluster_names",)


def _one_block(ctx: Ctx, path: KeyPath, value: Any) -> dict[str, Any]:
    """A block given as ``key = { ... }`` or ``key { ... }`` (HCL may hand over a list of them)."""
    if isinstance(value, dict):
        return dict(value)
    if isinstance(value, list) and all(isinstance(v, dict) for v in value):
        merged: dict[str, Any] = {}
        for v in value:
            merged.update(v)
        return merged
    raise ctx.error(path, "expected a block { ... }")


class _Block(Kind):
    """A nested block with known keys, kept as a dict; absent stays None (so ``{}`` is told apart)."""

    name = "block"

    def __init__(self, keys: tuple[str, ...]) -> None:
        self.keys = keys

    def convert(self, ctx: Ctx, path: KeyPath, value: Any) -> Any:
        block = _one_block(ctx, path, value)
        for key in block:
            if key not in self.keys:
                raise ctx.error(list(path) + [key], f'unknown key "{key}"; known keys: {", ".join(self.keys)}')
        return block


class _PathsByRegion(Kind):
    """``{ "us-east-1" = "/path/to/cert.pem" }``: PEM files trusted for a region's documents."""

    name = "map of region to certificate file"

    def convert(self, ctx: Ctx, path: KeyPath, value: Any) -> Any:
        mapping = _one_block(ctx, path, value)
        for region, file in mapping.items():
            if not isinstance(file, str) or not file:
                raise ctx.error(list(path) + [region], "expected the path of a PEM certificate file")
        return mapping

    def empty(self, ctx: Ctx, path: KeyPath) -> Any:
        return {}


@dataclass
class AWSIIDConfig:
    access_key_id: str
    secret_access_key: str
    skip_block_device: bool
    disable_instance_profile_selectors: bool
    account_ids_for_local_validation: list[str]
    agent_path_template: str
    assume_role: str
    partition: str
    verify_organization: Optional[dict[str, Any]]
    validate_eks_cluster_membership: Optional[dict[str, Any]]
    aws_ca_certificates: dict[str, str]


@dataclass
class AWSIIDSettings:
    access_key_id: str
    secret_access_key: str
    skip_block_device: bool
    disable_instance_profile_selectors: bool
    local_accounts: frozenset[str]
    template: AgentPathTemplate
    template_uses_tags: bool
    assume_role: str
    partition: str
    extra_certificates: dict[str, list[x509.Certificate]]
    organization: Optional[membership.OrgSettings] = None
    eks_clusters: list[str] = field(default_factory=list)


def _load_pem(path: str) -> list[x509.Certificate]:
    with open(path, "rb") as f:
        data = f.read(1024 * 1024)
    return x509.load_pem_x509_certificates(data)


def resolve(config: AWSIIDConfig, getenv: Any = os.environ.get) -> AWSIIDSettings:
    """Check the config across keys and load the extra certificates; reads, never connects."""
    access_key_id = config.access_key_id or getenv("AWS_ACCESS_KEY_ID") or ""
    secret_access_key = config.secret_access_key or getenv("AWS_SECRET_ACCESS_KEY") or ""
    try:
        aws_session.check_static_credentials(access_key_id, secret_access_key)
    except aws_session.AWSConfigError as exc:
        raise PluginConfigError(str(exc), "secret_access_key" if access_key_id else "access_key_id") from None

    text = config.agent_path_template or iid.DEFAULT_AGENT_PATH_TEMPLATE
    try:
        template = AgentPathTemplate.parse(text)
    except TemplateError as exc:
        raise PluginConfigError(f'failed to parse agent svid template: "{text}": {exc}', "agent_path_template") from None

    partition = config.partition or "aws"
    if partition not in PARTITIONS:
        raise PluginConfigError(f'invalid partition "{partition}", must be one of: [{" ".join(PARTITIONS)}]',
                                "partition")

    org = membership.org_settings(config.verify_organization) if config.verify_organization is not None else None
    eks = config.validate_eks_cluster_membership
    eks_clusters: list[str] = []
    if eks is not None:
        names = eks.get("eks_cluster_names")
        if not names:
            raise PluginConfigError('please ensure that "eks_cluster_names" is present inside block or remove the '
                                    'block: "validate_eks_cluster_membership"', "validate_eks_cluster_membership")
        if not isinstance(names, list) or not all(isinstance(n, str) and n for n in names):
            raise PluginConfigError('"eks_cluster_names" must be a list of cluster names',
                                    "validate_eks_cluster_membership")
        eks_clusters = list(names)

    extra: dict[str, list[x509.Certificate]] = {}
    for region, path in config.aws_ca_certificates.items():
        key = f"aws_ca_certificates.{region}"
        try:
            certs = _load_pem(path)
        except OSError as exc:
            raise PluginConfigError(f'unable to load certificate "{path}": {exc.strerror or exc}', key) from None
        except ValueError as exc:
            raise PluginConfigError(f'unable to load certificate "{path}": {exc}', key) from None
        extra[region] = certs

    return AWSIIDSettings(
        access_key_id=access_key_id,
        secret_access_key=secret_access_key,
        skip_block_device=config.skip_block_device,
        disable_instance_profile_selectors=config.disable_instance_profile_selectors,
        local_accounts=frozenset(config.account_ids_for_local_validation),
        template=template,
        template_uses_tags=".Tags" in text,
        assume_role=config.assume_role,
        partition=partition,
        extra_certificates=extra,
        organization=org,
        eks_clusters=eks_clusters,
    )


def region_certificates(region: str, extra: dict[str, list[x509.Certificate]]) -> list[x509.Certificate]:
    certs = list(extra.get(region, []))
    pem = REGION_CERTIFICATES.get(region)
    if pem:
        certs.append(x509.load_pem_x509_certificate(pem.encode()))
    return certs


def _unix(value: Any) -> float:
    if isinstance(value, datetime):
        return value.timestamp()
    return datetime.fromisoformat(str(value)).timestamp()


def check_block_device(instance: dict[str, Any]) -> None:
    """SPIRE's anti-tampering check: an EBS root volume attached long after network interface 0
    was (the instance's launch) means the root disk was swapped."""
    ifaces = [n for n in instance.get("NetworkInterfaces", [])
              if (n.get("Attachment") or {}).get("DeviceIndex") == 0]
    if not ifaces:
        raise ValueError("the EC2 instance network interface with device index 0 is inaccessible")
    iface_time = _unix(ifaces[0]["Attachment"]["AttachTime"])
    if instance.get("RootDeviceType") == "instance-store":
        return
    root = instance.get("RootDeviceName")
    mappings = [b for b in instance.get("BlockDeviceMappings", []) if b.get("DeviceName") == root]
    if not mappings or "Ebs" not in mappings[0]:
        raise ValueError(f'failed to locate the root device block mapping with name "{root}"')
    disparity = abs(int(iface_time) - int(_unix(mappings[0]["Ebs"]["AttachTime"])))
    if disparity > MAX_SECONDS_BETWEEN_DEVICE_ATTACHMENTS:
        raise ValueError("failed checking the disparity device attach times, root BlockDeviceMapping and "
                         f"NetworkInterface[0] attach times differ by {disparity} seconds")


def instance_profile_name(arn: str) -> str:
    parts = arn.split(":", 5)
    if len(parts) != 6 or parts[0] != "arn":
        raise AttestationError(f"failed to parse arn: invalid prefix: {arn}", Status.INTERNAL)
    m = _PROFILE_RESOURCE.search(parts[5])
    if not m:
        raise AttestationError("arn is not for an instance profile", Status.INTERNAL)
    return m.group(1).split("/")[-1]


def document_selectors(doc: iid.InstanceIdentityDocument) -> set[str]:
    return {f"account_id:{doc.account_id}", f"image:id:{doc.image_id}", f"instance:id:{doc.instance_id}",
            f"region:{doc.region}", f"az:{doc.availability_zone}"}


def instance_selectors(instance: dict[str, Any]) -> set[str]:
    values = {f'tag:{t.get("Key", "")}:{t.get("Value", "")}' for t in instance.get("Tags", [])}
    for sg in instance.get("SecurityGroups", []):
        values.add(f'sg:id:{sg.get("GroupId", "")}')
        values.add(f'sg:name:{sg.get("GroupName", "")}')
    return values


class _Clients:
    """AWS clients per account@region and service, as SPIRE's clientsCache (assume_role is per
    account): EC2 and IAM for every attestation, EKS and Auto Scaling for the EKS check."""

    def __init__(self, settings: AWSIIDSettings) -> None:
        self.settings = settings
        self._lock = threading.Lock()
        self._sessions: dict[str, Any] = {}
        self._clients: dict[tuple[str, str], Any] = {}

    def client(self, account: str, region: str, service: str) -> Any:
        key = f"{account}@{region}"
        with self._lock:
            if (key, service) not in self._clients:
                if key not in self._sessions:
                    s = self.settings
                    role = f"arn:{s.partition}:iam::{account}:role/{s.assume_role}" if s.assume_role else ""
                    self._sessions[key] = aws_session.new_session(region, s.access_key_id, s.secret_access_key,
                                                                  assume_role_arn=role)
                self._clients[(key, service)] = aws_session.client(self._sessions[key], service, region)
            return self._clients[(key, service)]

    def get(self, account: str, region: str) -> tuple[Any, Any]:
        return self.client(account, region, "ec2"), self.client(account, region, "iam")

    def eks(self, account: str, region: str) -> tuple[Any, Any]:
        return self.client(account, region, "eks"), self.client(account, region, "autoscaling")


@register("server")
class AWSIIDAttestor(NodeAttestor):
    NAME = iid.PLUGIN_NAME
    CONFIG = Schema([
        Field("access_key_id", STR, default=""),
        Field("secret_access_key", STR, default=""),
        Field("skip_block_device", BOOL, default=False),
        Field("disable_instance_profile_selectors", BOOL, default=False),
        Field("account_ids_for_local_validation", STR_LIST),
        Field("agent_path_template", STR, default=""),
        Field("assume_role", STR, default=""),
        Field("partition", STR, default=""),
        Field("verify_organization", _Block(ORGANIZATION_KEYS), default=None),
        Field("validate_eks_cluster_membership", _Block(EKS_KEYS), default=None),
        Field("aws_ca_certificates", _PathsByRegion()),
    ])
    CONFIG_TYPE = AWSIIDConfig

    def __init__(self, trust_domain: TrustDomain, settings: AWSIIDSettings,
                 datastore: Optional[DataStore] = None) -> None:
        self.trust_domain = trust_domain
        self.settings = settings
        self.datastore = datastore
        self.clients = _Clients(settings)
        self.organization = (membership.OrganizationValidator(settings.organization, settings.access_key_id,
                                                              settings.secret_access_key, settings.partition)
                             if settings.organization else None)
        self.eks = membership.EKSValidator(settings.eks_clusters, self.clients.eks) if settings.eks_clusters else None

    @classmethod
    def validate(cls, config: AWSIIDConfig, ctx: PluginContext) -> None:
        resolve(config)

    @classmethod
    def from_config(cls, config: AWSIIDConfig, ctx: PluginContext) -> "AWSIIDAttestor":
        return cls(TrustDomain(ctx.trust_domain), resolve(config), datastore_of(ctx))

    def verify(self, payload: bytes) -> iid.InstanceIdentityDocument:
        """The document, once its signature verified; AttestationError otherwise."""
        if not payload:
            raise AttestationError("missing attestation payload", Status.INVALID_ARGUMENT)
        try:
            data = iid.unmarshal_attestation_data(payload)
            doc = iid.parse_document(data.document)
        except iid.AWSIIDError as exc:
            raise AttestationError(str(exc), Status.INVALID_ARGUMENT) from None
        if not data.rsa2048:
            if data.signature:
                raise AttestationError("only RSA-2048 instance identity signatures are supported; "
                                       "the RSA-1024 one alone is refused", Status.INVALID_ARGUMENT)
            raise AttestationError("instance identity cryptographic signature is required", Status.INVALID_ARGUMENT)
        certs = region_certificates(doc.region, self.settings.extra_certificates)
        if not certs:
            raise AttestationError(f'failed to load the AWS CA certificate for region "{doc.region}": '
                                   f'unsupported region "{doc.region}"', Status.INTERNAL)
        try:
            verify_rsa2048(data.document, data.rsa2048, certs)
        except SignatureError as exc:
            raise AttestationError(str(exc), Status.INVALID_ARGUMENT) from None
        return doc

    def _describe(self, doc: iid.InstanceIdentityDocument) -> tuple[dict[str, Any], Any]:
        try:
            ec2, iam = self.clients.get(doc.account_id, doc.region)
            out = ec2.describe_instances(InstanceIds=[doc.instance_id], Filters=INSTANCE_FILTERS)
        except Exception as exc:  # botocore's errors: the service refused or could not be reached
            raise AttestationError(f"failed to describe instance: {aws_session.error_message(exc)}",
                                   Status.INTERNAL) from None
        reservations = out.get("Reservations") or []
        if not reservations:
            raise AttestationError("failed to query AWS via describe-instances: returned no reservations",
                                   Status.INTERNAL)
        instances = reservations[0].get("Instances") or []
        if not instances:
            raise AttestationError("failed to query AWS via describe-instances: returned no instances",
                                   Status.INTERNAL)
        instance = instances[0]
        if reservations[0].get("OwnerId") != doc.account_id or instance.get("InstanceId") != doc.instance_id:
            raise AttestationError(f'instance "{doc.instance_id}" is not owned by account "{doc.account_id}"')
        return instance, iam

    def _iam_roles(self, instance: dict[str, Any], iam: Any) -> set[str]:
        profile = instance.get("IamInstanceProfile") or {}
        if self.settings.disable_instance_profile_selectors or not profile.get("Arn"):
            return set()
        name = instance_profile_name(profile["Arn"])
        try:
            out = iam.get_instance_profile(InstanceProfileName=name)
        except Exception as exc:
            raise AttestationError(f"failed to get intance profile: {aws_session.error_message(exc)}",
                                   Status.INTERNAL) from None
        return {f'iamrole:{r["Arn"]}' for r in out.get("InstanceProfile", {}).get("Roles", []) if r.get("Arn")}

    def _check_membership(self, doc: iid.InstanceIdentityDocument) -> None:
        if self.organization is not None:
            try:
                member = self.organization.is_member(doc.account_id)
            except membership.MembershipError as exc:
                raise AttestationError(f"failed aws ec2 attestation, issue while verifying if nodes account id: "
                                       f"{doc.account_id} belong to org: {exc}", Status.INTERNAL) from None
            if not member:
                raise AttestationError(f"failed aws ec2 attestation, nodes account id: {doc.account_id} is not part "
                                       "of configured organization or doesn't have ACTIVE status", Status.INTERNAL)
        if self.eks is not None:
            try:
                member = self.eks.is_member(doc.account_id, doc.region, doc.instance_id)
            except membership.MembershipError as exc:
                raise AttestationError(f"failed aws eks attestation, issue while verifying if nodes id: "
                                       f"{doc.instance_id} belong to cluster: {exc}", Status.INTERNAL) from None
            if not member:
                raise AttestationError(f"failed aws eks attestation, nodes id: {doc.instance_id} is not part of "
                                       "configured EKS cluster", Status.INTERNAL)

    async def attest(self, payload: bytes, challenge: Challenge) -> AttestResult:
        doc = self.verify(payload)
        if self.organization is not None or self.eks is not None:
            await asyncio.to_thread(self._check_membership, doc)
        instance, iam = await asyncio.to_thread(self._describe, doc)
        s = self.settings
        if not s.skip_block_device and doc.account_id not in s.local_accounts:
            try:
                check_block_device(instance)
            except (ValueError, KeyError, TypeError) as exc:
                raise AttestationError(f"failed aws ec2 attestation: {exc}", Status.INTERNAL) from None
        tags = {t["Key"]: t["Value"] for t in instance.get("Tags", []) if "Key" in t and "Value" in t}
        data = {"InstanceID": doc.instance_id, "AccountID": doc.account_id, "Region": doc.region,
                "PluginName": iid.PLUGIN_NAME, "TrustDomain": "", "Tags": tags}
        try:
            agent_id = make_agent_id(self.trust_domain, s.template, data)
        except TemplateError as exc:
            raise AttestationError(f"failed to create spiffe ID: {exc}", Status.INTERNAL) from None
        await self._assess_tofu(str(agent_id))
        values = document_selectors(doc) | instance_selectors(instance)
        values |= await asyncio.to_thread(self._iam_roles, instance, iam)
        selectors = [Selector(iid.SELECTOR_TYPE, v) for v in sorted(values)]
        return AttestResult(agent_id, selectors, can_reattest=False)

    async def _assess_tofu(self, agent_id: str) -> None:
        """Trust on first use: the document is readable by anything on the instance, so it
        attests once; an operator evicts the agent to let it attest again."""
        if self.datastore is None:
            raise AttestationError("failed to check attestation history: no datastore", Status.INTERNAL)
        node = await asyncio.to_thread(self.datastore.fetch_attested_node, agent_id)
        if node is not None:
            _log.error("Attestation data has already been used to attest an agent",
                       extra=log.fields(spiffe_id=agent_id))
            raise AttestationError("attestation data has already been used to attest an agent")
