"""NodeAttestor "azure_msi" (server): Azure VMs by a managed-identity access token.

As SPIRE's plugin: ``tenants`` maps each authorized tenant ID to its ``resource_id`` (the
audience its agents request; default ``https://management.azure.com/``, a custom one per
tenant must match the agents' ``resource_id``) and optional app credentials
(``subscription_id``, ``app_id``, ``app_secret``: all three or none). The token (RS256
and SPIRE's other RSA/EC algorithms) must verify against the signing keys of the
tenant named by its ``tid`` (``azure_msi_arm.TenantKeys``), with that tenant's audience
and five minutes of leeway on ``exp``/``nbf``. Trust on first use: an agent ID already
attested is refused until the agent is evicted.

Agent ID: ``agent_path_template`` (default ``/azure_msi/<tenant>/<principal>``).
Selectors (type ``azure_msi``), resolved through Resource Manager with the tenant's app
credentials or, without them, the server VM's managed identity and subscription (read
from IMDS at start, as SPIRE): ``subscription-id:``, ``vm-name:<group>:<name>``,
``network-security-group:<group>:<name>``, ``virtual-network:<group>:<vnet>``,
``virtual-network-subnet:<group>:<vnet>:<subnet>``.

Beyond SPIRE: the tenant is checked against the token's unverified ``tid`` before any key
is fetched (an unknown tenant costs no request), the issuer must be that tenant's
(``https://sts.windows.net/<tid>/`` or ``https://login.microsoftonline.com/<tid>/v2.0``),
and the claims are checked before the attestation history is.
"""

from __future__ import annotations

import asyncio
import re
from dataclasses import dataclass
from typing import Any, Optional

import jwt
from grpclib.const import Status

from ....common import log
from ....common.plugin import STR, Ctx, Field, KeyPath, Kind, PluginConfigError, PluginContext, Schema, register
from ....common.plugins import azure_msi as msi
from ....common.plugins.agentpathtemplate import AgentPathTemplate, TemplateError, make_agent_id
from ....common.registration import Selector
from ....common.spiffeid import TrustDomain
from ...datastore.api import DataStore
from ..context import datastore_of
from .azure_msi_arm import (
    AppCredential, ARMClient, AzureAPIError, ManagedIdentityCredential, TenantKeys,
)
from .base import AttestationError, AttestResult, Challenge, NodeAttestor

_log = log.get("nodeattestor.azure_msi")

# MSI tokens carry nbf; allow for clock differences between agent and server (SPIRE: 5 min).
LEEWAY_SECONDS = 300
ALGORITHMS = ["RS256", "RS384", "RS512", "ES256", "ES384", "ES512", "PS256", "PS384", "PS512"]
TENANT_KEYS = ("resource_id", "subscription_id", "app_id", "app_secret")

_RG = r"^/subscriptions/[^/]+/resourceGroups/([^/]+)/providers/"
RE_VM = re.compile(_RG + r"Microsoft\.Compute/virtualMachines/([^/]+)$")
RE_NSG = re.compile(_RG + r"Microsoft\.Network/networkSecurityGroups/([^/]+)$")
RE_NIC = re.compile(_RG + r"Microsoft\.Network/networkInterfaces/([^/]+)$")
RE_SUBNET = re.compile(_RG + r"Microsoft\.Network/virtualNetworks/([^/]+)/subnets/([^/]+)$")


@dataclass(frozen=True)
class Tenant:
    resource_id: str
    subscription_id: str
    app_id: str
    app_secret: str


class _Tenants(Kind):
    """``tenants = { "<tenant id>" = { resource_id = ... } }`` (HCL may hand over a list of blocks)."""

    name = "map of tenant ID to tenant block"

    def convert(self, ctx: Ctx, path: KeyPath, value: Any) -> Any:
        blocks = value if isinstance(value, list) else [value]
        tenants: dict[str, Tenant] = {}
        for block in blocks:
            if not isinstance(block, dict):
                raise ctx.error(path, "expected a map of tenant ID to tenant block")
            for tenant_id, body in block.items():
                where = list(path) + [tenant_id]
                if isinstance(body, list) and all(isinstance(b, dict) for b in body):
                    body = {k: v for b in body for k, v in b.items()}
                if not isinstance(body, dict):
                    raise ctx.error(where, "expected a tenant block { ... }")
                for key, v in body.items():
                    if key == "use_msi":
                        raise ctx.error(where + [key], "use_msi was removed from SPIRE's azure_msi: without app "
                                                       "credentials the server's managed identity is used")
                    if key not in TENANT_KEYS:
                        raise ctx.error(where + [key], f'unknown key "{key}"; known keys: {", ".join(TENANT_KEYS)}')
                    if not isinstance(v, (str, int)) or isinstance(v, bool):
                        raise ctx.error(where + [key], f"{key} must be a string")
                tenants[tenant_id] = Tenant(*(str(body.get(k, "")) for k in TENANT_KEYS))
        return tenants

    def empty(self, ctx: Ctx, path: KeyPath) -> Any:
        return {}


@dataclass
class AzureMSIConfig:
    tenants: dict[str, Tenant]
    agent_path_template: str


