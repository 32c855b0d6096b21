"""gcp_iit and azure_msi (agent): what they ask the metadata services and what they send,
against loopback metadata services; config refusals."""

from __future__ import annotations

import json
import uuid
from typing import Any

import pytest

from spire_py.agent.plugins.nodeattestor.azure_msi import AzureMSIAttestor
from spire_py.agent.plugins.nodeattestor.base import AgentAttestationError
from spire_py.agent.plugins.nodeattestor.gcp_iit import GCPIITAttestor, identity_token_url
from spire_py.common.plugin import PluginConfigError, PluginContext
from tests.integration.helpers.azure import TENANT, VM, Azure
from tests.integration.helpers.cloud_http import loopback
from tests.integration.helpers.gcp import GoogleCloud, identity_claims

CTX = PluginContext("example.org")


def test_gcp_default_url_is_spires() -> None:
    att = GCPIITAttestor.configure({}, CTX)
    assert att.url == identity_token_url("metadata.google.internal", "default")
    assert att.url == ("http://metadata.google.internal/computeMetadata/v1/instance/service-accounts/default/identity"
                       "?audience=spire-gcp-node-attestor&format=full")


async def test_gcp_payload_is_the_metadata_servers_token() -> None:
    cloud = GoogleCloud()
    cloud.token = cloud.signers[0].sign(identity_claims())
    with loopback(cloud.route) as lb:
        att = GCPIITAttestor.configure({"identity_token_host": lb.host,
                                        "service_account": "XXX@developer.gserviceaccount.com"}, CTX)
        assert await att.payload() == cloud.token.encode()
    assert cloud.identity_queries == [{"account": "XXX@developer.gserviceaccount.com",
                                       "audience": "spire-gcp-node-attestor", "format": "full"}]


async def test_gcp_metadata_server_refusal_is_an_error() -> None:
    with loopback(GoogleCloud().route) as lb:   # no token to serve: 400
        att = GCPIITAttestor.configure({"identity_token_host": lb.host}, CTX)
        with pytest.raises(AgentAttestationError, match="unable to retrieve valid identity token: unexpected status "
                                                        "code: 400"):
            await att.payload()


@pytest.mark.parametrize("data, key, message", [
    ({"identity_token_host": "http://metadata/"}, "identity_token_host", "must be a host or host:port"),
    ({"service_account": "a/b"}, "service_account", 'must not contain "/"'),
    ({"identity_token_host": 5.5, "audience": "x"}, "audience", 'unknown configuration key "audience"'),
])
def test_gcp_config_refusals(data: dict[str, Any], key: str, message: str) -> None:
    with pytest.raises(PluginConfigError) as err:
        GCPIITAttestor.check_config(data, CTX)
    assert err.value.key == key and message in str(err.value)


@pytest.mark.parametrize("resource", ["", "http://example.org/app/"])
async def test_azure_payload_is_an_imds_token_for_the_resource(resource: str, monkeypatch: pytest.MonkeyPatch) -> None:
    import jwt

    cloud = Azure(vm=VM(str(uuid.uuid4())))
    with loopback(cloud.route) as lb:
        monkeypatch.setenv("AZURE_POD_IDENTITY_AUTHORITY_HOST", lb.url)
        att = AzureMSIAttestor.configure({"resource_id": resource} if resource else {}, CTX)
        token = json.loads(await att.payload())["token"]
    claims = jwt.decode(token, options={"verify_signature": False})
    assert claims["aud"] == (resource or "https://management.azure.com/") and claims["tid"] == TENANT
    assert lb.requests[0].startswith("GET /metadata/identity/oauth2/token?api-version=2018-02-01&resource=")


async def test_azure_imds_refusal_is_an_error(monkeypatch: pytest.MonkeyPatch) -> None:
    with loopback(Azure().route) as lb:   # no VM identity: 404
        monkeypatch.setenv("AZURE_POD_IDENTITY_AUTHORITY_HOST", lb.url)
        att = AzureMSIAttestor.configure({}, CTX)
        with pytest.raises(AgentAttestationError, match="unable to fetch token: unexpected status code 404"):
            await att.payload()


@pytest.mark.parametrize("data, key, message", [
    ({"resource_id": "not a uri"}, "resource_id", "must be a URI or an application ID"),
    ({"resource_id": ["x"]}, "resource_id", "expected a string"),
    ({"tenant_id": "x"}, "tenant_id", 'unknown configuration key "tenant_id"'),
])
def test_azure_config_refusals(data: dict[str, Any], key: str, message: str) -> None:
    with pytest.raises(PluginConfigError) as err:
        AzureMSIAttestor.check_config(data, CTX)
    assert err.value.key == key and message in str(err.value)
