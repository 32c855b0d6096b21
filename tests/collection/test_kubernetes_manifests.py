"""deploy/kubernetes: the Kustomize base is valid Kubernetes, its HCL is valid spire_py config,
and the pieces that must agree across objects (token audience, cluster name, bundle ConfigMap,
sockets, probes, RBAC) do."""

from __future__ import annotations

import copy
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import hcl
import pytest
import yaml

from conftest import ROOT

kubernetes_validate = pytest.importorskip("kubernetes_validate")

BASE = ROOT / "deploy" / "kubernetes"
BIN = Path(sys.executable).parent
# The oldest and newest Kubernetes versions whose schemas the validator ships that we check.
VERSIONS = ("1.28.0", "1.37.0")


def base_objects() -> list[dict[str, Any]]:
    kustomization = yaml.safe_load((BASE / "kustomization.yaml").read_text())
    objects = []
    for resource in kustomization["resources"]:
        objects += [d for d in yaml.safe_load_all((BASE / resource).read_text()) if d]
    return objects


OBJECTS = base_objects()


def find(kind: str, name: str, objects: list[dict[str, Any]] = OBJECTS) -> dict[str, Any]:
    found = [o for o in objects if o["kind"] == kind and o["metadata"]["name"] == name]
    assert len(found) == 1, f"{kind}/{name}: {len(found)} objects"
    return found[0]


def pod_spec(kind: str, name: str) -> dict[str, Any]:
    return find(kind, name)["spec"]["template"]["spec"]


def container(spec: dict[str, Any], name: str) -> dict[str, Any]:
    return next(c for c in spec["containers"] if c["name"] == name)


def mount_of(c: dict[str, Any], volume: str) -> dict[str, Any]:
    return next(m for m in c["volumeMounts"] if m["name"] == volume)


def volume_of(spec: dict[str, Any], name: str) -> dict[str, Any]:
    return next(v for v in spec["volumes"] if v["name"] == name)


def server_conf() -> dict[str, Any]:
    return hcl.loads(find("ConfigMap", "spire-server")["data"]["server.conf"])


def agent_conf() -> dict[str, Any]:
    return hcl.loads(find("ConfigMap", "spire-agent")["data"]["agent.conf"])


@pytest.mark.parametrize("version", VERSIONS)
def test_every_object_passes_the_kubernetes_schema_strictly(version):
    kinds = set()
    for obj in OBJECTS:
        kubernetes_validate.validate(obj, version, strict=True)
        kinds.add(obj["kind"])
    assert {"Namespace", "ServiceAccount", "ClusterRole", "ClusterRoleBinding", "Role", "RoleBinding",
            "ConfigMap", "StatefulSet", "Service", "DaemonSet", "Deployment"} <= kinds


def test_the_validator_refuses_a_misspelt_field():
    bad = copy.deepcopy(find("DaemonSet", "spire-agent"))
    bad["spec"]["template"]["spec"]["containers"][0]["imagePullPolcy"] = "IfNotPresent"
    with pytest.raises(kubernetes_validate.ValidationError, match="imagePullPolcy"):
        kubernetes_validate.validate(bad, VERSIONS[-1], strict=True)


