"""azure_msi (server): config refusals (tenants, custom resource IDs, app credentials), and
attestation against a loopback Azure (tenant OpenID keys, IMDS, Resource Manager): real
signature verification."""

from __future__ import annotations

import uuid
from typing import Any, Iterator, Optional

import pytest
from grpclib.const import Status

from spire_py.common import plugin as registry
from spire_py.common.plugin import PluginConfigError, PluginContext
from spire_py.common.plugins import azure_msi as msi
from spire_py.server.plugins.context import ServerPluginContext
from spire_py.server.plugins.nodeattestor.azure_msi import AzureMSIAttestor
from spire_py.server.plugins.nodeattestor.base import AttestationError
from tests.integration.helpers.azure import (
    CUSTOM_TENANT, SUBSCRIPTION, TENANT, VM, Azure, TenantSigner, azure_env, msi_claims,
)
from tests.integration.helpers.cloud_http import Loopback, loopback

TD = "example.org"
CTX = PluginContext(TD)
CUSTOM_RESOURCE = "http://example.org/app/"
APP = {"subscription_id": SUBSCRIPTION, "app_id": "app-1", "app_secret": "s3cret"}


class Nodes:
    def __init__(self) -> None:
        self.attested: set[str] = set()

    def fetch_attested_node(self, spiffe_id: str, with_selectors: bool = False) -> Optional[object]:
        return object() if spiffe_id in self.attested else None


@pytest.fixture
def azure(monkeypatch: pytest.MonkeyPatch) -> Iterator[tuple[Azure, Loopback]]:
    cloud = Azure(apps={"app-1": "s3cret"})
    with loopback(cloud.route) as lb:
        cloud.url = lb.url
        for name, value in azure_env(lb).items():
            monkeypatch.setenv(name, value)
        yield cloud, lb


def attestor(nodes: Optional[Nodes] = None, tenants: Optional[dict[str, Any]] = None, **extra: Any) -> AzureMSIAttestor:
    data = {"tenants": tenants or {TENANT: dict(APP), CUSTOM_TENANT: {"resource_id": CUSTOM_RESOURCE, **APP}}, **extra}
    return AzureMSIAttestor.configure(data, ServerPluginContext(TD, datastore=nodes or Nodes()))  # type: ignore[arg-type]


def payload(token: str) -> bytes:
    return msi.marshal_attestation_data(token)


async def no_challenge(_: bytes) -> bytes:
    raise AssertionError("azure_msi does not challenge")


def test_plugin_is_registered_on_both_sides() -> None:
    import spire_py.agent.plugins  # noqa: F401
    import spire_py.server.plugins  # noqa: F401

    assert registry.lookup("server", "NodeAttestor", "azure_msi") is AzureMSIAttestor
    assert registry.lookup("agent", "NodeAttestor", "azure_msi").NAME == "azure_msi"


@pytest.mark.parametrize("data", [
    {"tenants": {"00000000-1111-2222-3333-444444444444": {
        "subscription_id": "SUBSCRIPTION_ID", "app_id": "APP_ID", "app_secret": "APP_SECRET"}}},   # SPIRE's samples
    {"tenants": {"00000000-1111-2222-3333-444444444444": {"resource_id": "http://example.org/app/"}}},
    {"tenants": [{"9E85E111-1103-48FC-A933-9533FE47DE05": {}},
                 {"DD14E835-679A-4703-B4DE-8F00A20C732E": {"resource_id": "http://example.org/app/"}}],
     "agent_path_template": "/{{ .PluginName }}/{{ .TenantID }}/{{ .PrincipalID }}"},
])
def test_spire_sample_configs_validate_without_network(data: dict[str, Any], monkeypatch: pytest.MonkeyPatch) -> None:
    import urllib.request

    import requests

    def refuse(*a: Any, **kw: Any) -> Any:
        raise AssertionError("validate must not connect")

    monkeypatch.setattr(requests.Session, "request", refuse)
    monkeypatch.setattr(urllib.request.OpenerDirector, "open", refuse)
    AzureMSIAttestor.check_config(data, CTX)


