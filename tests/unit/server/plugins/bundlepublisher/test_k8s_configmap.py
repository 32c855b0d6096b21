"""BundlePublisher "k8s_configmap": SPIRE's config refusals, and publication into the loopback API
server's ConfigMaps (TLS, bearer token) in the three formats."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Iterator

import pytest
from cryptography import x509

from spire_py.common.bundle import Bundle
from spire_py.common.keys import generate_key
from spire_py.common.plugin import PluginConfigError, PluginContext
from spire_py.server.plugins.bundlepublisher.base import PublishError, format_bundle
from spire_py.server.plugins.bundlepublisher.k8s_configmap import K8sConfigMapPublisher
from tests.integration.helpers.kube import KubeAPIServer, kube_api_server
from tests.integration.helpers.pki import make_ca

CTX = PluginContext("example.org")


@pytest.fixture
def api(tmp_path: Path) -> Iterator[KubeAPIServer]:
    with kube_api_server(tmp_path) as server:
        yield server


def bundle(*cns: str) -> Bundle:
    b = Bundle("example.org", refresh_hint=300, sequence_number=2)
    for cn in cns or ("Root A",):
        b.add_x509_authority(make_ca(cn).cert)
    b.add_jwt_authority("kid-1", generate_key("ec-p256").public_key())
    return b


def publisher(api: KubeAPIServer, tmp_path: Path, **clusters: dict[str, Any]) -> K8sConfigMapPublisher:
    kubeconfig = str(api.write_kubeconfig(tmp_path / "kubeconfig"))
    data = {cid: {"namespace": "spire", "configmap_key": "bundle", "kubeconfig_path": kubeconfig, **c}
            for cid, c in clusters.items()}
    return K8sConfigMapPublisher.configure({"clusters": data}, CTX)


async def test_publishes_each_cluster_in_its_format_and_keeps_other_keys(api: KubeAPIServer, tmp_path: Path) -> None:
    api.configmaps[("spire", "td-pem")] = {"metadata": {"name": "td-pem", "namespace": "spire",
                                                        "resourceVersion": "7"}, "data": {"other": "kept"}}
    p = publisher(api, tmp_path, a={"configmap_name": "td-spiffe", "format": "spiffe"},
                  b={"configmap_name": "td-pem", "format": "pem"}, c={"configmap_name": "td-jwks", "format": "jwks"})
    b = bundle()
    await p.publish_bundle(b)
    doc = json.loads(api.configmap_data("spire", "td-spiffe")["bundle"])  # created: it did not exist
    assert doc["spiffe_sequence"] == 2 and {k["use"] for k in doc["keys"]} == {"x509-svid", "jwt-svid"}
    pem_data = api.configmap_data("spire", "td-pem")
    assert pem_data["other"] == "kept"
    assert x509.load_pem_x509_certificates(pem_data["bundle"].encode()) == b.x509_authorities
    jwks = json.loads(api.configmap_data("spire", "td-jwks")["bundle"])
    assert "spiffe_sequence" not in jwks and all("use" not in k for k in jwks["keys"]) and len(jwks["keys"]) == 2


async def test_same_bundle_is_not_published_twice_a_new_one_is(api: KubeAPIServer, tmp_path: Path) -> None:
    p = publisher(api, tmp_path, a={"configmap_name": "td", "format": "pem"})
    await p.publish_bundle(bundle("Root A"))
    writes = len([r for r in api.requests if not r.startswith("GET")])
    await p.publish_bundle(p_last(p))  # the same bundle again (read back from what was published)
    assert len([r for r in api.requests if not r.startswith("GET")]) == writes
    await p.publish_bundle(bundle("Root A", "Root B"))
    assert len(x509.load_pem_x509_certificates(api.configmap_data("spire", "td")["bundle"].encode())) == 2


def p_last(p: K8sConfigMapPublisher) -> Bundle:
    assert p._published is not None
    return Bundle.from_json("example.org", p._published)


async def test_unreachable_cluster_fails_the_publication(api: KubeAPIServer, tmp_path: Path) -> None:
    kubeconfig = tmp_path / "wrong-token"
    api.write_kubeconfig(kubeconfig, token="not-admin")
    p = K8sConfigMapPublisher.configure({"clusters": {"x": {
        "namespace": "spire", "configmap_name": "td", "configmap_key": "b", "format": "pem",
        "kubeconfig_path": str(kubeconfig)}}}, CTX)
    with pytest.raises(PublishError, match='failed to apply ConfigMap for cluster "x": .*401'):
        await p.publish_bundle(bundle())


@pytest.mark.parametrize("missing,message", [
    ("format", 'missing bundle format in cluster "c"'),
    ("namespace", 'missing namespace in cluster "c"'),
    ("configmap_name", 'missing configmap name in cluster "c"'),
    ("configmap_key", 'missing configmap key in cluster "c"'),
])
def test_required_cluster_keys(missing: str, message: str) -> None:
    body = {"format": "pem", "namespace": "n", "configmap_name": "m", "configmap_key": "k"}
    del body[missing]
    with pytest.raises(PluginConfigError, match=message):
        K8sConfigMapPublisher.check_config({"clusters": {"c": body}}, CTX)


def test_unknown_format_is_refused() -> None:
    with pytest.raises(PluginConfigError, match="could not parse bundle format"):
        K8sConfigMapPublisher.check_config({"clusters": {"c": {
            "format": "der", "namespace": "n", "configmap_name": "m", "configmap_key": "k"}}}, CTX)


def test_unloadable_kubeconfig_stops_the_start(tmp_path: Path) -> None:
    with pytest.raises(PluginConfigError, match='failed to create Kubernetes client for cluster "c"'):
        K8sConfigMapPublisher.configure({"clusters": {"c": {
            "format": "pem", "namespace": "n", "configmap_name": "m", "configmap_key": "k",
            "kubeconfig_path": str(tmp_path / "none")}}}, CTX)


def test_pem_format_has_x509_authorities_only() -> None:
    assert b"BEGIN CERTIFICATE" in format_bundle(bundle(), "pem") and b"kid-1" not in format_bundle(bundle(), "pem")
