"""WorkloadAttestor "docker": config, container location, retries and selectors.

The engine is a small Docker Engine API served over a Unix socket in the test (the docker SDK
talks real HTTP to it); tests/integration/test_docker_attestor.py runs against podman's.
"""

from __future__ import annotations

import json
import os
import socketserver
import threading
from http.server import BaseHTTPRequestHandler

import pytest

from spire_py.agent.plugins.workloadattestor import docker as docker_attestor
from spire_py.agent.plugins.workloadattestor.base import WorkloadAttestationError
from spire_py.agent.plugins.workloadattestor.docker import DockerConfig, DockerWorkloadAttestor, selector_values
from spire_py.common.plugin import PluginConfigError, PluginContext
from spire_py.common.registration import Selector

CTX = PluginContext("example.org", side="agent")
CID = "3f9c1d4e5b6a7980a1b2c3d4e5f60718293a4b5c6d7e8f90a1b2c3d4e5f60718"
IMAGE_ID = "sha256:" + "ab" * 32
CONTAINER = {"Id": CID, "Config": {"Labels": {"app": "web", "tier": "front"}, "Env": ["PATH=/bin", "MODE=prod"],
                                   "Image": "localhost/web:1"}}


class FakeEngine(socketserver.ThreadingMixIn, socketserver.UnixStreamServer):
    """GET /version, /v<ver>/containers/<id>/json, /v<ver>/images/<name>/json; counts the calls."""

    daemon_threads = True

    def __init__(self, path: str, not_found_times: int = 0) -> None:
        self.not_found_times = not_found_times
        self.paths: list[str] = []
        super().__init__(path, _Handler)
        threading.Thread(target=self.serve_forever, daemon=True).start()

    def stop(self) -> None:
        self.shutdown()
        self.server_close()


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    server: FakeEngine

    def log_message(self, *args: object) -> None:
        pass

    def address_string(self) -> str:
        return "unix"

    def _send(self, code: int, body: object) -> None:
        data = json.dumps(body).encode()
        self.send_response(code)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def do_GET(self) -> None:  # noqa: N802 (http.server's name)
        self.server.paths.append(self.path)
        if self.path == "/version":
            return self._send(200, {"ApiVersion": "1.41", "Version": "fake"})
        if self.path.endswith(f"/containers/{CID}/json"):
            if self.server.not_found_times > 0:
                self.server.not_found_times -= 1
                return self._send(404, {"message": f"no such container: {CID}"})
            return self._send(200, CONTAINER)
        if self.path.endswith("/images/localhost/web:1/json"):
            return self._send(200, {"Id": IMAGE_ID})
        return self._send(404, {"message": "not found"})


@pytest.fixture
def proc(tmp_path, monkeypatch):
    """A /proc with pid 123 in the container and pid 124 outside any."""
    root = tmp_path / "proc"
    for pid, cgroup in ((123, f"0::/system.slice/docker-{CID}.scope\n"), (124, "0::/user.slice/session-1.scope\n")):
        (root / str(pid)).mkdir(parents=True)
        (root / str(pid) / "cgroup").write_text(cgroup)
    monkeypatch.setenv("HOST_PROC", str(root))
    return root


@pytest.fixture
def engine(tmp_path):
    sock = os.path.join(os.environ.get("TMPDIR", "/tmp"), f"docker-{os.getpid()}-{id(tmp_path)}.sock")
    started: list[FakeEngine] = []

    def start(**kw: int) -> tuple[FakeEngine, str]:
        e = FakeEngine(sock, **kw)
        started.append(e)
        return e, f"unix://{sock}"

    yield start
    for e in started:
        e.stop()
    if os.path.exists(sock):
        os.unlink(sock)


async def no_sleep(_: float) -> None:
    pass


def attestor(**data) -> DockerWorkloadAttestor:
    plugin = DockerWorkloadAttestor.configure(data, CTX)
    plugin._sleep = no_sleep
    return plugin


# --- config ---
def test_defaults_are_spires():
    config = DockerWorkloadAttestor.parse_config({}, CTX)
    assert config == DockerConfig()
    assert config.docker_socket_path == "unix:///var/run/docker.sock"
    assert config.podman_socket_path == "unix:///run/podman/podman.sock"
    assert config.use_new_container_locator is None


@pytest.mark.parametrize("data,key,why", [
    ({"docker_socket_path": "/var/run/docker.sock"}, "docker_socket_path", "unable to parse docker host"),
    ({"docker_version": "latest"}, "docker_version", "invalid API version"),
    ({"container_id_cgroup_matchers": ["/docker/<id>"]}, "container_id_cgroup_matchers", "cannot both be used"),
    ({"container_id_cgroup_matchers": ["/docker/<id>"], "use_new_container_locator": True},
     "container_id_cgroup_matchers", "cannot both be used"),
    ({"container_id_cgroup_matchers": ["/a/b/<id>", "/*/b/<id>"], "use_new_container_locator": False},
     "container_id_cgroup_matchers", "ambiguous"),
    ({"container_id_cgroup_matchers": ["/docker/*"], "use_new_container_locator": False},
     "container_id_cgroup_matchers", "exactly once"),
    ({"podman_socket_path_template": "unix:///run/podman.sock"}, "podman_socket_path_template", "exactly one %d"),
    ({"use_new_container_locator": "yes please"}, "use_new_container_locator", "expected true or false"),
    ({"cgroup_prefix": "/docker"}, "cgroup_prefix", "unknown configuration key"),
    # SPIRE's sigstore sample: refused, not ignored (no image would be verified)
    ({"experimental": {"sigstore": {"allowed_identities": {"https://token.actions.githubusercontent.com":
                                                            ["https://github.com/myorg/.*"]},
                                    "skipped_images": ["registry/image@sha256:examplehash"]}}},
     "experimental", "sigstore image signature verification is not supported"),
    ({"experimental": {"cosign": {}}}, "experimental", 'unknown configuration key "cosign"'),
])
def test_config_refusals_name_the_key(data, key, why):
    with pytest.raises(PluginConfigError, match=why) as err:
        DockerWorkloadAttestor.check_config(data, CTX)
    assert err.value.key == key


