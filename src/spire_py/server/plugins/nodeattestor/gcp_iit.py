"""NodeAttestor "gcp_iit" (server): Compute Engine instances by their instance identity token.

As SPIRE's plugin: the payload is an RS256 JWT that must verify against Google's
token-signing certificates (``gcp_iit_google.py``) with google-auth, be unexpired (one
minute of leeway, as go-jose) and carry the audience ``spire-gcp-node-attestor``; its
project must be in ``projectid_allow_list``. Trust on first use: an agent ID already
attested is refused until the agent is evicted (the token is readable by anything on the
instance).

Agent ID: ``agent_path_template`` (default ``/gcp_iit/<project>/<instance id>``).
Selectors (type ``gcp_iit``): ``project-id:``, ``zone:``, ``instance-name:``, ``sa:``;
with ``use_instance_metadata`` the Compute API's instance adds ``tag:<tag>``,
``label:<key>:<value>`` (keys in ``allowed_label_keys``) and ``metadata:<key>:<value>``
(keys in ``allowed_metadata_keys``; a longer value than ``max_metadata_value_size``
fails attestation).
"""

from __future__ import annotations

import asyncio
import json
from dataclasses import dataclass
from typing import Any, Optional

from grpclib.const import Status

from ....common import log
from ....common.plugin import (
    BOOL, INT, STR, STR_LIST, Field, PluginConfigError, PluginContext, Schema, register,
)
from ....common.plugins import gcp_iit as iit
from ....common.plugins.agentpathtemplate import AgentPathTemplate, TemplateError, make_agent_id
from ....common.registration import Selector
from ....common.spiffeid import TrustDomain
from ...datastore.api import DataStore
from ..context import datastore_of
from .base import AttestationError, AttestResult, Challenge, NodeAttestor
from .gcp_iit_google import ComputeClient, GoogleAPIError, GoogleCertificates

_log = log.get("nodeattestor.gcp_iit")

DEFAULT_MAX_METADATA_VALUE_SIZE = 128
# go-jose's jwt.Validate allows one minute of clock skew on exp/nbf/iat.
LEEWAY_SECONDS = 60
# google-auth checks the signature first; these words name a claim it refused afterwards.
_CLAIM_ERRORS = ("expired", "too early", "audience", "required claim")


@dataclass
class GCPIITConfig:
    projectid_allow_list: list[str]
    use_instance_metadata: bool
    service_account_file: str
    allowed_label_keys: list[str]
    allowed_metadata_keys: list[str]
    max_metadata_value_size: int
    agent_path_template: str


@dataclass
class GCPIITSettings:
    projects: frozenset[str]
    use_instance_metadata: bool
    service_account_file: str
    label_keys: frozenset[str]
    metadata_keys: frozenset[str]
    max_metadata_value_size: int
    template: AgentPathTemplate


def resolve(config: GCPIITConfig) -> GCPIITSettings:
    """Check the config across keys; reads the service account file, never connects."""
    if not config.projectid_allow_list:
        raise PluginConfigError("projectid_allow_list is required", "projectid_allow_list")
    text = config.agent_path_template or iit.DEFAULT_AGENT_PATH_TEMPLATE
    try:
        template = AgentPathTemplate.parse(text)
    except TemplateError:
        raise PluginConfigError(f'failed to parse agent path template: "{text}"', "agent_path_template") from None
    if config.max_metadata_value_size < 0:
        raise PluginConfigError("max_metadata_value_size must not be negative", "max_metadata_value_size")
    if config.service_account_file:
        try:
            from google.oauth2 import service_account

            service_account.Credentials.from_service_account_file(config.service_account_file)
        except (OSError, ValueError) as exc:
            raise PluginConfigError(f'unable to load service account file "{config.service_account_file}": '
                                    f'{getattr(exc, "strerror", None) or exc}', "service_account_file") from None
    return GCPIITSettings(
        projects=frozenset(config.projectid_allow_list),
        use_instance_metadata=config.use_instance_metadata,
        service_account_file=config.service_account_file,
        label_keys=frozenset(config.allowed_label_keys),
        metadata_keys=frozenset(config.allowed_metadata_keys),
        max_metadata_value_size=config.max_metadata_value_size or DEFAULT_MAX_METADATA_VALUE_SIZE,
        template=template,
    )


def instance_selectors(instance: dict[str, Any], s: GCPIITSettings) -> list[str]:
    """tag, label and metadata selector values of a Compute API instance (SPIRE's order)."""
    values: list[str] = []
    metadata: list[str] = []
    for item in (instance.get("metadata") or {}).get("items") or []:
        key = item.get("key", "")
        if key not in s.metadata_keys:
            continue
        value = item.get("value")
        value = "" if value is None else str(value)
        if len(value) > s.max_metadata_value_size:
            raise AttestationError(f'metadata "{key}" exceeded value limit ({len(value)} > '
                                   f'{s.max_metadata_value_size})', Status.INTERNAL)
        metadata.append(f"metadata:{key}:{value}")
    for tag in (instance.get("tags") or {}).get("items") or []:
        values.append(f"tag:{tag}")
    for key, value in sorted((instance.get("labels") or {}).items()):
        if key in s.label_keys:
            values.append(f"label:{key}:{value}")
    return values + metadata


