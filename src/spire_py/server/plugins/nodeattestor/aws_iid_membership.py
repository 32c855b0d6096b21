"""aws_iid's two membership checks, as SPIRE's: ``verify_organization`` (the document's
account is an ACTIVE account of an AWS Organization) and ``validate_eks_cluster_membership``
(the instance is in an Auto Scaling group of a node group of a named EKS cluster).

Both keep the member set in memory for a TTL (organization: ``org_account_map_ttl``,
default 3m, at least 1m; EKS: 30 s). A miss on a fresh list is final; a miss on a cached
list reloads it, at most 5 times per TTL (SPIRE's burst guard: a stream of unknown
accounts cannot turn into a stream of ListAccounts calls). The account list may come
from ``account_list_file`` (a JSON array of 12-digit IDs) instead of the API: read and
checked at configuration, re-read after the TTL, fail closed when it turns unreadable.
"""

from __future__ import annotations

import json
import re
import threading
import time
from dataclasses import dataclass
from typing import Any, Callable, Optional

from ....common import log
from ....common.duration import DurationError, parse_duration
from ....common.errors import SpireError
from ....common.plugin import PluginConfigError
from ....common.plugins import aws_session

_log = log.get("nodeattestor.aws_iid")

ORG_DEFAULT_TTL, ORG_MIN_TTL, EKS_TTL = 180.0, 60.0, 30.0
RETRIES = 5
ORG_DEFAULT_REGION = "us-west-2"
_ACCOUNT_ID = re.compile(r"[0-9]{12}")
MAX_ACCOUNT_LIST_BYTES = 16 * 1024 * 1024
_BLOCK = "verify_organization"


class MembershipError(SpireError):
    """The member list could not be loaded (the API refused, the file went bad)."""


@dataclass(frozen=True)
class OrgSettings:
    account_id: str
    role: str
    region: str
    ttl: float
    account_list_file: str


def parse_account_list_file(path: str) -> set[str]:
    try:
        with open(path, "rb") as f:
            data = f.read(MAX_ACCOUNT_LIST_BYTES + 1)
    except OSError as exc:
        raise MembershipError(f"unable to read account list file: {exc.strerror or exc}") from None
    if len(data) > MAX_ACCOUNT_LIST_BYTES:
        raise MembershipError(f"unable to read account list file: larger than {MAX_ACCOUNT_LIST_BYTES} bytes")
    try:
        ids = json.loads(data)
    except ValueError as exc:
        raise MembershipError(f'unable to parse account list file "{path}", expected a JSON array of account IDs: '
                              f"{exc}") from None
    if not isinstance(ids, list):
        raise MembershipError(f'unable to parse account list file "{path}", expected a JSON array of account IDs')
    for acc in ids:
        if not isinstance(acc, str) or not _ACCOUNT_ID.fullmatch(acc):
            shown = acc if isinstance(acc, str) else json.dumps(acc)
            raise MembershipError(f'invalid account id "{shown[:64]}" in account list file "{path}", expected a '
                                  "12-digit AWS account id")
    return set(ids)


def org_settings(block: dict[str, Any]) -> OrgSettings:
    """SPIRE's validateOrganizationConfig: the block's keys across each other."""
    list_file = str(block.get("account_list_file") or "")
    account, role = str(block.get("management_account_id") or ""), str(block.get("assume_org_role") or "")
    if list_file:
        if account or role:
            raise PluginConfigError('"account_list_file" is mutually exclusive with "management_account_id" and '
                                    f'"assume_org_role" in the block: "{_BLOCK}"', _BLOCK)
        try:
            parse_account_list_file(list_file)
        except MembershipError as exc:
            raise PluginConfigError(f'invalid "account_list_file" in the block: "{_BLOCK}": {exc}', _BLOCK) from None
    elif not account or not role:
        raise PluginConfigError('please ensure that "management_account_id" & "assume_org_role" are present inside '
                                f'block or remove the block: "{_BLOCK}" for feature node attestation using account '
                                "id verification", _BLOCK)
    ttl = ORG_DEFAULT_TTL
    text = block.get("org_account_map_ttl")
    if text not in (None, ""):
        try:
            ttl = float(parse_duration(str(text)))
        except DurationError:
            raise PluginConfigError(
                'please ensure that "org_account_map_ttl" if configured, it should be in duration and is suffixed '
                "with required 'm' for time duration in minute ex. '5m'. Otherwise, remove the: "
                f'"org_account_map_ttl", in the block: "{_BLOCK}". Default TTL will be: "3m"', _BLOCK) from None
        if ttl < ORG_MIN_TTL:
            raise PluginConfigError(
                'please ensure that "org_account_map_ttl" if configured, it should be greater than or equal to '
                f'"1m". Otherwise remove the: "org_account_map_ttl", in the block: "{_BLOCK}". Default TTL will '
                'be: "3m"', _BLOCK)
    region = str(block.get("management_account_region") or ORG_DEFAULT_REGION)
    return OrgSettings(account, role, region, ttl, list_file)


