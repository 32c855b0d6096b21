"""Notifier "k8sbundle": the bundle's PEM roots into an existing ConfigMap of the loopback API server."""

from __future__ import annotations

from pathlib import Path
from typing import Iterator

import pytest
from cryptography import x509

from spire_py.common.bundle import Bundle
from spire_py.common.plugin import PluginConfigError, PluginContext
from spire_py.server.plugins.notifier.base import NotifyError
from spire_py.server.plugins.notifier.k8sbundle import K8sBundleNotifier
from tests.integration.helpers.kube import KubeAPIServer, kube_api_server
from tests.integration.helpers.pki import make_ca

CTX = PluginContext("example.org")


@pytest.fixture
def api(tmp_path: Path) -> Iterator[KubeAPIServer]:
    with kube_api_server(tmp_path) as server:
        yield server


async def test_defaults_write_bundle_crt_of_spire_bundle(api: KubeAPIServer, tmp_path: Path) -> None:
    api.configmaps[("spire", "spire-bundle")] = {"metadata": {"name": "spire-bundle", "namespace": "spire",
                                                              "resourceVersion": "1"}, "data": {}}
    n = K8sBundleNotifier.configure({"kube_config_file_path": str(api.write_kubeconfig(tmp_path / "kc"))}, CTX)
    b = Bundle("example.org")
    b.add_x509_authority(make_ca("Root").cert)
    await n.bundle_loaded(b)
    assert x509.load_pem_x509_certificates(api.configmap_data("spire", "spire-bundle")["bundle.crt"].encode()) \
        == b.x509_authorities


async def test_missing_configmap_is_an_error_not_created(api: KubeAPIServer, tmp_path: Path) -> None:
    n = K8sBundleNotifier.configure({"namespace": "infra", "config_map": "agents",
                                     "kube_config_file_path": str(api.write_kubeconfig(tmp_path / "kc"))}, CTX)
    b = Bundle("example.org")
    b.add_x509_authority(make_ca("Root").cert)
    with pytest.raises(NotifyError, match="infra/agents.*not found"):
        await n.bundle_updated(b)
    assert api.configmap_data("infra", "agents") is None


def test_webhook_label_is_refused() -> None:
    with pytest.raises(PluginConfigError, match="webhook_label is not supported"):
        K8sBundleNotifier.check_config({"webhook_label": "spiffe.io/webhook"}, CTX)


async def test_a_concurrent_writer_is_retried(api: KubeAPIServer, tmp_path: Path) -> None:
    """HA servers write the same ConfigMap: a 409 Conflict reads again and updates again."""
    api.configmaps[("spire", "spire-bundle")] = {"metadata": {"name": "spire-bundle", "namespace": "spire",
                                                              "resourceVersion": "1"}, "data": {"other": "x"}}
    api.conflicts = 2
    n = K8sBundleNotifier.configure({"kube_config_file_path": str(api.write_kubeconfig(tmp_path / "kc"))}, CTX)
    b = Bundle("example.org")
    b.add_x509_authority(make_ca("Root").cert)
    await n.bundle_updated(b)
    data = api.configmap_data("spire", "spire-bundle")
    assert data["other"] == "x" and "BEGIN CERTIFICATE" in data["bundle.crt"]
    assert len([r for r in api.requests if r.startswith("PUT")]) == 3
