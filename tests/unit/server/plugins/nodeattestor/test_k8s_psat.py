"""k8s_psat (server): config refusals, and attestation against the loopback API server fixture
(TLS with its own CA, bearer-token auth, real RS256 tokens reviewed through TokenReview)."""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any, Iterator

import pytest
from cryptography.hazmat.primitives.asymmetric import rsa
from grpclib.const import Status

from spire_py.common.plugin import PluginConfigError, PluginContext
from spire_py.server.plugins.nodeattestor.base import AttestationError
from spire_py.server.plugins.nodeattestor.k8s_psat import PSATAttestor
from tests.integration.helpers.kube import KubeAPIServer, kube_api_server, node, pod

TD = "example.org"
CTX = PluginContext(TD)
NODE_UID = "7f3c1f2a-0b6e-4d1e-9c55-1a2b3c4d5e6f"
POD_UID = "56857f33-36a9-11e9-860c-080027b25557"


@pytest.fixture
def api(tmp_path: Path) -> Iterator[KubeAPIServer]:
    with kube_api_server(tmp_path) as server:
        server.add_node(node("node-1", uid=NODE_UID, labels={"zone": "a", "secret": "x"}))
        server.add_pod(pod("spire", "spire-agent-5d84p", uid=POD_UID, node_name="node-1", host_ip="10.1.2.3",
                           service_account="spire-agent", labels={"app": "spire-agent", "hash": "h"}))
        yield server


def attestor(api: KubeAPIServer, tmp_path: Path, **cluster: Any) -> PSATAttestor:
    kubeconfig = api.write_kubeconfig(tmp_path / "kubeconfig")
    body = {"service_account_allow_list": ["spire:spire-agent"], "kube_config_file": str(kubeconfig), **cluster}
    return PSATAttestor.configure({"clusters": {"prod": body}}, CTX)


def payload(token: str, cluster: str = "prod") -> bytes:
    return json.dumps({"cluster": cluster, "token": token}).encode()


async def no_challenge(_: bytes) -> bytes:
    raise AssertionError("k8s_psat does not challenge")


def agent_token(api: KubeAPIServer, **kw: Any) -> str:
    return api.issuer.token("spire", "spire-agent", "spire-agent-5d84p", POD_UID, **kw)


async def test_attestation_gives_the_node_uid_agent_id_and_spire_selectors(api: KubeAPIServer, tmp_path: Path) -> None:
    a = attestor(api, tmp_path, allowed_node_label_keys=["zone"], allowed_pod_label_keys=["app"])
    result = await a.attest(payload(agent_token(api)), no_challenge)
    assert str(result.agent_id) == f"spiffe://{TD}/spire/agent/k8s_psat/prod/{NODE_UID}"
    assert result.can_reattest
    assert [f"{s.type}:{s.value}" for s in result.selectors] == [
        "k8s_psat:cluster:prod", "k8s_psat:agent_ns:spire", "k8s_psat:agent_sa:spire-agent",
        "k8s_psat:agent_pod_name:spire-agent-5d84p", f"k8s_psat:agent_pod_uid:{POD_UID}",
        "k8s_psat:agent_node_ip:10.1.2.3", "k8s_psat:agent_node_name:node-1", f"k8s_psat:agent_node_uid:{NODE_UID}",
        "k8s_psat:agent_node_label:zone:a", "k8s_psat:agent_pod_label:app:spire-agent",
    ]
    assert api.reviews[-1]["audiences"] == ["spire-server"]  # SPIRE's default audience


async def test_same_node_reattests_to_the_same_id(api: KubeAPIServer, tmp_path: Path) -> None:
    a = attestor(api, tmp_path)
    first = await a.attest(payload(agent_token(api)), no_challenge)
    second = await a.attest(payload(agent_token(api)), no_challenge)
    assert first.agent_id == second.agent_id and second.can_reattest