@pytest.mark.parametrize("data, key, message", [
    ({}, "tenants", "configuration must have at least one tenant"),
    ({"tenants": {}}, "tenants", "configuration must have at least one tenant"),
    ({"tenants": {TENANT: {"app_id": "a", "app_secret": "s"}}}, f"tenants.{TENANT}",
     f'misconfigured tenant "{TENANT}": missing subscription id'),
    ({"tenants": {TENANT: {"subscription_id": "s", "app_secret": "s"}}}, f"tenants.{TENANT}", "missing app id"),
    ({"tenants": {TENANT: {"subscription_id": "s", "app_id": "a"}}}, f"tenants.{TENANT}", "missing app secret"),
    ({"tenants": {TENANT: {"use_msi": True}}}, f"tenants.{TENANT}.use_msi", "use_msi was removed"),
    ({"tenants": {TENANT: {"resource": "x"}}}, f"tenants.{TENANT}.resource", 'unknown key "resource"'),
    ({"tenants": {TENANT: "x"}}, f"tenants.{TENANT}", "expected a tenant block"),
    ({"tenants": {TENANT: {"resource_id": ["x"]}}}, f"tenants.{TENANT}.resource_id", "must be a string"),
    ({"tenants": "x"}, "tenants", "expected a map of tenant ID"),
    ({"tenants": {TENANT: {}}, "agent_path_template": "{{ .TenantID"}, "agent_path_template",
     "failed to parse agent path template"),
    ({"tenants": {TENANT: {}}, "trust_domain": "x"}, "trust_domain", 'unknown configuration key "trust_domain"'),
])
def test_config_refusals_name_the_key(data: dict[str, Any], key: str, message: str) -> None:
    with pytest.raises(PluginConfigError) as err:
        AzureMSIAttestor.check_config(data, CTX)
    assert err.value.key == key
    assert message in str(err.value)


def test_without_app_credentials_the_server_needs_imds_at_start(monkeypatch: pytest.MonkeyPatch) -> None:
    with loopback() as lb:   # answers 404 to everything: not an Azure VM
        monkeypatch.setenv("AZURE_POD_IDENTITY_AUTHORITY_HOST", lb.url)
        with pytest.raises(PluginConfigError, match="instance metadata service cannot be read") as err:
            attestor(tenants={TENANT: {}})
    assert err.value.key == f"tenants.{TENANT}"


async def test_attestation_gives_the_agent_id_and_vm_selectors(azure: tuple[Azure, Loopback]) -> None:
    cloud, lb = azure
    principal = str(uuid.uuid4())
    cloud.vms[principal] = VM(principal)
    token = cloud.signers[TENANT].sign(msi_claims(TENANT, principal))
    result = await attestor().attest(payload(token), no_challenge)
    assert str(result.agent_id) == f"spiffe://{TD}/spire/agent/azure_msi/{TENANT}/{principal}"
    assert [f"{s.type}:{s.value}" for s in result.selectors] == [
        "azure_msi:network-security-group:frontend:webservers", f"azure_msi:subscription-id:{SUBSCRIPTION}",
        "azure_msi:virtual-network-subnet:frontend:vnet:default", "azure_msi:virtual-network:frontend:vnet",
        "azure_msi:vm-name:frontend:blog"]
    assert result.can_reattest is False
    assert any(r.startswith(f"POST /{TENANT}/oauth2/v2.0/token") for r in lb.requests)


async def test_custom_resource_id_per_tenant(azure: tuple[Azure, Loopback]) -> None:
    cloud, _ = azure
    principal = str(uuid.uuid4())
    cloud.vms[principal] = VM(principal, name="api")
    att = attestor()
    custom = cloud.signers[CUSTOM_TENANT].sign(msi_claims(CUSTOM_TENANT, principal, CUSTOM_RESOURCE))
    result = await att.attest(payload(custom), no_challenge)
    assert str(result.agent_id) == f"spiffe://{TD}/spire/agent/azure_msi/{CUSTOM_TENANT}/{principal}"
    # The custom tenant refuses the default resource, the default tenant the custom one.
    for tenant, resource in ((CUSTOM_TENANT, msi.DEFAULT_RESOURCE_ID), (TENANT, CUSTOM_RESOURCE)):
        token = cloud.signers[tenant].sign(msi_claims(tenant, str(uuid.uuid4()), resource))
        with pytest.raises(AttestationError, match="unable to validate token claims: Audience doesn't match"):
            await att.attest(payload(token), no_challenge)


