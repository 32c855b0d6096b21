"""GCP and Azure end to end: real spire-server and spire-agent processes against loopback
clouds (tests/integration/helpers/{gcp,azure}.py, started and stopped here). The agent's
gcp_iit reaches the metadata server through SPIRE's ``identity_token_host``, its
azure_msi reaches IMDS through ``AZURE_POD_IDENTITY_AUTHORITY_HOST``; the server verifies
real RS256 tokens against keys the loopback clouds publish and resolves selectors through
the Compute API and Resource Manager."""

from __future__ import annotations

import json
import os
import uuid
from pathlib import Path
from typing import Any, Callable, Iterator

import pytest

from tests.integration.helpers.azure import CUSTOM_TENANT, SUBSCRIPTION, TENANT, VM, Azure, azure_env, msi_claims
from tests.integration.helpers.cloud_http import Loopback, loopback
from tests.integration.helpers.gcp import (
    PROJECT, SA_EMAIL, ZONE, GoogleCloud, GoogleSigner, gcp_env, identity_claims, instance_resource,
    service_account_file,
)
from tests.integration.helpers.harness import SERVER, TD, AgentHandle, ServerHandle, run, server_conf, svid_for, \
    wait_for

pytestmark = pytest.mark.timeout(240)
CUSTOM_RESOURCE = "http://example.org/app/"


@pytest.fixture
def google(monkeypatch: pytest.MonkeyPatch) -> Iterator[tuple[GoogleCloud, Loopback]]:
    cloud = GoogleCloud()
    with loopback(cloud.route) as lb:
        for name, value in gcp_env(lb).items():
            monkeypatch.setenv(name, value)   # the server processes started here inherit it
        yield cloud, lb


@pytest.fixture
def azure(monkeypatch: pytest.MonkeyPatch) -> Iterator[tuple[Azure, Loopback]]:
    cloud = Azure(apps={"spire-app": "s3cret"})
    with loopback(cloud.route) as lb:
        cloud.url = lb.url
        for name, value in azure_env(lb).items():
            monkeypatch.setenv(name, value)
        yield cloud, lb


def agent_json(server: ServerHandle, agent_id: str) -> dict[str, Any]:
    return json.loads(server.cli("agent", "show", "-spiffeID", agent_id, "-output", "json").stdout)


def selectors(shown: dict[str, Any]) -> set[str]:
    return {f'{s["type"]}:{s["value"]}' for s in shown["selectors"]}


def refused(agent: AgentHandle) -> str:
    wait_for(lambda: not agent.proc.alive(), 60, "the agent to give up")
    code = agent.proc.stop()
    logs = agent.proc.logs()
    assert code == 1, f"agent exited with {code}:\n{logs}"
    return logs


def no_agents(server: ServerHandle) -> bool:
    return json.loads(server.cli("agent", "list", "-output", "json").stdout).get("agents", []) in ([], None)


# --- gcp_iit ------------------------------------------------------------------------------

def gcp_server_plugin(sa_file: Path) -> str:
    return f'''NodeAttestor "gcp_iit" {{ plugin_data {{
        projectid_allow_list = ["{PROJECT}"]
        use_instance_metadata = true
        service_account_file = "{sa_file}"
        allowed_label_keys = ["env"]
        allowed_metadata_keys = ["role"]
    }} }}'''


def gcp_agent_plugin(host: str) -> str:
    return f'NodeAttestor "gcp_iit" {{ plugin_data {{ identity_token_host = "{host}" }} }}'