async def test_wrong_audience_is_refused(api: KubeAPIServer, tmp_path: Path) -> None:
    a = attestor(api, tmp_path)
    with pytest.raises(AttestationError, match="TokenReview API.*invalid for the target audiences") as err:
        await a.attest(payload(agent_token(api, audiences=("someone-else",))), no_challenge)
    assert err.value.status == Status.INTERNAL  # SPIRE: a TokenReview error status is an error


async def test_configured_audience_is_sent(api: KubeAPIServer, tmp_path: Path) -> None:
    a = attestor(api, tmp_path, audience=["spire-prod"])
    await a.attest(payload(agent_token(api, audiences=("spire-prod",))), no_challenge)
    assert api.reviews[-1]["audiences"] == ["spire-prod"]


async def test_review_from_an_audience_unaware_authenticator_is_refused(api: KubeAPIServer, tmp_path: Path) -> None:
    api.audience_aware = False
    with pytest.raises(AttestationError, match=r"do not include any of \['spire-server'\]") as err:
        await attestor(api, tmp_path).attest(payload(agent_token(api)), no_challenge)
    assert err.value.status == Status.PERMISSION_DENIED


async def test_expired_token_is_refused(api: KubeAPIServer, tmp_path: Path) -> None:
    a = attestor(api, tmp_path)
    with pytest.raises(AttestationError, match="expired"):
        await a.attest(payload(agent_token(api, issued=time.time() - 7200, ttl=600)), no_challenge)


async def test_token_signed_by_another_key_is_refused(api: KubeAPIServer, tmp_path: Path) -> None:
    a = attestor(api, tmp_path)
    forged = agent_token(api, key=rsa.generate_private_key(public_exponent=65537, key_size=2048))
    with pytest.raises(AttestationError, match="Signature verification failed"):
        await a.attest(payload(forged), no_challenge)


async def test_service_account_not_on_the_allow_list_is_refused(api: KubeAPIServer, tmp_path: Path) -> None:
    api.add_pod(pod("default", "web", uid="u-web", service_account="web"))
    a = attestor(api, tmp_path)
    with pytest.raises(AttestationError, match='"default:web" is not an allowed service account') as err:
        await a.attest(payload(api.issuer.token("default", "web", "web", "u-web")), no_challenge)
    assert err.value.status == Status.PERMISSION_DENIED


async def test_unknown_cluster_is_refused(api: KubeAPIServer, tmp_path: Path) -> None:
    a = attestor(api, tmp_path)
    with pytest.raises(AttestationError, match='not configured for cluster "staging"') as err:
        await a.attest(payload(agent_token(api), cluster="staging"), no_challenge)
    assert err.value.status == Status.INVALID_ARGUMENT
    assert not api.reviews  # the token went nowhere


async def test_pod_not_found_is_refused(api: KubeAPIServer, tmp_path: Path) -> None:
    api.check_bound_pod = False  # an API server that still accepts the token
    a = attestor(api, tmp_path)
    token = api.issuer.token("spire", "spire-agent", "gone", "u-gone")
    with pytest.raises(AttestationError, match='fail to get pod from k8s API server: .*404.*pods "gone" not found'):
        await a.attest(payload(token), no_challenge)


async def test_pod_on_a_node_that_is_not_there_is_refused(api: KubeAPIServer, tmp_path: Path) -> None:
    api.add_pod(pod("spire", "spire-agent-x", uid="u-x", node_name="node-9", service_account="spire-agent"))
    a = attestor(api, tmp_path)
    token = api.issuer.token("spire", "spire-agent", "spire-agent-x", "u-x")
    with pytest.raises(AttestationError, match='fail to get node from k8s API server: .*nodes "node-9" not found'):
        await a.attest(payload(token), no_challenge)


async def test_pod_on_another_node_gets_that_nodes_id(api: KubeAPIServer, tmp_path: Path) -> None:
    api.add_node(node("node-2", uid="uid-node-2"))
    api.add_pod(pod("spire", "spire-agent-y", uid="u-y", node_name="node-2", service_account="spire-agent"))
    a = attestor(api, tmp_path)
    result = await a.attest(payload(api.issuer.token("spire", "spire-agent", "spire-agent-y", "u-y")), no_challenge)
    assert str(result.agent_id).endswith("/k8s_psat/prod/uid-node-2")


