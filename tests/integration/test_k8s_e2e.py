"""Kubernetes end to end, with real processes and no cluster: the loopback API server and kubelet
of helpers/kube.py, and a workload placed in a real cgroup named as the kubelet names a pod's.

The server attests the agent with k8s_psat (its projected token reviewed by the API server
fixture, which verifies the RS256 signature), publishes its bundle into a ConfigMap
(BundlePublisher k8s_configmap, PEM) and a second one (Notifier k8sbundle) at start and again
after AppendBundle. Evicted, the agent re-attests to the same ID. The agent's k8s attestor reads the workload's /proc/<pid>/cgroup, finds the
pod UID and container ID there, asks the kubelet fixture over TLS with its bearer token, and the
workload gets the SVID of its k8s:ns/k8s:sa entry; a process outside pods, or in a pod of another
service account, gets nothing.
"""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
import uuid
from pathlib import Path
from typing import Any, Callable, Iterator

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import serialization
from grpclib.client import Channel

from spire_py.proto.spire.api.server.bundle.v1 import bundle_grpc, bundle_pb2
from tests.integration.helpers.harness import (
    ME, TD, WORKLOAD, AgentHandle, ServerHandle, entry_create, fetch, short_dir, wait_for,
)
from tests.integration.helpers.kube import KubeAPIServer, Kubelet, kube_api_server, kubelet, node, pod
from tests.integration.helpers.pki import make_ca

CGROUP_ROOT = Path("/sys/fs/cgroup/pids")


def _why_not() -> str:
    if sys.platform != "linux" or os.geteuid() != 0:
        return "needs root on Linux to place a process in a cgroup"
    if not (CGROUP_ROOT / "cgroup.procs").exists() or not os.access(CGROUP_ROOT, os.W_OK):
        return f"no writable cgroup v1 pids hierarchy at {CGROUP_ROOT}"
    return ""


pytestmark = pytest.mark.skipif(bool(_why_not()), reason=_why_not() or "-")


@pytest.fixture
def cluster(tmp_path: Path) -> Iterator[tuple[KubeAPIServer, Kubelet, Path]]:
    d = short_dir(tmp_path, "kube")
    with kube_api_server(d) as api, kubelet(d) as kl:
        yield api, kl, d


@pytest.fixture
def pod_cgroups() -> Iterator[Callable[[], tuple[str, str, Path]]]:
    """Makes (pod UID, container ID, the container's cgroup), as the kubelet's cgroupfs driver names them."""
    made: list[Path] = []

    def make() -> tuple[str, str, Path]:
        pod_uid, cid = str(uuid.uuid4()), uuid.uuid4().hex + uuid.uuid4().hex
        top = CGROUP_ROOT / f"kubepods-spire-py-test-{uuid.uuid4().hex[:8]}"
        path = top / "besteffort" / f"pod{pod_uid}" / cid
        path.mkdir(parents=True)
        made.extend([path, path.parent, path.parent.parent, top])
        return pod_uid, cid, path

    try:
        yield make
    finally:
        for p in made:
            try:
                p.rmdir()
            except OSError:
                pass


def in_cgroup(cgroup: Path, *args: str) -> subprocess.CompletedProcess[str]:
    """Run a command whose process is in ``cgroup`` before it execs (the shell moves itself)."""
    script = f'echo $$ > "{cgroup}/cgroup.procs" && exec "$0" "$@"'
    return subprocess.run(["sh", "-c", script, *args], capture_output=True, text=True, timeout=60)


def pem_certs(text: str) -> list[x509.Certificate]:
    return x509.load_pem_x509_certificates(text.encode())


async def append_authority(server: ServerHandle, cert: x509.Certificate) -> None:
    channel = Channel(path=server.socket)
    try:
        await bundle_grpc.BundleStub(channel).AppendBundle(bundle_pb2.AppendBundleRequest(
            x509_authorities=[{"asn1": cert.public_bytes(serialization.Encoding.DER)}]), timeout=30)
    finally:
        channel.close()