def test_agent_attests_with_gcp_iit_and_a_workload_gets_an_svid_by_tag(
        google: tuple[GoogleCloud, Loopback], make_server: Callable[..., ServerHandle],
        start_agent: Callable[..., AgentHandle], tmp_path: Path) -> None:
    cloud, lb = google
    cloud.instances["blog-server"] = instance_resource(metadata={"role": "web"})
    cloud.token = cloud.signers[0].sign(identity_claims())
    server = make_server(extra_plugins=gcp_server_plugin(service_account_file(tmp_path / "sa.json", f"{lb.url}/token")))
    alias = f"spiffe://{TD}/gcp/blog-nodes"
    server.cli("entry", "create", "-node", "-spiffeID", alias, "-selector", "gcp_iit:tag:blog-server")
    server.cli("entry", "create", "-parentID", alias, "-spiffeID", f"spiffe://{TD}/blog", "-selector",
               f"unix:uid:{os.getuid()}")

    agent = start_agent(server, node_attestor=gcp_agent_plugin(lb.host))
    agent_id = f"spiffe://{TD}/spire/agent/gcp_iit/{PROJECT}/5555555555555555555"
    shown = agent_json(server, agent_id)
    assert shown["attestation_type"] == "gcp_iit" and shown["can_reattest"] is False
    assert selectors(shown) == {
        f"gcp_iit:project-id:{PROJECT}", f"gcp_iit:zone:{ZONE}", "gcp_iit:instance-name:blog-server",
        f"gcp_iit:sa:{SA_EMAIL}", "gcp_iit:tag:blog-server", "gcp_iit:tag:http", "gcp_iit:label:env:prod",
        "gcp_iit:metadata:role:web"}
    assert svid_for(agent.socket, f"spiffe://{TD}/blog")["spiffe_id"] == f"spiffe://{TD}/blog"

    # Another process on the instance (or a copied token) attests again: refused.
    replay = start_agent(server, node_attestor=gcp_agent_plugin(lb.host), wait=False)
    assert "attestation data has already been used to attest an agent" in refused(replay)
    assert "Attestation data has already been used to attest an agent" in server.proc.logs()


@pytest.mark.parametrize("case, message", [
    ("other-key", "failed to validate the identity token signature"),
    ("expired", "Token expired"),
    ("audience", "Token has wrong audience"),
    ("project", 'identity token project ID \\"other-project\\" is not in the allow list'),
])
def test_forged_or_foreign_gcp_tokens_are_refused(
        google: tuple[GoogleCloud, Loopback], make_server: Callable[..., ServerHandle],
        start_agent: Callable[..., AgentHandle], tmp_path: Path, case: str, message: str) -> None:
    cloud, lb = google
    good = cloud.signers[0]
    cloud.token = {
        "other-key": lambda: GoogleSigner().sign(identity_claims()),
        "expired": lambda: good.sign(identity_claims(expires_in=-120)),
        "audience": lambda: good.sign(identity_claims(audience="https://example.org")),
        "project": lambda: good.sign(identity_claims(project="other-project")),
    }[case]()
    server = make_server(extra_plugins=gcp_server_plugin(service_account_file(tmp_path / "sa.json", f"{lb.url}/token")))
    logs = refused(start_agent(server, node_attestor=gcp_agent_plugin(lb.host), wait=False))
    assert message.replace('\\"', '"') in logs or message in logs, logs
    assert no_agents(server)


# --- azure_msi ----------------------------------------------------------------------------

def azure_server_plugin() -> str:
    app = f'subscription_id = "{SUBSCRIPTION}"\n app_id = "spire-app"\n app_secret = "s3cret"'
    return f'''NodeAttestor "azure_msi" {{ plugin_data {{
        tenants = {{
            "{TENANT}" = {{ {app} }}
            "{CUSTOM_TENANT}" = {{
                resource_id = "{CUSTOM_RESOURCE}"
                {app}
            }}
        }}
    }} }}'''


def azure_agent_plugin(resource_id: str = "") -> str:
    data = f'resource_id = "{resource_id}"' if resource_id else ""
    return f'NodeAttestor "azure_msi" {{ plugin_data {{ {data} }} }}'


