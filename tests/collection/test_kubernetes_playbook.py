"""playbooks/kubernetes.yml (role spire_py.spire.kubernetes): with its defaults it applies what
`kubectl apply -k deploy/kubernetes` applies; inventory variables reach the objects and the HCL,
which the roles' own templates render and `spire-server/spire-agent validate` check before
anything is applied. Rendered with spire_k8s_apply=false: no cluster is reached."""

from __future__ import annotations

import copy
import hashlib
import os
import sys
from pathlib import Path
from typing import Any

import hcl
import pytest
import yaml

import playbook
from conftest import COLLECTIONS_PARENT
from k8s_api import kube_api
from playbook import BIN, ansible_playbook
from test_kubernetes_manifests import BASE, OBJECTS

kubernetes_validate = pytest.importorskip("kubernetes_validate")

PLAYBOOK = "spire_py.spire.kubernetes"


def inventory(tmp_path: Path, **variables: Any) -> Path:
    inv = tmp_path / "inventory.yml"
    host = {"ansible_connection": "local", "ansible_python_interpreter": sys.executable}
    inv.write_text(yaml.safe_dump({"all": {"hosts": {"localhost": host}, "vars": {
        "spire_k8s_apply": False,
        "spire_k8s_validate": True,
        "spire_k8s_server_bin": str(BIN / "spire-server"),
        "spire_k8s_agent_bin": str(BIN / "spire-agent"),
        "spire_k8s_render_file": str(tmp_path / "rendered.yaml"),
        **variables}}}))
    return inv


def render(tmp_path: Path, **variables: Any) -> list[dict[str, Any]]:
    ansible_playbook(PLAYBOOK, inventory(tmp_path, **variables), cwd=tmp_path).check()
    return [d for d in yaml.safe_load_all((tmp_path / "rendered.yaml").read_text()) if d]


def by_name(objects: list[dict[str, Any]], kind: str, name: str) -> dict[str, Any]:
    return next(o for o in objects if o["kind"] == kind and o["metadata"]["name"] == name)


def conf(objects: list[dict[str, Any]], name: str, key: str) -> dict[str, Any]:
    return hcl.loads(by_name(objects, "ConfigMap", name)["data"][key])


def scalars_as_str(value: Any) -> Any:
    # bind_port = 8081 and bind_port = "8081" are the same setting to spire_py (and SPIRE).
    if isinstance(value, dict):
        return {k: scalars_as_str(v) for k, v in value.items()}
    if isinstance(value, list):
        return [scalars_as_str(v) for v in value]
    return value if isinstance(value, (str, bool)) else str(value)


def kustomized(objects: list[dict[str, Any]]) -> list[dict[str, Any]]:
    # What the base's `labels` field adds to each object's metadata.
    kustomization = yaml.safe_load((BASE / "kustomization.yaml").read_text())
    labels = {k: v for entry in kustomization["labels"] for k, v in entry["pairs"].items()}
    out = []
    for obj in objects:
        meta = dict(obj["metadata"], labels={**obj["metadata"].get("labels", {}), **labels})
        out.append(dict(obj, metadata=meta))
    return out


def without_config_data(objects: list[dict[str, Any]]) -> list[dict[str, Any]]:
    out = []
    for obj in objects:
        if obj["kind"] == "ConfigMap" and obj["metadata"]["name"] in ("spire-server", "spire-agent"):
            obj = {k: v for k, v in obj.items() if k != "data"}
        template = obj.get("spec", {}).get("template", {})
        if "checksum/config" in template.get("metadata", {}).get("annotations", {}):
            obj = copy.deepcopy(obj)
            annotations = obj["spec"]["template"]["metadata"]["annotations"]
            del annotations["checksum/config"]
            if not annotations:
                del obj["spec"]["template"]["metadata"]["annotations"]
        out.append(obj)
    return sorted(out, key=lambda o: (o["kind"], o["metadata"]["name"]))


def test_syntax_check(tmp_path):
    run = ansible_playbook(PLAYBOOK, inventory(tmp_path), "--syntax-check", cwd=tmp_path)
    assert run.rc == 0, run.out