@register("server")
class GCPIITAttestor(NodeAttestor):
    NAME = iit.PLUGIN_NAME
    CONFIG = Schema([
        Field("projectid_allow_list", STR_LIST),
        Field("use_instance_metadata", BOOL, default=False),
        Field("service_account_file", STR, default=""),
        Field("allowed_label_keys", STR_LIST),
        Field("allowed_metadata_keys", STR_LIST),
        Field("max_metadata_value_size", INT, default=0),
        Field("agent_path_template", STR, default=""),
    ])
    CONFIG_TYPE = GCPIITConfig

    def __init__(self, trust_domain: TrustDomain, settings: GCPIITSettings, datastore: Optional[DataStore] = None,
                 certificates: Optional[GoogleCertificates] = None, compute: Optional[ComputeClient] = None) -> None:
        self.trust_domain = trust_domain
        self.settings = settings
        self.datastore = datastore
        self.certificates = certificates or GoogleCertificates()
        self.compute = compute or ComputeClient(settings.service_account_file)

    @classmethod
    def validate(cls, config: GCPIITConfig, ctx: PluginContext) -> None:
        resolve(config)

    @classmethod
    def from_config(cls, config: GCPIITConfig, ctx: PluginContext) -> "GCPIITAttestor":
        return cls(TrustDomain(ctx.trust_domain), resolve(config), datastore_of(ctx))

    def verify(self, payload: bytes) -> iit.IdentityToken:
        """The token's claims once its signature, expiry and audience verified."""
        import google.auth.exceptions
        from google.auth import jwt

        try:
            certs = self.certificates.get()
        except GoogleAPIError as exc:
            raise AttestationError(f"unable to retrieve Google's public keys: {exc}", Status.INTERNAL) from None
        if not payload:
            raise AttestationError("missing attestation payload", Status.INVALID_ARGUMENT)
        if len(payload) > iit.MAX_TOKEN_BYTES:
            raise AttestationError(f"unable to parse the identity token: larger than {iit.MAX_TOKEN_BYTES} bytes",
                                   Status.INVALID_ARGUMENT)
        try:
            token = payload.decode("ascii")
            header = jwt.decode_header(token)
        except (UnicodeDecodeError, ValueError) as exc:
            raise AttestationError(f"unable to parse the identity token: {exc}", Status.INVALID_ARGUMENT) from None
        if header.get("alg") != "RS256":
            raise AttestationError(f'unable to parse the identity token: unexpected signature algorithm '
                                   f'"{header.get("alg")}"; expected ["RS256"]', Status.INVALID_ARGUMENT)
        try:
            claims = jwt.decode(token, certs=certs, audience=iit.AUDIENCE, clock_skew_in_seconds=LEEWAY_SECONDS)
        except (ValueError, google.auth.exceptions.GoogleAuthError) as exc:
            if any(word in str(exc) for word in _CLAIM_ERRORS):
                raise AttestationError(f"failed to validate the identity token claims: {exc}") from None
            raise AttestationError(f"failed to validate the identity token signature: {exc}",
                                   Status.INVALID_ARGUMENT) from None
        try:
            return iit.parse_claims(claims)
        except iit.GCPIITError as exc:
            raise AttestationError(f"failed to validate the identity token claims: {exc}") from None

    async def attest(self, payload: bytes, challenge: Challenge) -> AttestResult:
        token = await asyncio.to_thread(self.verify, payload)
        s = self.settings
        ce = token.compute_engine
        if ce.project_id not in s.projects:
            raise AttestationError(f"identity token project ID {json.dumps(ce.project_id)} is not in the allow list")
        try:
            agent_id = make_agent_id(self.trust_domain, s.template, iit.agent_path_data(token))
        except TemplateError as exc:
            raise AttestationError(f"failed to create agent ID: {exc}", Status.INTERNAL) from None
        await self._assess_tofu(str(agent_id))
        values = [f"project-id:{ce.project_id}", f"zone:{ce.zone}", f"instance-name:{ce.instance_name}",
                  f"sa:{token.email}"]
        if s.use_instance_metadata:
            try:
                instance = await asyncio.to_thread(self.compute.instance, ce.project_id, ce.zone, ce.instance_name)
            except GoogleAPIError as exc:
                raise AttestationError(f"failed to fetch instance metadata: {exc}", Status.INTERNAL) from None
            if str(instance.get("id", "")) != ce.instance_id:
                # Beyond SPIRE: a name reused by a newer instance is not the one the token names.
                raise AttestationError(f'failed to fetch instance metadata: instance "{ce.instance_name}" has ID '
                                       f'"{instance.get("id", "")}", the token names "{ce.instance_id}"',
                                       Status.INTERNAL)
            values += instance_selectors(instance, s)
        selectors = [Selector(iit.SELECTOR_TYPE, v) for v in values]
        return AttestResult(agent_id, selectors, can_reattest=False)

    async def _assess_tofu(self, agent_id: str) -> None:
        """Trust on first use: one attestation per instance; an operator evicts the agent to allow another."""
        if self.datastore is None:
            raise AttestationError("failed to check attestation history: no datastore", Status.INTERNAL)
        node = await asyncio.to_thread(self.datastore.fetch_attested_node, agent_id)
        if node is not None:
            _log.error("Attestation data has already been used to attest an agent",
                       extra=log.fields(spiffe_id=agent_id))
            raise AttestationError("attestation data has already been used to attest an agent")
