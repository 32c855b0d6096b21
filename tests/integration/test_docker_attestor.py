"""WorkloadAttestor "docker" against a real Docker Engine API: podman's, with real containers.

scripts/podman-api.sh starts ``podman system service`` on a socket of this test. Containers are
started by podman from an image that holds nothing (imported from an empty archive): the host's
/usr, the test's Python and this repository are mounted read-only, so no registry is needed. The
container's process runs py-spiffe (helpers/workload.py) against the agent's Workload API socket,
mounted into it; the agent attests it with its cgroups and podman's inspect answer.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import uuid
from pathlib import Path
from typing import Any, Iterator

import pytest

from tests.integration.helpers.harness import TD, WORKLOAD, entry_create, short_dir, wait_for

ROOT = Path(__file__).resolve().parents[2]
SCRIPT = ROOT / "scripts" / "podman-api.sh"
IMAGE = "localhost/spire-py-hostfs:1"
LABEL = "spire_py_test=docker_attestor"


def _why_not() -> str:
    if os.geteuid() != 0:
        return f"needs root for rootful podman (running as uid {os.geteuid()})"
    if sys.platform != "linux":
        return "needs Linux cgroups"
    if shutil.which("podman") is None and shutil.which("apt-get") is None:
        return "podman is not installed and there is no apt-get to install it"
    return ""


pytestmark = [pytest.mark.slow, pytest.mark.skipif(bool(_why_not()), reason=_why_not() or "-")]


class Podman:
    def __init__(self, env: dict[str, str]) -> None:
        self.env = {**os.environ, **env}

    def __call__(self, *args: str, check: bool = True, timeout: float = 120) -> subprocess.CompletedProcess[str]:
        return subprocess.run(["podman", *args], env=self.env, capture_output=True, text=True, check=check,
                              timeout=timeout)


@pytest.fixture(scope="module")
def podman_api() -> Iterator[tuple[str, Podman]]:
    d = short_dir(Path("/tmp"), "podman-api")
    r = subprocess.run(["bash", str(SCRIPT), "start", str(d)], capture_output=True, text=True, timeout=600)
    if r.returncode != 0:
        shutil.rmtree(d, ignore_errors=True)
        pytest.skip(f"podman cannot run here: {r.stderr.strip()[-500:]}")
    env = dict(line.split("=", 1) for line in r.stdout.split() if "=" in line)
    podman = Podman({"CONTAINERS_CONF": env["CONTAINERS_CONF"]})
    try:
        if podman("image", "exists", IMAGE, check=False).returncode != 0:
            empty = subprocess.run(["tar", "-cf", "-", "-T", "/dev/null"], capture_output=True, check=True).stdout
            subprocess.run(["podman", "import", "-", IMAGE], input=empty, env=podman.env, capture_output=True,
                           check=True)
        yield env["DOCKER_HOST"], podman
    finally:
        podman("rm", "-f", "-t", "1", *podman("ps", "-aq", "--filter", f"label={LABEL}").stdout.split(), check=False)
        subprocess.run(["bash", str(SCRIPT), "stop", str(d)], capture_output=True, timeout=60)
        shutil.rmtree(d, ignore_errors=True)


def host_mounts() -> list[str]:
    """What the empty image needs to run this venv's Python: the host's system and the repo."""
    paths = ["/usr", "/etc", sys.base_prefix, str(ROOT)]
    for link in ("/bin", "/sbin", "/lib", "/lib64"):
        if os.path.exists(link):
            paths.append(link)
    args = []
    for p in dict.fromkeys(paths):
        args += ["-v", f"{p}:{p}:ro"]
    return args


def run_workload(podman: Podman, agent_socket: str, *labels: str) -> subprocess.CompletedProcess[str]:
    """A container (with ``labels``) whose process fetches its SVIDs from the agent."""
    sock_dir = os.path.dirname(agent_socket)
    return podman("run", "--rm", "--network", "none", "--label", LABEL, *[a for lb in labels for a in ("--label", lb)],
                  "--name", f"spire-py-wl-{uuid.uuid4().hex[:8]}", *host_mounts(), "-v", f"{sock_dir}:/agent",
                  "--env", "MODE=test", IMAGE, sys.executable, WORKLOAD, "0", "/agent/api.sock", "fetch",
                  check=False, timeout=120)


@pytest.fixture
def docker_node(podman_api, spire_server, start_agent) -> tuple[Any, Any, Podman, str]:
    docker_host, podman = podman_api
    token = spire_server.token()
    agent = start_agent(spire_server, token, extra_plugins=f"""
    WorkloadAttestor "docker" {{
        plugin_data {{
            docker_socket_path = "{docker_host}"
            podman_socket_path = "{docker_host}"
        }}
    }}""")
    return spire_server, agent, podman, f"spiffe://{TD}/spire/agent/join_token/{token}"


def test_labelled_container_gets_its_svid_by_docker_label(docker_node):
    server, agent, podman, agent_id = docker_node
    spiffe_id = f"spiffe://{TD}/web"
    entry_create(server, agent_id, spiffe_id, "-selector", "docker:label:app:web")
    got: dict[str, Any] = {}

    def fetched() -> bool:
        r = run_workload(podman, agent.socket, "app=web")
        if r.returncode == 0:
            got.update(json.loads(r.stdout))
        return bool(got)

    wait_for(fetched, 90, "the labelled container's SVID", interval=1)
    assert got["spiffe_id"] == spiffe_id


def test_container_without_the_label_is_denied(docker_node):
    server, agent, podman, agent_id = docker_node
    entry_create(server, agent_id, f"spiffe://{TD}/web", "-selector", "docker:label:app:web")
    # The entry is in the agent's cache once a labelled container gets it.
    wait_for(lambda: run_workload(podman, agent.socket, "app=web").returncode == 0, 90, "entry synced", interval=1)
    r = run_workload(podman, agent.socket, "app=db")
    assert r.returncode != 0
    assert "PermissionDenied" in r.stderr or "no identity issued" in r.stderr or "PERMISSION_DENIED" in r.stderr, r.stderr


def test_selectors_combine_label_env_and_image(docker_node):
    """unix and docker selectors on one caller: an entry needing both matches only such a container."""
    server, agent, podman, agent_id = docker_node
    spiffe_id = f"spiffe://{TD}/combined"
    entry_create(server, agent_id, spiffe_id, "-selector", "docker:label:app:api", "-selector", "docker:env:MODE=test",
                 "-selector", f"docker:image_id:{IMAGE}", "-selector", "unix:uid:0")
    got: dict[str, Any] = {}

    def fetched() -> bool:
        r = run_workload(podman, agent.socket, "app=api")
        if r.returncode == 0:
            got.update(json.loads(r.stdout))
        return bool(got)

    wait_for(fetched, 90, "the combined entry's SVID", interval=1)
    assert got["spiffe_id"] == spiffe_id


def test_host_process_gets_no_docker_selectors_and_no_error(docker_node):
    """The agent's own tests run outside containers: unix selectors still give them an SVID."""
    server, agent, podman, agent_id = docker_node
    from tests.integration.helpers.harness import ME, svid_for

    spiffe_id = f"spiffe://{TD}/host-process"
    entry_create(server, agent_id, spiffe_id, "-selector", f"unix:uid:{ME}")
    assert svid_for(agent.socket, spiffe_id, timeout=60)["spiffe_id"] == spiffe_id
    assert 'workload attestor "docker" failed' not in agent.proc.logs()
