"""gcp_iit (server): config refusals, and attestation against a loopback Google (certificates,
Compute API with a service account file's token endpoint): real RS256 verification."""

from __future__ import annotations

from pathlib import Path
from typing import Any, Iterator, Optional

import pytest
from grpclib.const import Status

from spire_py.common import plugin as registry
from spire_py.common.plugin import PluginConfigError, PluginContext
from spire_py.server.plugins.context import ServerPluginContext
from spire_py.server.plugins.nodeattestor.base import AttestationError
from spire_py.server.plugins.nodeattestor.gcp_iit import GCPIITAttestor
from tests.integration.helpers.cloud_http import Loopback, loopback
from tests.integration.helpers.gcp import (
    PROJECT, SA_EMAIL, ZONE, GoogleCloud, GoogleSigner, gcp_env, identity_claims, instance_resource,
    service_account_file,
)

TD = "example.org"
CTX = PluginContext(TD)


class Nodes:
    def __init__(self) -> None:
        self.attested: set[str] = set()

    def fetch_attested_node(self, spiffe_id: str, with_selectors: bool = False) -> Optional[object]:
        return object() if spiffe_id in self.attested else None


@pytest.fixture
def google(monkeypatch: pytest.MonkeyPatch) -> Iterator[tuple[GoogleCloud, Loopback]]:
    cloud = GoogleCloud()
    with loopback(cloud.route) as lb:
        for name, value in gcp_env(lb).items():
            monkeypatch.setenv(name, value)
        yield cloud, lb


def attestor(nodes: Optional[Nodes] = None, **extra: Any) -> GCPIITAttestor:
    data = {"projectid_allow_list": [PROJECT], **extra}
    return GCPIITAttestor.configure(data, ServerPluginContext(TD, datastore=nodes or Nodes()))  # type: ignore[arg-type]


async def no_challenge(_: bytes) -> bytes:
    raise AssertionError("gcp_iit does not challenge")


def test_plugin_is_registered_on_both_sides() -> None:
    import spire_py.agent.plugins  # noqa: F401
    import spire_py.server.plugins  # noqa: F401

    assert registry.lookup("server", "NodeAttestor", "gcp_iit") is GCPIITAttestor
    assert registry.lookup("agent", "NodeAttestor", "gcp_iit").NAME == "gcp_iit"


@pytest.mark.parametrize("data", [
    {"projectid_allow_list": ["project-123"]},   # SPIRE's sample
    {"projectid_allow_list": ["p"], "use_instance_metadata": True, "allowed_label_keys": ["env"],
     "allowed_metadata_keys": ["role"], "max_metadata_value_size": 256,
     "agent_path_template": "/{{ .PluginName }}/{{ .ProjectID }}/{{ .Zone }}/{{ .InstanceName }}"},
])
def test_spire_sample_configs_validate(data: dict[str, Any]) -> None:
    GCPIITAttestor.check_config(data, CTX)


@pytest.mark.parametrize("data, key, message", [
    ({}, "projectid_allow_list", "projectid_allow_list is required"),
    ({"projectid_allow_list": []}, "projectid_allow_list", "projectid_allow_list is required"),
    ({"projectid_allow_list": ["p"], "agent_path_template": "/{{ .ProjectID "}, "agent_path_template",
     "failed to parse agent path template"),
    ({"projectid_allow_list": ["p"], "max_metadata_value_size": -1}, "max_metadata_value_size", "must not be negative"),
    ({"projectid_allow_list": ["p"], "service_account_file": "/nonexistent.json"}, "service_account_file",
     'unable to load service account file "/nonexistent.json"'),
    ({"projectid_allow_list": "p"}, "projectid_allow_list", "expected a list"),
    ({"projectid_allow_list": ["p"], "use_instance_metadata": "yes"}, "use_instance_metadata", "expected true or false"),
    ({"projectid_allow_list": ["p"], "certs_url": "http://x"}, "certs_url", 'unknown configuration key "certs_url"'),
])
def test_config_refusals_name_the_key(data: dict[str, Any], key: str, message: str) -> None:
    with pytest.raises(PluginConfigError) as err:
        GCPIITAttestor.check_config(data, CTX)
    assert err.value.key == key
    assert message in str(err.value)