class MemberSet:
    """A member list cached for ``ttl`` seconds, reloaded on a miss at most ``RETRIES``
    times per TTL. ``load`` blocks (AWS calls or a file read)."""

    def __init__(self, load: Callable[[], set[str]], ttl: float, clock: Callable[[], float] = time.monotonic) -> None:
        self._load = load
        self._ttl = ttl
        self._clock = clock
        self._lock = threading.Lock()
        self._members: set[str] = set()
        self._valid_until: Optional[float] = None
        self._retries = RETRIES

    def contains(self, member: str) -> bool:
        with self._lock:
            fresh = False
            if self._valid_until is None or self._clock() > self._valid_until:
                self._members = self._load()
                self._valid_until = self._clock() + self._ttl
                self._retries = RETRIES
                fresh = True
            if member in self._members or fresh:
                return member in self._members
            if self._retries <= 0:
                return False
            self._retries -= 1
            self._members = self._load()  # a member added since the last load (SPIRE's refreshCache)
            return member in self._members


class OrganizationValidator:
    def __init__(self, settings: OrgSettings, access_key_id: str, secret_access_key: str, partition: str) -> None:
        self.settings = settings
        self._creds = (access_key_id, secret_access_key)
        self._partition = partition
        self._client: Any = None
        self.accounts = MemberSet(self._load, settings.ttl)

    def _load(self) -> set[str]:
        s = self.settings
        if s.account_list_file:
            listed = parse_account_list_file(s.account_list_file)
            if not listed:
                _log.warning("org account list file is empty; all accounts will fail organization validation",
                             extra=log.fields(account_list_file=s.account_list_file))
            return listed
        try:
            if self._client is None:
                role = f"arn:{self._partition}:iam::{s.account_id}:role/{s.role}"
                session = aws_session.new_session(s.region, *self._creds, assume_role_arn=role)
                self._client = aws_session.client(session, "organizations", s.region)
            accounts: set[str] = set()
            for page in self._client.get_paginator("list_accounts").paginate():
                accounts |= {a["Id"] for a in page.get("Accounts", []) if a.get("Status") == "ACTIVE"}
            return accounts
        except Exception as exc:  # botocore's errors
            raise MembershipError(f"issue while getting list of accounts: {aws_session.error_message(exc)}") from None

    def is_member(self, account_id: str) -> bool:
        return self.accounts.contains(account_id)


class EKSValidator:
    """Instances of the node groups of ``cluster_names``, per account and region (the
    document's; the EKS and Auto Scaling clients are the instance's account's)."""

    def __init__(self, cluster_names: list[str], clients: Callable[[str, str], tuple[Any, Any]]) -> None:
        self.cluster_names = cluster_names
        self._clients = clients
        self._lock = threading.Lock()
        self._sets: dict[tuple[str, str], MemberSet] = {}

    def is_member(self, account: str, region: str, instance_id: str) -> bool:
        with self._lock:
            members = self._sets.get((account, region))
            if members is None:
                members = self._sets[(account, region)] = MemberSet(lambda: self._load(account, region), EKS_TTL)
        return members.contains(instance_id)

    def _load(self, account: str, region: str) -> set[str]:
        eks, autoscaling = self._clients(account, region)
        instances: set[str] = set()
        try:
            for cluster in self.cluster_names:
                for page in eks.get_paginator("list_nodegroups").paginate(clusterName=cluster):
                    for group in page.get("nodegroups", []):
                        described = eks.describe_nodegroup(clusterName=cluster, nodegroupName=group)
                        asgs = [g["name"] for g in ((described.get("nodegroup") or {}).get("resources") or {})
                                .get("autoScalingGroups", []) if g.get("name")]
                        if not asgs:
                            continue
                        for out in autoscaling.get_paginator("describe_auto_scaling_groups").paginate(
                                AutoScalingGroupNames=asgs):
                            for asg in out.get("AutoScalingGroups", []):
                                instances |= {i["InstanceId"] for i in asg.get("Instances", []) if i.get("InstanceId")}
        except Exception as exc:  # botocore's errors
            raise MembershipError(f"issue while getting list of EKS Nodegroups: {aws_session.error_message(exc)}") \
                from None
        return instances
