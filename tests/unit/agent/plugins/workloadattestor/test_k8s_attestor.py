"""WorkloadAttestor "k8s": config, pod/container location from cgroup files (a ``HOST_PROC`` tree
written by the test), the kubelet fixture over TLS with a bearer token, retries, selectors."""

from __future__ import annotations

from pathlib import Path
from typing import Any, Iterator

import pytest

from spire_py.agent.plugins.workloadattestor.base import WorkloadAttestationError
from spire_py.agent.plugins.workloadattestor.k8s import K8sWorkloadAttestor, legacy_locate, pod_uid_in
from spire_py.agent.plugins.workloadattestor.containerinfo import parse_cgroups
from spire_py.common.plugin import PluginConfigError, PluginContext
from tests.integration.helpers.kube import Kubelet, kubelet, pod

CTX = PluginContext("example.org", side="agent")
POD_UID = "2c48913c-b29f-11e7-9350-020968147796"
CID = "9bca8d63d5fa610783847915bcff0ecac1273e5b4bed3f6fa1b07350e0135961"
INIT_CID = "aff34703e5e1f89443e9a1bffcc80f43f74d4808a2dd22c8f88c08547b323934"
PID = 4242


def workload_pod(uid: str = POD_UID, cid: str = CID) -> dict[str, Any]:
    return pod("prod", "web-7d9f", uid=uid, node_name="node-1", service_account="web", labels={"app": "web"},
               containers=[{"name": "web", "image": "nginx:1.27", "imageID": "docker.io/nginx@sha256:aa",
                            "containerID": f"containerd://{cid}"},
                           {"name": "side", "image": "envoy:1", "imageID": "docker.io/envoy@sha256:bb",
                            "containerID": "containerd://" + "c" * 64}],
               init_containers=[{"name": "init", "image": "busybox:1", "imageID": "docker.io/busybox@sha256:cc",
                                 "containerID": f"containerd://{INIT_CID}"}],
               owners=[{"kind": "ReplicaSet", "name": "web-7d9f", "uid": "rs-uid"}])