async def test_managed_identity_of_the_server_resolves_selectors(azure: tuple[Azure, Loopback]) -> None:
    cloud, lb = azure
    cloud.vm = VM(str(uuid.uuid4()), name="spire-server")   # the server's own VM answers IMDS
    principal = str(uuid.uuid4())
    cloud.vms[principal] = VM(principal)
    att = attestor(tenants={TENANT: {}})
    result = await att.attest(payload(cloud.signers[TENANT].sign(msi_claims(TENANT, principal))), no_challenge)
    assert f"subscription-id:{SUBSCRIPTION}" in [s.value for s in result.selectors]
    assert any(r.startswith("GET /metadata/instance") for r in lb.requests)


async def test_second_attestation_of_a_principal_is_refused(azure: tuple[Azure, Loopback]) -> None:
    cloud, _ = azure
    principal = str(uuid.uuid4())
    cloud.vms[principal] = VM(principal)
    nodes = Nodes()
    att = attestor(nodes)
    token = cloud.signers[TENANT].sign(msi_claims(TENANT, principal))
    result = await att.attest(payload(token), no_challenge)
    nodes.attested.add(str(result.agent_id))
    with pytest.raises(AttestationError, match="attestation data has already been used") as err:
        await att.attest(payload(token), no_challenge)
    assert err.value.status == Status.PERMISSION_DENIED


@pytest.mark.parametrize("case, message", [
    ("other-key", "not found"),
    ("same-kid-other-key", "unable to verify token: Signature verification failed"),
    ("other-tenants-key", "unable to verify token: Signature verification failed"),
    ("unknown-tenant", 'tenant "11111111-2222-3333-4444-555555555555" is not authorized'),
    ("expired", "unable to validate token claims: Signature has expired"),
    ("issuer", 'issuer "https://sts.windows.net/11111111-2222-3333-4444-555555555555/" is not tenant'),
    ("no-subject", "token missing subject claim"),
    ("no-kid", "token missing key id"),
    ("hs256", 'unexpected signature algorithm "HS256"'),
    ("unknown-principal", "principal"),
    ("garbage", "unable to parse token"),
    ("no-token", "missing token from attestation data"),
])
async def test_forged_or_foreign_tokens_are_refused(azure: tuple[Azure, Loopback], case: str, message: str) -> None:
    import jwt

    cloud, _ = azure
    principal = str(uuid.uuid4())
    cloud.vms[principal] = VM(principal)
    good = cloud.signers[TENANT]
    claims = msi_claims(TENANT, principal)
    other = "11111111-2222-3333-4444-555555555555"

    def same_kid() -> str:
        s = TenantSigner()
        s.kid = good.kid
        return s.sign(claims)

    def other_tenants_key() -> str:
        s = cloud.signers[CUSTOM_TENANT]
        return jwt.encode(claims, s.key, algorithm="RS256", headers={"kid": good.kid})

    raw = {
        "other-key": lambda: TenantSigner().sign(claims),
        "same-kid-other-key": same_kid,
        "other-tenants-key": other_tenants_key,
        "unknown-tenant": lambda: good.sign(msi_claims(other, principal)),
        "expired": lambda: good.sign(msi_claims(TENANT, principal, expires_in=-600)),
        "issuer": lambda: good.sign(msi_claims(TENANT, principal, issuer=f"https://sts.windows.net/{other}/")),
        "no-subject": lambda: good.sign({k: v for k, v in claims.items() if k != "sub"}),
        "no-kid": lambda: jwt.encode(claims, good.key, algorithm="RS256"),
        "hs256": lambda: jwt.encode(claims, "k" * 32, algorithm="HS256", headers={"kid": good.kid}),
        "unknown-principal": lambda: good.sign(msi_claims(TENANT, str(uuid.uuid4()))),
        "garbage": lambda: "not.a.jwt",
        "no-token": lambda: "",
    }[case]()
    with pytest.raises(AttestationError) as err:
        await attestor().attest(payload(raw), no_challenge)
    assert message in str(err.value)


async def test_keys_are_fetched_once_per_tenant(azure: tuple[Azure, Loopback]) -> None:
    cloud, lb = azure
    att = attestor()
    for _ in range(3):
        principal = str(uuid.uuid4())
        cloud.vms[principal] = VM(principal)
        await att.attest(payload(cloud.signers[TENANT].sign(msi_claims(TENANT, principal))), no_challenge)
    assert sum("discovery/keys" in r for r in lb.requests) == 1