def resolve(config: AzureMSIConfig) -> tuple[dict[str, Tenant], AgentPathTemplate]:
    """Check the config across keys; never connects."""
    if not config.tenants:
        raise PluginConfigError("configuration must have at least one tenant", "tenants")
    tenants: dict[str, Tenant] = {}
    for tenant_id, t in config.tenants.items():
        key = f"tenants.{tenant_id}"
        if not tenant_id.strip():
            raise PluginConfigError("tenant ID must not be empty", key)
        if t.subscription_id or t.app_id or t.app_secret:
            for value, what in ((t.subscription_id, "subscription id"), (t.app_id, "app id"),
                                (t.app_secret, "app secret")):
                if not value:
                    raise PluginConfigError(f'misconfigured tenant "{tenant_id}": missing {what}', key)
        tenants[tenant_id] = Tenant(t.resource_id or msi.DEFAULT_RESOURCE_ID, t.subscription_id, t.app_id,
                                    t.app_secret)
    text = config.agent_path_template or msi.DEFAULT_AGENT_PATH_TEMPLATE
    try:
        template = AgentPathTemplate.parse(text)
    except TemplateError:
        raise PluginConfigError(f'failed to parse agent path template: "{text}"', "agent_path_template") from None
    return tenants, template


def _match(regex: re.Pattern[str], what: str, rid: str) -> tuple[str, ...]:
    m = regex.match(rid)
    if not m:
        raise AttestationError(f'malformed {what} ID "{rid}"', Status.INTERNAL)
    return m.groups()


def network_interface_selectors(nic: dict[str, Any]) -> list[str]:
    props = nic.get("properties") or {}
    values = []
    nsg = (props.get("networkSecurityGroup") or {}).get("id")
    if nsg:
        values.append("network-security-group:" + ":".join(_match(RE_NSG, "network security group", nsg)))
    for ipc in props.get("ipConfigurations") or []:
        subnet = ((ipc.get("properties") or {}).get("subnet") or {}).get("id")
        if subnet:
            group, vnet, name = _match(RE_SUBNET, "virtual network subnet", subnet)
            values += [f"virtual-network:{group}:{vnet}", f"virtual-network-subnet:{group}:{vnet}:{name}"]
    return values


def resolve_selectors(client: ARMClient, principal_id: str) -> list[str]:
    """SPIRE's resolve: the VM of the principal, then its interfaces' NSGs and subnets."""
    try:
        vm_id = client.virtual_machine_resource_id(principal_id)
    except AzureAPIError as exc:
        raise AttestationError(f'unable to get resource for principal "{principal_id}": {exc}',
                               Status.INTERNAL) from None
    group, name = _match(RE_VM, "virtual machine", vm_id)
    values = {f"subscription-id:{client.subscription_id}", f"vm-name:{group}:{name}"}
    try:
        vm = client.virtual_machine(group, name)
    except AzureAPIError as exc:
        raise AttestationError(f'unable to get virtual machine "{group}:{name}": {exc}', Status.INTERNAL) from None
    profile = (vm.get("properties") or {}).get("networkProfile") or {}
    for ref in profile.get("networkInterfaces") or []:
        if not ref.get("id"):
            continue
        nic_group, nic_name = _match(RE_NIC, "network interface", ref["id"])
        try:
            nic = client.network_interface(nic_group, nic_name)
        except AzureAPIError as exc:
            raise AttestationError(f'unable to get network interface "{nic_group}:{nic_name}": {exc}',
                                   Status.INTERNAL) from None
        values.update(network_interface_selectors(nic))
    return sorted(values)


def _issuers(tenant_id: str) -> tuple[str, str]:
    return f"https://sts.windows.net/{tenant_id}/", f"https://login.microsoftonline.com/{tenant_id}/v2.0"