@pytest.mark.parametrize("tenant, resource", [(TENANT, ""), (CUSTOM_TENANT, CUSTOM_RESOURCE)])
def test_agent_attests_with_azure_msi_and_a_workload_gets_an_svid_by_vm(
        azure: tuple[Azure, Loopback], make_server: Callable[..., ServerHandle],
        start_agent: Callable[..., AgentHandle], tenant: str, resource: str) -> None:
    cloud, _ = azure
    cloud.vm, cloud.vm_tenant = VM(str(uuid.uuid4())), tenant
    cloud.vms[cloud.vm.principal] = cloud.vm
    server = make_server(extra_plugins=azure_server_plugin())
    alias = f"spiffe://{TD}/azure/blog-vms"
    server.cli("entry", "create", "-node", "-spiffeID", alias, "-selector", "azure_msi:vm-name:frontend:blog")
    server.cli("entry", "create", "-parentID", alias, "-spiffeID", f"spiffe://{TD}/blog", "-selector",
               f"unix:uid:{os.getuid()}")

    agent = start_agent(server, node_attestor=azure_agent_plugin(resource))
    agent_id = f"spiffe://{TD}/spire/agent/azure_msi/{tenant}/{cloud.vm.principal}"
    shown = agent_json(server, agent_id)
    assert shown["attestation_type"] == "azure_msi" and shown["can_reattest"] is False
    assert selectors(shown) == {
        f"azure_msi:subscription-id:{SUBSCRIPTION}", "azure_msi:vm-name:frontend:blog",
        "azure_msi:network-security-group:frontend:webservers", "azure_msi:virtual-network:frontend:vnet",
        "azure_msi:virtual-network-subnet:frontend:vnet:default"}
    assert svid_for(agent.socket, f"spiffe://{TD}/blog")["spiffe_id"] == f"spiffe://{TD}/blog"

    replay = start_agent(server, node_attestor=azure_agent_plugin(resource), wait=False)
    assert "attestation data has already been used to attest an agent" in refused(replay)


@pytest.mark.parametrize("case, message", [
    ("custom-resource-on-agent-only", "Audience doesn't match"),
    ("default-resource-for-custom-tenant", "Audience doesn't match"),
    ("unknown-tenant", 'tenant \\"11111111-2222-3333-4444-555555555555\\" is not authorized'),
    ("other-key", "not found"),
    ("expired", "Signature has expired"),
])
def test_foreign_or_mismatched_azure_tokens_are_refused(
        azure: tuple[Azure, Loopback], make_server: Callable[..., ServerHandle],
        start_agent: Callable[..., AgentHandle], case: str, message: str) -> None:
    from tests.integration.helpers.azure import TenantSigner

    cloud, _ = azure
    cloud.vm = VM(str(uuid.uuid4()))
    cloud.vms[cloud.vm.principal] = cloud.vm
    resource = ""
    if case == "custom-resource-on-agent-only":
        resource = CUSTOM_RESOURCE                      # TENANT's server side expects the default resource
    elif case == "default-resource-for-custom-tenant":
        cloud.vm_tenant = CUSTOM_TENANT                 # the server expects CUSTOM_RESOURCE for it
    elif case == "unknown-tenant":
        other = "11111111-2222-3333-4444-555555555555"
        cloud.signers[other] = TenantSigner()
        cloud.vm_tenant = other
    elif case == "other-key":
        cloud.token_override = TenantSigner().sign(msi_claims(TENANT, cloud.vm.principal))
    elif case == "expired":
        cloud.token_override = cloud.signers[TENANT].sign(msi_claims(TENANT, cloud.vm.principal, expires_in=-600))
    server = make_server(extra_plugins=azure_server_plugin())
    logs = refused(start_agent(server, node_attestor=azure_agent_plugin(resource), wait=False))
    assert message.replace('\\"', '"') in logs or message in logs, logs
    assert no_agents(server)


def test_spire_sample_configs_validate_offline(tmp_path: Path) -> None:
    conf = tmp_path / "server.conf"
    conf.write_text(server_conf(tmp_path, str(tmp_path / "api.sock"), 8081, extra_plugins='''
        NodeAttestor "gcp_iit" { plugin_data { projectid_allow_list = ["project-123"] } }
        NodeAttestor "azure_msi" { plugin_data { tenants = {
            "00000000-1111-2222-3333-444444444444" = { resource_id = "http://example.org/app/" }
        } } }'''))
    out = run([SERVER, "validate", "-config", str(conf)], check=False)
    assert out.returncode == 0, out.stdout + out.stderr
    assert not (tmp_path / "data").exists()