def test_k8s_psat_agent_k8s_workload_and_configmap_bundle(
        cluster: tuple[KubeAPIServer, Kubelet, Path], pod_cgroups: Callable[[], tuple[str, str, Path]],
        make_server: Callable[..., ServerHandle], start_agent: Callable[..., AgentHandle]) -> None:
    api, kl, d = cluster
    pod_uid, cid, cgroup = pod_cgroups()
    other_uid, other_cid, other_cgroup = pod_cgroups()
    node_uid = str(uuid.uuid4())
    api.add_node(node("node-1", uid=node_uid, labels={"topology.kubernetes.io/zone": "z1"}))
    agent_pod = api.add_pod(pod("spire", "spire-agent-x7k2p", node_name="node-1", service_account="spire-agent"))
    token = d / "spire-agent-token"
    token.write_text(api.issuer.token("spire", "spire-agent", "spire-agent-x7k2p", agent_pod["metadata"]["uid"]))
    kubeconfig = api.write_kubeconfig(d / "kubeconfig")
    api.configmaps[("spire", "spire-bundle")] = {"metadata": {"name": "spire-bundle", "namespace": "spire",
                                                              "resourceVersion": "1"}, "data": {}}
    kl.pods.append(pod("prod", "web-5c9d", uid=pod_uid, node_name="node-1", service_account="web",
                       containers=[{"name": "web", "image": "web:1", "imageID": "registry/web@sha256:01",
                                    "containerID": f"containerd://{cid}"}]))
    kl.pods.append(pod("prod", "batch-1", uid=other_uid, node_name="node-1", service_account="batch",
                       containers=[{"name": "batch", "image": "batch:1", "imageID": "registry/batch@sha256:02",
                                    "containerID": f"containerd://{other_cid}"}]))

    server = make_server(extra_plugins=f'''
    NodeAttestor "k8s_psat" {{ plugin_data {{ clusters = {{ "test-cluster" = {{
        service_account_allow_list = ["spire:spire-agent"]
        kube_config_file = "{kubeconfig}"
        allowed_node_label_keys = ["topology.kubernetes.io/zone"]
    }} }} }} }}
    BundlePublisher "k8s_configmap" {{ plugin_data {{ clusters = {{ "c1" = {{
        configmap_name = "trust-bundle"
        configmap_key = "bundle.pem"
        namespace = "spire"
        kubeconfig_path = "{kubeconfig}"
        format = "pem"
    }} }} }} }}
    Notifier "k8sbundle" {{ plugin_data {{ kube_config_file_path = "{kubeconfig}" }} }}''')
    roots = pem_certs(server.cli("bundle", "show").stdout)
    # Published at start, before the server answered its health check.
    assert pem_certs(api.configmap_data("spire", "trust-bundle")["bundle.pem"]) == roots
    assert pem_certs(api.configmap_data("spire", "spire-bundle")["bundle.crt"]) == roots

    agent = start_agent(server, node_attestor=f'''NodeAttestor "k8s_psat" {{ plugin_data {{
        cluster = "test-cluster"
        token_path = "{token}"
    }} }}''', extra_plugins=f'''WorkloadAttestor "k8s" {{ plugin_data {{
        kubelet_secure_port = {kl.port}
        kubelet_ca_path = "{kl.write_ca()}"
        token_path = "{kl.write_token()}"
        node_name = ""
        poll_retry_interval = "100ms"
    }} }}''')
    agent_id = f"spiffe://{TD}/spire/agent/k8s_psat/test-cluster/{node_uid}"
    shown = server.cli("agent", "show", "-spiffeID", agent_id).stdout
    assert "k8s_psat:agent_node_label:topology.kubernetes.io/zone:z1" in shown
    assert "k8s_psat:agent_sa:spire-agent" in shown

    web = f"spiffe://{TD}/ns/prod/sa/web"
    entry_create(server, agent_id, web, "-selector", "k8s:ns:prod", "-selector", "k8s:sa:web")
    got: dict[str, Any] = {}

    def workload_gets_its_svid() -> bool:
        proc = in_cgroup(cgroup, sys.executable, WORKLOAD, str(ME), agent.socket, "fetch")
        if proc.returncode == 0 and f'"{web}"' in proc.stdout:
            got["out"] = proc.stdout
            return True
        return False

    wait_for(workload_gets_its_svid, 60, "the pod's workload SVID", interval=0.5)
    assert any(r == "GET /pods" for r in kl.requests)
    assert fetch(agent.socket) is None  # this test's own process is in no pod: no entry matches it
    # A pod of the same namespace with another service account is not the web entry's workload.
    other = in_cgroup(other_cgroup, sys.executable, WORKLOAD, str(ME), agent.socket, "fetch")
    assert other.returncode != 0 and web not in other.stdout, other.stdout + other.stderr

    # k8s_psat agents may re-attest: evicted, the agent attests again with its token, to the same ID.
    server.cli("agent", "evict", "-spiffeID", agent_id)
    wait_for(lambda: "Agent refused; re-attesting" in agent.proc.logs()
             and server.cli("agent", "show", "-spiffeID", agent_id, check=False).returncode == 0, 60,
             "the evicted agent re-attested")
    assert agent.proc.alive()

    # A bundle change reaches both ConfigMaps.
    extra = make_ca("Appended Root").cert
    asyncio.run(append_authority(server, extra))
    wait_for(lambda: extra in pem_certs(api.configmap_data("spire", "trust-bundle")["bundle.pem"]), 60,
             "the appended root in the published ConfigMap")
    wait_for(lambda: extra in pem_certs(api.configmap_data("spire", "spire-bundle")["bundle.crt"]), 60,
             "the appended root in the k8sbundle ConfigMap")