def test_legacy_matchers_need_the_new_locator_off():
    plugin = DockerWorkloadAttestor.configure(
        {"container_id_cgroup_matchers": ["/system.slice/<id>"], "use_new_container_locator": False}, CTX)
    assert plugin.matchers is not None


# --- attestation ---
def test_selectors_follow_spires_format():
    assert sorted(selector_values(CONTAINER["Config"], IMAGE_ID)) == sorted([
        "label:app:web", "label:tier:front", "env:PATH=/bin", "env:MODE=prod",
        "image_id:localhost/web:1", f"image_config_digest:{IMAGE_ID}"])
    assert selector_values({"Labels": None, "Env": None, "Image": ""}, "") == []


async def test_container_is_inspected_at_the_docker_socket(proc, engine):
    fake, host = engine()
    got = await attestor(docker_socket_path=host).attest(123, 0, 0)
    assert sorted(s.value for s in got) == sorted(selector_values(CONTAINER["Config"], IMAGE_ID))
    assert all(s.type == "docker" for s in got)
    assert Selector("docker", "label:app:web") in got


async def test_docker_version_is_used_as_given(proc, engine):
    fake, host = engine()
    await attestor(docker_socket_path=host, docker_version="1.40").attest(123, 0, 0)
    assert "/version" not in fake.paths  # no negotiation
    assert f"/v1.40/containers/{CID}/json" in fake.paths


async def test_process_outside_containers_gets_nothing_and_no_error(proc, engine):
    fake, host = engine()
    assert await attestor(docker_socket_path=host).attest(124, 0, 0) == []
    assert await attestor(docker_socket_path=host).attest(99999, 0, 0) == []  # gone: no cgroup file
    assert fake.paths == []


async def test_a_starting_container_is_retried(proc, engine):
    fake, host = engine(not_found_times=3)  # found at the last of SPIRE's 1 + 3 tries
    got = await attestor(docker_socket_path=host).attest(123, 0, 0)
    assert Selector("docker", "label:app:web") in got


async def test_retries_back_off_as_spires_then_fail(proc, engine, monkeypatch):
    fake, host = engine(not_found_times=100)
    waits: list[float] = []

    async def record(seconds: float) -> None:
        waits.append(seconds)

    plugin = attestor(docker_socket_path=host)
    plugin._sleep = record
    with pytest.raises(WorkloadAttestationError, match=f"unable to inspect container {CID}"):
        await plugin.attest(123, 0, 0)
    assert waits == [0.1, 0.2, 0.4]
    assert sum(p.endswith(f"/containers/{CID}/json") for p in fake.paths) == 4


async def test_unreachable_engine_is_an_error(proc, tmp_path):
    plugin = attestor(docker_socket_path=f"unix://{tmp_path}/none.sock")
    with pytest.raises(WorkloadAttestationError, match="unable to inspect container"):
        await plugin.attest(123, 0, 0)


async def test_podman_containers_are_inspected_at_podmans_socket(proc, engine):
    (proc / "123" / "cgroup").write_text(f"0::/machine.slice/libpod-{CID}.scope/container\n")
    fake, host = engine()
    plugin = attestor(docker_socket_path="unix:///nonexistent/docker.sock", podman_socket_path=host)
    assert Selector("docker", "label:app:web") in await plugin.attest(123, 0, 0)


async def test_two_containers_in_the_cgroups_are_refused(proc, engine):
    (proc / "123" / "cgroup").write_text(f"1:cpu:/docker/{CID}\n0::/docker/{'0' * 64}\n")
    fake, host = engine()
    with pytest.raises(WorkloadAttestationError, match="multiple container IDs"):
        await attestor(docker_socket_path=host).attest(123, 0, 0)
    assert fake.paths == []


async def test_legacy_matchers_locate_the_container(proc, engine):
    (proc / "123" / "cgroup").write_text(f"0::/custom.slice/{CID}\n")
    fake, host = engine()
    plugin = attestor(docker_socket_path=host, container_id_cgroup_matchers=["/custom.slice/<id>"],
                      use_new_container_locator=False)
    assert Selector("docker", "label:app:web") in await plugin.attest(123, 0, 0)
    assert await plugin.attest(124, 0, 0) == []


def test_plugin_is_registered():
    from spire_py.common.plugin import lookup

    assert lookup("agent", "WorkloadAttestor", "docker") is docker_attestor.DockerWorkloadAttestor