def test_defaults_render_what_kubectl_apply_k_applies(tmp_path):
    # The HCL is compared with the base's, which test_kubernetes_manifests validates.
    rendered = render(tmp_path, spire_k8s_validate=False)
    assert without_config_data(rendered) == without_config_data(kustomized(OBJECTS))
    for (kind, workload), name, key in ((("StatefulSet", "spire-server"), "spire-server", "server.conf"),
                                        (("DaemonSet", "spire-agent"), "spire-agent", "agent.conf")):
        text = by_name(rendered, "ConfigMap", name)["data"][key]
        annotations = by_name(rendered, kind, workload)["spec"]["template"]["metadata"]["annotations"]
        assert annotations == {"checksum/config": hashlib.sha256(text.encode()).hexdigest()}
        assert scalars_as_str(conf(rendered, name, key)) == scalars_as_str(conf(OBJECTS, name, key)), key
        # Rendered by the systemd roles' templates: their header says so.
        assert "# Rendered from the inventory by spire_py.spire." in by_name(rendered, "ConfigMap", name)["data"][key]
    for obj in rendered:
        kubernetes_validate.validate(obj, "1.37.0", strict=True)


def test_inventory_variables_reach_the_objects_and_the_hcl(tmp_path):
    rendered = render(
        tmp_path,
        spire_trust_domain="prod.example",
        spire_k8s_namespace="spire-system",
        spire_k8s_image="registry.example:5000/spire_py:1.2.3",
        spire_k8s_cluster="prod-1",
        spire_k8s_example_workload=False,
        spire_server_config={"ca_ttl": "48h", "default_x509_svid_ttl": "2h"},
        spire_agent_log_level="DEBUG",
        spire_k8s_workload_attestor={"node_name_env": "MY_NODE_NAME", "skip_kubelet_verification": False,
                                     "kubelet_ca_path": "/run/spire/kubelet-ca.pem"},
    )
    names = {(o["kind"], o["metadata"]["name"]) for o in rendered}
    assert ("Deployment", "example-workload") not in names
    assert ("ServiceAccount", "example-workload") not in names
    assert ("Namespace", "spire-system") in names
    for obj in rendered:
        kubernetes_validate.validate(obj, "1.37.0", strict=True)
        if obj["kind"] not in ("Namespace", "ClusterRole", "ClusterRoleBinding"):
            assert obj["metadata"]["namespace"] == "spire-system"
        for subject in obj.get("subjects", []):
            assert subject["namespace"] == "spire-system"
        pod = obj.get("spec", {}).get("template", {}).get("spec", {})
        for c in pod.get("containers", []) + pod.get("initContainers", []):
            assert c["image"] == "registry.example:5000/spire_py:1.2.3"
    server = conf(rendered, "spire-server", "server.conf")
    assert server["server"]["trust_domain"] == "prod.example"
    assert server["server"]["ca_ttl"] == "48h"
    psat = server["plugins"]["NodeAttestor"]["k8s_psat"]["plugin_data"]["clusters"]["prod-1"]
    assert psat["service_account_allow_list"] == ["spire-system:spire-agent"]
    publisher = server["plugins"]["BundlePublisher"]["k8s_configmap"]["plugin_data"]["clusters"]["prod-1"]
    assert publisher["namespace"] == "spire-system"
    agent = conf(rendered, "spire-agent", "agent.conf")
    assert agent["agent"]["trust_domain"] == "prod.example"
    assert agent["agent"]["log_level"] == "DEBUG"
    assert agent["plugins"]["NodeAttestor"]["k8s_psat"]["plugin_data"]["cluster"] == "prod-1"
    assert agent["plugins"]["WorkloadAttestor"]["k8s"]["plugin_data"]["skip_kubelet_verification"] is False


def test_a_bad_setting_stops_the_play_before_anything_is_applied(tmp_path):
    inv = inventory(tmp_path, spire_server_config={"no_such_key": "1"})
    run = ansible_playbook(PLAYBOOK, inv, cwd=tmp_path)
    assert run.rc != 0
    assert 'server.no_such_key: unknown configuration key "no_such_key"' in run.out or "no_such_key" in run.out
    assert not (tmp_path / "rendered.yaml").exists()