async def test_token_replayed_after_its_pod_was_replaced_is_refused(api: KubeAPIServer, tmp_path: Path) -> None:
    """A token of the old pod must not attest as the new pod of the same name on another node."""
    api.check_bound_pod = False
    old = agent_token(api)
    api.add_node(node("node-2", uid="uid-node-2"))
    api.add_pod(pod("spire", "spire-agent-5d84p", uid="new-uid", node_name="node-2", service_account="spire-agent"))
    a = attestor(api, tmp_path)
    with pytest.raises(AttestationError, match='the token was issued for') as err:
        await a.attest(payload(old), no_challenge)
    assert err.value.status == Status.PERMISSION_DENIED


async def test_api_server_with_an_untrusted_certificate_is_an_error(api: KubeAPIServer, tmp_path: Path) -> None:
    a = attestor(api, tmp_path)
    other = KubeAPIServer(tmp_path)  # another CA
    (tmp_path / "kube-ca.pem").write_bytes(other.ca.cert.public_bytes(__import__(
        "cryptography.hazmat.primitives.serialization", fromlist=["Encoding"]).Encoding.PEM))
    with pytest.raises(AttestationError, match="unable to validate token with TokenReview API.*CERTIFICATE_VERIFY"):
        await a.attest(payload(agent_token(api)), no_challenge)


@pytest.mark.parametrize("data,message", [
    (b"", "missing attestation payload"),
    (b"{", "failed to unmarshal data payload"),
    (json.dumps({"token": "t"}).encode(), "missing cluster in attestation data"),
    (json.dumps({"cluster": "prod"}).encode(), "missing token in attestation data"),
])
async def test_malformed_payloads(api: KubeAPIServer, tmp_path: Path, data: bytes, message: str) -> None:
    with pytest.raises(AttestationError, match=message) as err:
        await attestor(api, tmp_path).attest(data, no_challenge)
    assert err.value.status == Status.INVALID_ARGUMENT


def test_cluster_without_allowed_service_accounts_is_refused() -> None:
    with pytest.raises(PluginConfigError, match='cluster "c1" configuration must have at least one service account'):
        PSATAttestor.check_config({"clusters": {"c1": {"kube_config_file": "/x"}}}, CTX)


def test_unknown_cluster_key_is_refused() -> None:
    with pytest.raises(PluginConfigError, match='unknown key "audiences"'):
        PSATAttestor.check_config({"clusters": {"c1": {"service_account_allow_list": ["a:b"],
                                                       "audiences": ["x"]}}}, CTX)


def test_empty_audience_list_leaves_the_api_servers_audience() -> None:
    a = PSATAttestor.configure({"clusters": {"c1": {"service_account_allow_list": ["a:b"], "audience": []}}}, CTX)
    assert a.clusters["c1"].audience == []


async def test_unloadable_kubeconfig_is_an_attestation_error(api: KubeAPIServer, tmp_path: Path) -> None:
    a = attestor(api, tmp_path, kube_config_file=str(tmp_path / "missing"))
    with pytest.raises(AttestationError, match="unable to validate token with TokenReview API: unable to create "
                                               "client config") as err:
        await a.attest(payload(agent_token(api)), no_challenge)
    assert err.value.status == Status.INTERNAL


async def test_one_attestation_loads_the_client_once(api: KubeAPIServer, tmp_path: Path,
                                                     monkeypatch: pytest.MonkeyPatch) -> None:
    from spire_py.common.plugins import k8s_apiserver

    loads: list[str] = []
    real = k8s_apiserver.load_client_config
    monkeypatch.setattr(k8s_apiserver, "load_client_config", lambda path: (loads.append(path), real(path))[1])
    await attestor(api, tmp_path).attest(payload(agent_token(api)), no_challenge)
    assert len(loads) == 1 and [r.split()[0] for r in api.requests] == ["POST", "GET", "GET"]