@register("server")
class AzureMSIAttestor(NodeAttestor):
    NAME = msi.PLUGIN_NAME
    CONFIG = Schema([
        Field("tenants", _Tenants()),
        Field("agent_path_template", STR, default=""),
    ])
    CONFIG_TYPE = AzureMSIConfig

    def __init__(self, trust_domain: TrustDomain, tenants: dict[str, Tenant], template: AgentPathTemplate,
                 clients: dict[str, ARMClient], datastore: Optional[DataStore] = None) -> None:
        self.trust_domain = trust_domain
        self.tenants = tenants
        self.template = template
        self.clients = clients
        self.datastore = datastore
        self.keys = {tenant_id: TenantKeys(tenant_id) for tenant_id in tenants}

    @classmethod
    def validate(cls, config: AzureMSIConfig, ctx: PluginContext) -> None:
        resolve(config)

    @classmethod
    def from_config(cls, config: AzureMSIConfig, ctx: PluginContext) -> "AzureMSIAttestor":
        tenants, template = resolve(config)
        clients: dict[str, ARMClient] = {}
        vm_identity: Optional[tuple[str, ManagedIdentityCredential]] = None
        for tenant_id, t in tenants.items():
            if t.app_id:
                clients[tenant_id] = ARMClient(t.subscription_id, AppCredential(tenant_id, t.app_id, t.app_secret))
                continue
            if vm_identity is None:
                # As SPIRE: without app credentials, the server's own VM (subscription, identity) resolves.
                imds = msi.IMDSClient(timeout=5.0)
                try:
                    vm_identity = (imds.instance_metadata().subscription_id, ManagedIdentityCredential(imds))
                except msi.AzureMSIError as exc:
                    raise PluginConfigError(f'tenant "{tenant_id}" has no app credentials and the instance metadata '
                                            f'service cannot be read: {exc}', f"tenants.{tenant_id}") from None
            clients[tenant_id] = ARMClient(*vm_identity)
        return cls(TrustDomain(ctx.trust_domain), tenants, template, clients, datastore_of(ctx))

    def verify(self, payload: bytes) -> dict[str, Any]:
        """The token's claims once its tenant, signature, audience, issuer and times verified."""
        if not payload:
            raise AttestationError("missing attestation payload", Status.INVALID_ARGUMENT)
        try:
            token = msi.unmarshal_attestation_data(payload)
        except msi.AzureMSIError as exc:
            raise AttestationError(str(exc), Status.INVALID_ARGUMENT) from None
        try:
            header = jwt.get_unverified_header(token)
            unverified = jwt.decode(token, options={"verify_signature": False})
        except jwt.PyJWTError as exc:
            raise AttestationError(f"unable to parse token: {exc}", Status.INVALID_ARGUMENT) from None
        if header.get("alg") not in ALGORITHMS:
            raise AttestationError(f'unable to parse token: unexpected signature algorithm "{header.get("alg")}"',
                                   Status.INVALID_ARGUMENT)
        kid = header.get("kid")
        if not isinstance(kid, str) or not kid:
            raise AttestationError("token missing key id", Status.INVALID_ARGUMENT)
        tenant_id = unverified.get("tid")
        if not isinstance(tenant_id, str) or not tenant_id:
            raise AttestationError("token missing tenant ID claim", Status.INTERNAL)
        tenant = self.tenants.get(tenant_id)
        if tenant is None:
            raise AttestationError(f'tenant "{tenant_id}" is not authorized')
        try:
            jwk = self.keys[tenant_id].key(kid)
        except AzureAPIError as exc:
            raise AttestationError(f"unable to obtain JWKS: {exc}", Status.INTERNAL) from None
        if jwk is None:
            raise AttestationError(f'key id "{kid}" not found', Status.INVALID_ARGUMENT)
        try:
            key = jwt.PyJWK.from_dict(jwk).key
        except jwt.PyJWTError as exc:
            raise AttestationError(f'unable to use key id "{kid}": {exc}', Status.INTERNAL) from None
        try:
            claims: dict[str, Any] = jwt.decode(token, key, algorithms=[header["alg"]],
                                                options={"verify_aud": False, "verify_exp": False,
                                                         "verify_nbf": False, "verify_iat": False})
        except jwt.PyJWTError as exc:
            raise AttestationError(f"unable to verify token: {exc}", Status.INVALID_ARGUMENT) from None
        try:
            jwt.decode(token, key, algorithms=[header["alg"]], audience=tenant.resource_id, leeway=LEEWAY_SECONDS,
                       options={"require": ["exp"]})
        except jwt.PyJWTError as exc:
            raise AttestationError(f"unable to validate token claims: {exc}", Status.INTERNAL) from None
        if claims.get("tid") != tenant_id:
            raise AttestationError("token missing tenant ID claim", Status.INTERNAL)
        if claims.get("iss") not in _issuers(tenant_id):
            raise AttestationError(f'unable to validate token claims: issuer "{claims.get("iss")}" is not tenant '
                                   f'"{tenant_id}"', Status.INTERNAL)
        if not isinstance(claims.get("sub"), str) or not claims["sub"]:
            raise AttestationError("token missing subject claim", Status.INTERNAL)
        return claims

    async def attest(self, payload: bytes, challenge: Challenge) -> AttestResult:
        claims = await asyncio.to_thread(self.verify, payload)
        try:
            agent_id = make_agent_id(self.trust_domain, self.template, msi.agent_path_data(claims))
        except TemplateError as exc:
            raise AttestationError(f"unable to make agent ID: {exc}", Status.INTERNAL) from None
        await self._assess_tofu(str(agent_id))
        values = await asyncio.to_thread(resolve_selectors, self.clients[claims["tid"]], claims["sub"])
        return AttestResult(agent_id, [Selector(msi.SELECTOR_TYPE, v) for v in values], can_reattest=False)

    async def _assess_tofu(self, agent_id: str) -> None:
        """Trust on first use: the token is readable by anything on the VM, so it attests once."""
        if self.datastore is None:
            raise AttestationError("failed to check attestation history: no datastore", Status.INTERNAL)
        node = await asyncio.to_thread(self.datastore.fetch_attested_node, agent_id)
        if node is not None:
            _log.error("Attestation data has already been used to attest an agent",
                       extra=log.fields(spiffe_id=agent_id))
            raise AttestationError("attestation data has already been used to attest an agent")