def test_validate_makes_no_network_calls(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    import requests

    def refuse(*a: Any, **kw: Any) -> Any:
        raise AssertionError("validate must not connect")

    monkeypatch.setattr(requests.Session, "request", refuse)
    sa = service_account_file(tmp_path / "sa.json", "http://127.0.0.1:9/token")
    GCPIITAttestor.check_config({"projectid_allow_list": ["p"], "use_instance_metadata": True,
                                 "service_account_file": str(sa)}, CTX)


async def test_attestation_gives_the_agent_id_and_base_selectors(google: tuple[GoogleCloud, Loopback]) -> None:
    cloud, _ = google
    token = cloud.signers[0].sign(identity_claims())
    result = await attestor().attest(token.encode(), no_challenge)
    assert str(result.agent_id) == f"spiffe://{TD}/spire/agent/gcp_iit/{PROJECT}/5555555555555555555"
    assert [f"{s.type}:{s.value}" for s in result.selectors] == [
        f"gcp_iit:project-id:{PROJECT}", f"gcp_iit:zone:{ZONE}", "gcp_iit:instance-name:blog-server",
        f"gcp_iit:sa:{SA_EMAIL}"]
    assert result.can_reattest is False


async def test_instance_metadata_selectors_through_the_compute_api(google: tuple[GoogleCloud, Loopback],
                                                                   tmp_path: Path) -> None:
    cloud, lb = google
    cloud.instances["blog-server"] = instance_resource(metadata={"role": "web", "empty": None, "secret": "x"})
    sa = service_account_file(tmp_path / "sa.json", f"{lb.url}/token")
    att = attestor(use_instance_metadata=True, service_account_file=str(sa), allowed_label_keys=["env"],
                   allowed_metadata_keys=["role", "empty"],
                   agent_path_template="/{{ .PluginName }}/{{ .ServiceAccount }}/{{ .InstanceName }}")
    result = await att.attest(cloud.signers[0].sign(identity_claims()).encode(), no_challenge)
    assert str(result.agent_id) == f"spiffe://{TD}/spire/agent/gcp_iit/{SA_EMAIL.replace('@', '_')}/blog-server"
    values = [s.value for s in result.selectors]
    assert values[4:] == ["tag:blog-server", "tag:http", "label:env:prod", "metadata:role:web", "metadata:empty:"]
    assert any(r.startswith("POST /token") for r in lb.requests)


async def test_metadata_value_over_the_limit_fails_attestation(google: tuple[GoogleCloud, Loopback],
                                                               tmp_path: Path) -> None:
    cloud, lb = google
    cloud.instances["blog-server"] = instance_resource(metadata={"role": "w" * 129})
    sa = service_account_file(tmp_path / "sa.json", f"{lb.url}/token")
    att = attestor(use_instance_metadata=True, service_account_file=str(sa), allowed_metadata_keys=["role"])
    with pytest.raises(AttestationError, match=r'metadata "role" exceeded value limit \(129 > 128\)'):
        await att.attest(cloud.signers[0].sign(identity_claims()).encode(), no_challenge)


async def test_unknown_or_replaced_instance_fails_attestation(google: tuple[GoogleCloud, Loopback],
                                                              tmp_path: Path) -> None:
    cloud, lb = google
    sa = service_account_file(tmp_path / "sa.json", f"{lb.url}/token")
    att = attestor(use_instance_metadata=True, service_account_file=str(sa))
    with pytest.raises(AttestationError, match="failed to fetch instance metadata: googleapi: Error 404"):
        await att.attest(cloud.signers[0].sign(identity_claims()).encode(), no_challenge)
    cloud.instances["blog-server"] = instance_resource(instance_id="1")
    with pytest.raises(AttestationError, match='has ID "1", the token names "5555555555555555555"'):
        await attestor(use_instance_metadata=True, service_account_file=str(sa)).attest(
            cloud.signers[0].sign(identity_claims()).encode(), no_challenge)


async def test_second_attestation_of_an_instance_is_refused(google: tuple[GoogleCloud, Loopback]) -> None:
    cloud, _ = google
    nodes = Nodes()
    att = attestor(nodes)
    result = await att.attest(cloud.signers[0].sign(identity_claims()).encode(), no_challenge)
    nodes.attested.add(str(result.agent_id))
    with pytest.raises(AttestationError, match="attestation data has already been used") as err:
        await att.attest(cloud.signers[0].sign(identity_claims()).encode(), no_challenge)
    assert err.value.status == Status.PERMISSION_DENIED


@pytest.mark.parametrize("case, message, status", [
    ("other-key", "failed to validate the identity token signature", Status.INVALID_ARGUMENT),
    ("same-kid-other-key", "failed to validate the identity token signature", Status.INVALID_ARGUMENT),
    ("expired", "failed to validate the identity token claims: Token expired", Status.PERMISSION_DENIED),
    ("audience", "failed to validate the identity token claims: Token has wrong audience", Status.PERMISSION_DENIED),
    ("project", 'identity token project ID "other-project" is not in the allow list', Status.PERMISSION_DENIED),
    ("hs256", 'unexpected signature algorithm "HS256"', Status.INVALID_ARGUMENT),
    ("garbage", "unable to parse the identity token", Status.INVALID_ARGUMENT),
    ("empty", "missing attestation payload", Status.INVALID_ARGUMENT),
])
async def test_forged_or_foreign_tokens_are_refused(google: tuple[GoogleCloud, Loopback], case: str, message: str,
                                                    status: Status) -> None:
    cloud, _ = google
    good = cloud.signers[0]
    token = {
        "other-key": lambda: GoogleSigner().sign(identity_claims()),
        "same-kid-other-key": lambda: GoogleSigner(good.kid).sign(identity_claims()),
        "expired": lambda: good.sign(identity_claims(expires_in=-120)),
        "audience": lambda: good.sign(identity_claims(audience="https://example.org")),
        "project": lambda: good.sign(identity_claims(project="other-project")),
        "hs256": lambda: __import__("jwt").encode(identity_claims(), "k" * 32, algorithm="HS256",
                                                  headers={"kid": good.kid}),
        "garbage": lambda: "not.a.jwt",
        "empty": lambda: "",
    }[case]()
    with pytest.raises(AttestationError) as err:
        await attestor().attest(token.encode(), no_challenge)
    assert message in str(err.value)
    assert err.value.status == status


async def test_certificates_are_cached_until_they_expire(google: tuple[GoogleCloud, Loopback]) -> None:
    cloud, lb = google
    att = attestor()
    for i in range(3):
        await att.attest(cloud.signers[0].sign(identity_claims(instance_id=str(i))).encode(), no_challenge)
    assert sum(r.startswith("GET /oauth2/v1/certs") for r in lb.requests) == 1