def test_kustomize_renders_the_same_objects_in_namespace_spire():
    kubectl = shutil.which("kubectl")
    if kubectl is None:
        pytest.skip("kubectl (with its kustomize) is not installed; the files were checked directly")
    out = subprocess.run([kubectl, "kustomize", str(BASE)], capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stderr
    rendered = [d for d in yaml.safe_load_all(out.stdout) if d]
    assert sorted((o["kind"], o["metadata"]["name"]) for o in rendered) == \
        sorted((o["kind"], o["metadata"]["name"]) for o in OBJECTS)
    for obj in rendered:
        if obj["kind"] not in ("Namespace", "ClusterRole", "ClusterRoleBinding"):
            assert obj["metadata"]["namespace"] == "spire", obj["metadata"]
        assert obj["metadata"]["labels"]["app.kubernetes.io/part-of"] == "spire"
        kubernetes_validate.validate(obj, VERSIONS[-1], strict=True)


@pytest.mark.parametrize("side,configmap,key", [("server", "spire-server", "server.conf"),
                                                ("agent", "spire-agent", "agent.conf")])
def test_the_configmaps_hcl_passes_validate(tmp_path, side, configmap, key):
    conf = tmp_path / key
    conf.write_text(find("ConfigMap", configmap)["data"][key])
    proc = subprocess.run([str(BIN / f"spire-{side}"), "validate", "-config", str(conf)],
                          capture_output=True, text=True, timeout=60)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.strip() == f"SPIRE {side} configuration file is valid."
    assert proc.stderr == ""  # no unacted-setting warnings either


def test_the_agents_token_is_the_one_the_server_accepts():
    server = server_conf()["plugins"]["NodeAttestor"]["k8s_psat"]["plugin_data"]
    agent = agent_conf()["plugins"]["NodeAttestor"]["k8s_psat"]["plugin_data"]
    cluster = server["clusters"][agent["cluster"]]
    ds = pod_spec("DaemonSet", "spire-agent")
    sa = find("ServiceAccount", ds["serviceAccountName"])
    assert f"{sa['metadata']['namespace']}:{sa['metadata']['name']}" in cluster["service_account_allow_list"]
    token = volume_of(ds, "spire-token")["projected"]["sources"][0]["serviceAccountToken"]
    assert token["audience"] in cluster["audience"]
    mount = mount_of(container(ds, "spire-agent"), "spire-token")
    assert agent["token_path"] == f"{mount['mountPath']}/{token['path']}"


def test_the_agent_bootstraps_from_the_bundle_the_server_publishes():
    publisher = server_conf()["plugins"]["BundlePublisher"]["k8s_configmap"]["plugin_data"]["clusters"]
    cluster = publisher[agent_conf()["plugins"]["NodeAttestor"]["k8s_psat"]["plugin_data"]["cluster"]]
    assert cluster["format"] == "pem"
    bundle_cm = find("ConfigMap", cluster["configmap_name"])
    assert bundle_cm["metadata"]["namespace"] == cluster["namespace"]
    assert "data" not in bundle_cm  # `kubectl apply` must not overwrite what the server published
    ds = pod_spec("DaemonSet", "spire-agent")
    assert volume_of(ds, "spire-bundle")["configMap"]["name"] == cluster["configmap_name"]
    mount = mount_of(container(ds, "spire-agent"), "spire-bundle")
    assert agent_conf()["agent"]["trust_bundle_path"] == f"{mount['mountPath']}/{cluster['configmap_key']}"
    # The server may write that ConfigMap and no other.
    role = find("Role", "spire-server-bundle")
    assert role["rules"] == [{"apiGroups": [""], "resources": ["configmaps"],
                              "resourceNames": [cluster["configmap_name"]], "verbs": ["get", "patch", "update"]}]
    binding = find("RoleBinding", "spire-server-bundle")
    assert binding["subjects"][0]["name"] == pod_spec("StatefulSet", "spire-server")["serviceAccountName"]


def test_rbac_gives_the_server_token_reviews_and_the_agent_the_kubelet():
    server_rules = find("ClusterRole", "spire-server-cluster-role")["rules"]
    assert {"apiGroups": ["authentication.k8s.io"], "resources": ["tokenreviews"], "verbs": ["create"]} in server_rules
    assert {"apiGroups": [""], "resources": ["pods", "nodes"], "verbs": ["get"]} in server_rules
    agent_rules = find("ClusterRole", "spire-agent-cluster-role")["rules"]
    assert agent_rules == [{"apiGroups": [""], "resources": ["pods", "nodes", "nodes/proxy"], "verbs": ["get"]}]
    for binding, account in (("spire-server-cluster-role-binding", "spire-server"),
                             ("spire-agent-cluster-role-binding", "spire-agent")):
        subject = find("ClusterRoleBinding", binding)["subjects"][0]
        assert (subject["kind"], subject["name"], subject["namespace"]) == ("ServiceAccount", account, "spire")


def test_the_workload_api_socket_is_on_the_node_for_workloads():
    conf = agent_conf()
    ds = pod_spec("DaemonSet", "spire-agent")
    assert ds["hostPID"] is True
    assert volume_of(ds, "spire-agent-socket-dir")["hostPath"]["path"] == "/run/spire/agent-sockets"
    agent_mount = mount_of(container(ds, "spire-agent"), "spire-agent-socket-dir")["mountPath"]
    socket = conf["agent"]["socket_path"]
    assert socket == f"{agent_mount}/api.sock"
    workload = pod_spec("Deployment", "example-workload")
    assert volume_of(workload, "spire-agent-socket")["hostPath"]["path"] == "/run/spire/agent-sockets"
    wmount = mount_of(container(workload, "example-workload"), "spire-agent-socket")
    assert wmount["readOnly"] is True
    assert f"-socketPath {wmount['mountPath']}/api.sock" in container(workload, "example-workload")["args"][0]
    # The k8s WorkloadAttestor finds the node's kubelet through the downward API.
    attestor = conf["plugins"]["WorkloadAttestor"]["k8s"]["plugin_data"]
    env = {e["name"]: e for e in container(ds, "spire-agent")["env"]}
    assert env[attestor["node_name_env"]]["valueFrom"]["fieldRef"]["fieldPath"] == "spec.nodeName"


def test_probes_run_the_healthcheck_commands_on_the_configured_sockets():
    server = container(pod_spec("StatefulSet", "spire-server"), "spire-server")
    agent = container(pod_spec("DaemonSet", "spire-agent"), "spire-agent")
    for c, side, socket in ((server, "server", server_conf()["server"]["socket_path"]),
                            (agent, "agent", agent_conf()["agent"]["socket_path"])):
        for probe in ("livenessProbe", "readinessProbe"):
            cmd = c[probe]["exec"]["command"]
            assert cmd[:2] == [f"spire-{side}", "healthcheck"]
            assert cmd[cmd.index("-socketPath") + 1] == socket


def test_the_server_keeps_its_data_on_a_volume_and_serves_8081():
    sts = find("StatefulSet", "spire-server")
    conf = server_conf()["server"]
    c = container(sts["spec"]["template"]["spec"], "spire-server")
    claim = sts["spec"]["volumeClaimTemplates"][0]["metadata"]["name"]
    assert mount_of(c, claim)["mountPath"] == conf["data_dir"]
    assert c["args"] == ["spire-server", "run", "-config", "/run/spire/config/server.conf"]
    service = find("Service", "spire-server")
    assert service["spec"]["ports"][0]["port"] == int(conf["bind_port"]) == 8081
    assert service["spec"]["selector"] == sts["spec"]["template"]["metadata"]["labels"]
    # The agents reach it by the Service's name in their namespace.
    assert agent_conf()["agent"]["server_address"] == service["metadata"]["name"]


def test_every_daemon_runs_as_uid_1000_without_privileges():
    for kind, name in (("StatefulSet", "spire-server"), ("DaemonSet", "spire-agent"),
                       ("Deployment", "example-workload")):
        spec = pod_spec(kind, name)
        for c in spec["containers"]:
            ctx = {**spec.get("securityContext", {}), **c.get("securityContext", {})}
            assert ctx["runAsUser"] == 1000 and ctx["runAsNonRoot"] is True, (name, ctx)
            assert c["securityContext"]["allowPrivilegeEscalation"] is False
            assert c["securityContext"]["readOnlyRootFilesystem"] is True
            assert c["securityContext"]["capabilities"] == {"drop": ["ALL"]}
            if name != "example-workload":
                # The daemons need a writable /tmp (scripts/image-smoke.sh runs them so, without
                # podman's default tmpfs: with a read-only /tmp the server stops at start).
                tmp = mount_of(c, "tmp")
                assert tmp["mountPath"] == "/tmp" and "emptyDir" in volume_of(spec, "tmp")
    # Only the agent's first init container is root, with CHOWN alone, to hand it the socket directory.
    socket_dir, wait = pod_spec("DaemonSet", "spire-agent")["initContainers"]
    assert socket_dir["securityContext"]["capabilities"] == {"drop": ["ALL"], "add": ["CHOWN"]}
    assert socket_dir["command"] == ["chown", "1000:1000", "/run/spire/agent-sockets"]
    assert wait["securityContext"]["runAsUser"] == 1000 and wait["securityContext"]["runAsNonRoot"] is True
    assert wait["securityContext"]["capabilities"] == {"drop": ["ALL"]}


def test_agents_wait_for_the_published_bundle_with_a_bound():
    wait = pod_spec("DaemonSet", "spire-agent")["initContainers"][1]
    bundle = agent_conf()["agent"]["trust_bundle_path"]
    assert f"[ -s {bundle} ] && exit 0" in wait["args"][0]
    assert "seq 1 600" in wait["args"][0] and wait["args"][0].rstrip().endswith("exit 1")
    assert mount_of(wait, "spire-bundle")["mountPath"] == bundle.rsplit("/", 1)[0]