def test_the_collection_under_test_is_the_one_found():
    assert (COLLECTIONS_PARENT / "ansible_collections" / "spire_py" / "spire" / "roles" / "kubernetes").is_dir()


def kubernetes_core() -> str:
    """The directory holding ansible_collections/kubernetes/core (collection-test.sh extracts it)."""
    for candidate in (os.environ.get("SPIRE_PY_EXTRA_COLLECTIONS", ""),
                      str(Path.home() / ".cache" / "spire_py-collections" / "ansible-12.3.0")):
        if candidate and (Path(candidate) / "ansible_collections/kubernetes/core/MANIFEST.json").is_file():
            return candidate
    pytest.skip("the kubernetes.core collection is not installed (scripts/collection-test.sh installs it)")


def test_the_play_applies_to_a_cluster_idempotently_and_keeps_the_published_bundle(tmp_path, monkeypatch):
    pytest.importorskip("kubernetes")
    monkeypatch.setattr(playbook, "COLLECTIONS_PARENT", f"{COLLECTIONS_PARENT}{os.pathsep}{kubernetes_core()}")
    with kube_api() as api:
        settings = dict(spire_k8s_apply=True, spire_k8s_validate=False, spire_k8s_register_entries=False,
                        spire_k8s_kubeconfig=str(api.write_kubeconfig(tmp_path / "kubeconfig")),
                        spire_k8s_wait_timeout=30)
        first = ansible_playbook(PLAYBOOK, inventory(tmp_path, **settings), cwd=tmp_path).check()
        assert first.changed() >= 1
        rendered = [d for d in yaml.safe_load_all((tmp_path / "rendered.yaml").read_text()) if d]
        for obj in rendered:
            stored = api.get(obj["kind"], obj["metadata"]["name"], obj["metadata"].get("namespace", ""))
            assert stored is not None, (obj["kind"], obj["metadata"]["name"])
            assert stored["metadata"]["labels"] == obj["metadata"]["labels"]
            for field in ("data", "rules", "subjects"):
                assert stored.get(field) == obj.get(field)
            if "template" in obj.get("spec", {}):
                assert stored["spec"]["template"] == obj["spec"]["template"]
        # Readiness was awaited (the StatefulSet and DaemonSet were read back).
        assert ("GET", "/apis/apps/v1/namespaces/spire/statefulsets/spire-server") in api.requests

        # The server publishes the bundle; applying again changes nothing and keeps it.
        bundle = {"bundle.crt": "-----BEGIN CERTIFICATE-----\nMIIB\n-----END CERTIFICATE-----\n"}
        api.set_configmap_data("spire", "spire-bundle", bundle)
        second = ansible_playbook(PLAYBOOK, inventory(tmp_path, **settings), cwd=tmp_path).check()
        assert second.changed() == 0, second.out[-3000:]
        assert api.get("ConfigMap", "spire-bundle", "spire")["data"] == bundle

        # A changed inventory value reaches the server's ConfigMap.
        before = api.get("StatefulSet", "spire-server", "spire")
        agents_before = api.get("DaemonSet", "spire-agent", "spire")
        third = ansible_playbook(PLAYBOOK, inventory(tmp_path, spire_server_log_level="DEBUG", **settings),
                                 cwd=tmp_path).check()
        assert third.changed() == 2  # the rendered file and the cluster
        server = hcl.loads(api.get("ConfigMap", "spire-server", "spire")["data"]["server.conf"])
        assert server["server"]["log_level"] == "DEBUG"
        # The server's pods roll (their template's config checksum changed); the agents' do not.
        after = api.get("StatefulSet", "spire-server", "spire")
        assert after["metadata"]["generation"] == before["metadata"]["generation"] + 1
        assert after["spec"]["template"]["metadata"]["annotations"]["checksum/config"] != \
            before["spec"]["template"]["metadata"]["annotations"]["checksum/config"]
        assert api.get("DaemonSet", "spire-agent", "spire")["metadata"]["generation"] == \
            agents_before["metadata"]["generation"]
        assert api.get("ConfigMap", "spire-bundle", "spire")["data"] == bundle