@pytest.fixture
def proc(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    root = tmp_path / "proc"
    (root / str(PID)).mkdir(parents=True)
    monkeypatch.setenv("HOST_PROC", str(root))
    return root


def in_cgroup(proc: Path, path: str) -> None:
    (proc / str(PID) / "cgroup").write_text(f"12:pids:{path}\n11:memory:{path}\n0::/\n")


@pytest.fixture
def kl(tmp_path: Path) -> Iterator[Kubelet]:
    with kubelet(tmp_path) as k:
        k.pods.append(workload_pod())
        yield k


def attestor(k: Kubelet, **extra: Any) -> K8sWorkloadAttestor:
    data = {"kubelet_secure_port": k.port, "kubelet_ca_path": str(k.write_ca()), "token_path": str(k.write_token()),
            "poll_retry_interval": "10ms", **extra}
    return K8sWorkloadAttestor.configure(data, CTX)


def values(selectors: list[Any]) -> set[str]:
    assert all(s.type == "k8s" for s in selectors)
    return {s.value for s in selectors}


async def test_pod_and_container_selectors_over_the_secure_port(kl: Kubelet, proc: Path) -> None:
    in_cgroup(proc, f"/kubepods/burstable/pod{POD_UID}/{CID}")
    got = values(await attestor(kl).attest(PID, 1000, 1000))
    assert got == {
        "sa:web", "ns:prod", "node-name:node-1", f"pod-uid:{POD_UID}", "pod-name:web-7d9f",
        "pod-image-count:2", "pod-init-image-count:1",
        "pod-image:nginx:1.27", "pod-image:docker.io/nginx@sha256:aa", "pod-image:envoy:1",
        "pod-image:docker.io/envoy@sha256:bb", "pod-init-image:busybox:1", "pod-init-image:docker.io/busybox@sha256:cc",
        "pod-label:app:web", "pod-owner:ReplicaSet:web-7d9f", "pod-owner-uid:ReplicaSet:rs-uid",
        "container-name:web", "container-image:nginx:1.27", "container-image:docker.io/nginx@sha256:aa",
    }
    assert kl.requests == ["GET /pods"]


async def test_systemd_driver_cgroup_names_the_pod(kl: Kubelet, proc: Path) -> None:
    uid = POD_UID.replace("-", "_")
    in_cgroup(proc, f"/kubepods.slice/kubepods-besteffort.slice/kubepods-besteffort-pod{uid}.slice/"
                    f"cri-containerd-{CID}.scope")
    assert f"pod-uid:{POD_UID}" in values(await attestor(kl).attest(PID, 0, 0))


async def test_init_container_is_found(kl: Kubelet, proc: Path) -> None:
    in_cgroup(proc, f"/kubepods/besteffort/pod{POD_UID}/{INIT_CID}")
    got = values(await attestor(kl).attest(PID, 0, 0))
    assert "container-name:init" in got


async def test_disable_container_selectors(kl: Kubelet, proc: Path) -> None:
    in_cgroup(proc, f"/kubepods/besteffort/pod{POD_UID}/{'d' * 64}")  # a container not yet in the status
    got = values(await attestor(kl, disable_container_selectors=True).attest(PID, 0, 0))
    assert "ns:prod" in got and not any(v.startswith("container-") for v in got)


async def test_process_outside_pods_gets_nothing_and_no_error(kl: Kubelet, proc: Path) -> None:
    in_cgroup(proc, "/user.slice/user-1000.slice/session-3.scope")
    assert await attestor(kl).attest(PID, 0, 0) == []
    assert kl.requests == []  # the kubelet was not even asked


async def test_container_outside_pods_gets_nothing(kl: Kubelet, proc: Path) -> None:
    in_cgroup(proc, f"/system.slice/docker-{'e' * 64}.scope")
    assert await attestor(kl).attest(PID, 0, 0) == []


async def test_pod_not_yet_listed_is_polled_again(kl: Kubelet, proc: Path) -> None:
    in_cgroup(proc, f"/kubepods/burstable/pod{POD_UID}/{CID}")
    kl.hide_for = 3
    got = values(await attestor(kl).attest(PID, 0, 0))
    assert "pod-name:web-7d9f" in got and len(kl.requests) == 4


async def test_concurrent_attestations_share_one_pod_list(kl: Kubelet, proc: Path) -> None:
    import asyncio

    in_cgroup(proc, f"/kubepods/burstable/pod{POD_UID}/{CID}")
    a = attestor(kl)
    results = await asyncio.gather(*(a.attest(PID, 0, 0) for _ in range(8)))
    assert all("sa:web" in values(r) for r in results)
    assert kl.requests == ["GET /pods"]


async def test_gives_up_after_max_poll_attempts(kl: Kubelet, proc: Path) -> None:
    in_cgroup(proc, f"/kubepods/burstable/pod{POD_UID}/{CID}")
    kl.hide_for = 100
    with pytest.raises(WorkloadAttestationError, match="no selectors found after max poll attempts"):
        await attestor(kl, max_poll_attempts=3).attest(PID, 0, 0)
    assert len(kl.requests) == 3


async def test_two_pods_with_the_same_container_are_refused(kl: Kubelet, proc: Path) -> None:
    kl.pods.append(workload_pod(uid="11111111-2222-3333-4444-555555555555"))
    in_cgroup(proc, f"/docker/{CID}")  # the container, with no pod in its cgroups
    with pytest.raises(WorkloadAttestationError, match="two pods found with same container Id"):
        await attestor(kl).attest(PID, 0, 0)


async def test_untrusted_kubelet_certificate_fails(kl: Kubelet, proc: Path, tmp_path: Path) -> None:
    in_cgroup(proc, f"/kubepods/burstable/pod{POD_UID}/{CID}")
    other = tmp_path / "other"
    other.mkdir()
    with kubelet(other) as stranger:
        a = attestor(kl, kubelet_ca_path=str(stranger.write_ca()))
    with pytest.raises(WorkloadAttestationError, match="CERTIFICATE_VERIFY_FAILED"):
        await a.attest(PID, 0, 0)


async def test_node_name_is_the_kubelets_host_and_verified_name(kl: Kubelet, proc: Path,
                                                                  monkeypatch: pytest.MonkeyPatch) -> None:
    in_cgroup(proc, f"/kubepods/burstable/pod{POD_UID}/{CID}")
    monkeypatch.setenv("KUBE_NODE", "localhost")  # the kubelet's certificate names localhost
    a = attestor(kl, node_name_env="KUBE_NODE")
    assert a.client.url == f"https://localhost:{kl.port}/pods"
    assert "ns:prod" in values(await a.attest(PID, 0, 0))


async def test_skip_kubelet_verification(kl: Kubelet, proc: Path, tmp_path: Path) -> None:
    in_cgroup(proc, f"/kubepods/burstable/pod{POD_UID}/{CID}")
    a = attestor(kl, skip_kubelet_verification=True, kubelet_ca_path="/nonexistent")
    assert "ns:prod" in values(await a.attest(PID, 0, 0))


async def test_wrong_bearer_token_is_refused_by_the_kubelet(kl: Kubelet, proc: Path) -> None:
    in_cgroup(proc, f"/kubepods/burstable/pod{POD_UID}/{CID}")
    wrong = kl.directory / "wrong-token"
    wrong.write_text("not-the-token")
    a = attestor(kl, token_path=str(wrong))
    with pytest.raises(WorkloadAttestationError, match="unexpected status code on pods response: 401"):
        await a.attest(PID, 0, 0)


async def test_read_only_port(tmp_path: Path, proc: Path) -> None:
    in_cgroup(proc, f"/kubepods/burstable/pod{POD_UID}/{CID}")
    with kubelet(tmp_path, secure=False) as k:
        k.pods.append(workload_pod())
        a = K8sWorkloadAttestor.configure({"kubelet_read_only_port": k.port}, CTX)
        assert "sa:web" in values(await a.attest(PID, 0, 0))


def test_both_ports_are_refused() -> None:
    with pytest.raises(PluginConfigError, match="cannot use both the read-only and secure port"):
        K8sWorkloadAttestor.check_config({"kubelet_read_only_port": 10255, "kubelet_secure_port": 10250}, CTX)


def test_certificate_without_key_is_refused() -> None:
    with pytest.raises(PluginConfigError, match="the private key path is required with the certificate path"):
        K8sWorkloadAttestor.check_config({"certificate_path": "/c.pem"}, CTX)


def test_missing_ca_stops_the_start_as_spire(tmp_path: Path) -> None:
    with pytest.raises(PluginConfigError, match="unable to load kubelet CA"):
        K8sWorkloadAttestor.configure({"kubelet_ca_path": str(tmp_path / "none.pem")}, CTX)


def test_sigstore_is_refused_not_ignored() -> None:
    with pytest.raises(PluginConfigError, match="sigstore image signature verification is not supported"):
        K8sWorkloadAttestor.check_config({"experimental": {"sigstore": {"allowed_identities": {}}}}, CTX)


@pytest.mark.parametrize("path,uid", [
    (f"/kubepods/burstable/pod{POD_UID}/{CID}", POD_UID),
    (f"/kubepods-besteffort-pod{POD_UID.replace('-', '_')}.slice:cri-containerd:{CID}", POD_UID),
    (f"/system.slice/docker-{CID}.scope", ""),
])
def test_pod_uid_in_cgroup_paths(path: str, uid: str) -> None:
    assert pod_uid_in(path) == uid


def test_legacy_locator_matches_spires_regex() -> None:
    cgroups = parse_cgroups(f"4:pids:/kubepods.slice/kubepods-burstable.slice/kubepods-burstable-pod"
                            f"{POD_UID}.slice/docker-{CID}.scope\n")
    assert legacy_locate(cgroups) == (POD_UID, CID)
