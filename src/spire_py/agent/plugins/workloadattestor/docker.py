"""WorkloadAttestor "docker": selectors from the caller's container, as SPIRE's.

The caller's container ID comes from its cgroups (``containerinfo``); the container is inspected
through the Docker Engine API (the docker SDK; podman's compatible API for podman containers,
as SPIRE routes them). Selectors (type "docker"): ``label:<k>:<v>`` for each label,
``env:<K>=<V>`` for each environment variable, ``image_id:<Config.Image>`` (the image name the
container was started from) and ``image_config_digest:<image ID>`` when the image inspects.

A process outside containers gets no docker selectors and no error. An inspection that fails
is retried, as SPIRE's (a container that is still starting may not be known yet): three
retries after 100, 200 and 400 ms. The SDK blocks: every call runs in a thread.
"""

from __future__ import annotations

import asyncio
import re
import threading
from dataclasses import dataclass, field
from typing import Any, Callable, Optional

from ....common import log
from ....common.config.schema import RAW
from ....common.plugin import BOOL, STR, STR_LIST, Field, PluginConfigError, PluginContext, Schema, register
from ....common.registration import Selector
from .base import WorkloadAttestationError, WorkloadAttestor
from .containerinfo import CgroupMatchers, check_socket_template, locate_container, podman_socket, read_cgroups
from .unix import proc_root

_log = log.get("workloadattestor.docker")

DEFAULT_DOCKER_SOCKET = "unix:///var/run/docker.sock"
DEFAULT_PODMAN_SOCKET = "unix:///run/podman/podman.sock"
DEFAULT_PODMAN_TEMPLATE = "unix:///run/user/%d/podman/podman.sock"
# SPIRE's retryer: once plus three retries, backing off 100 ms, 200 ms, 400 ms.
RETRIES = 3
INITIAL_BACKOFF = 0.1
# Per HTTP request to the engine (the Workload API bounds the whole attestation too).
REQUEST_TIMEOUT = 5
_API_VERSION = re.compile(r"^\d+\.\d+$")
_SCHEMES = ("unix://", "tcp://", "http://", "https://")


@dataclass
class DockerConfig:
    docker_socket_path: str = DEFAULT_DOCKER_SOCKET
    docker_version: str = ""
    container_id_cgroup_matchers: list[str] = field(default_factory=list)
    # None: unset, which means true (SPIRE's default since the new locator).
    use_new_container_locator: Optional[bool] = None
    verbose_container_locator_logs: bool = False
    podman_socket_path: str = DEFAULT_PODMAN_SOCKET
    podman_socket_path_template: str = DEFAULT_PODMAN_TEMPLATE
    experimental: dict[str, Any] = field(default_factory=dict)


def _check_experimental(value: Any) -> Optional[str]:
    """SPIRE's ``experimental { sigstore { ... } }`` verifies image signatures with cosign and
    Rekor; spire_py has no such verifier, so the block is refused rather than ignored (an
    operator relying on it would otherwise believe images are verified)."""
    if not isinstance(value, dict):
        return "expected a block { ... }"
    for key in value:
        if key == "sigstore":
            return ("sigstore image signature verification is not supported by spire_py; remove "
                    "experimental.sigstore (images would otherwise not be verified)")
        return f'unknown configuration key "{key}"; known keys: sigstore'
    return None


def _check_host(value: str) -> Optional[str]:
    if not value.startswith(_SCHEMES):
        return f'unable to parse docker host "{value}": must start with one of {", ".join(_SCHEMES)}'
    return None


class DockerEngine:
    """Docker Engine API clients by socket, made on first use (``auto`` negotiates the version
    with the daemon, which needs it running)."""

    def __init__(self, version: str) -> None:
        self.version = version
        self._clients: dict[str, Any] = {}
        self._lock = threading.Lock()

    def _client(self, host: str) -> Any:
        with self._lock:
            client = self._clients.get(host)
        if client is None:
            import docker  # the SDK pulls in requests; only agents that attest containers pay for it

            client = docker.APIClient(base_url=host, version=self.version or "auto", timeout=REQUEST_TIMEOUT)
            with self._lock:
                if len(self._clients) >= 64:  # rootless sockets are per user: keep the map bounded
                    for old in self._clients.values():
                        old.close()
                    self._clients.clear()
                self._clients[host] = client
        return client

    def inspect_container(self, host: str, container_id: str) -> dict[str, Any]:
        return dict(self._client(host).inspect_container(container_id))

    def image_id(self, host: str, image: str) -> str:
        """The image's config digest (its ID), or "" when it does not inspect."""
        import docker.errors
        import requests

        try:
            return str(self._client(host).inspect_image(image).get("Id") or "")
        except (docker.errors.DockerException, requests.RequestException):
            return ""

    def close(self) -> None:
        with self._lock:
            for client in self._clients.values():
                client.close()
            self._clients.clear()


def selector_values(config: dict[str, Any], image_config_digest: str) -> list[str]:
    """SPIRE's docker selector values from a container's ``Config`` and its image's ID."""
    values = [f"label:{k}:{v}" for k, v in (config.get("Labels") or {}).items()]
    values += [f"env:{e}" for e in config.get("Env") or []]
    if image := config.get("Image"):
        values.append(f"image_id:{image}")
    if image_config_digest:
        values.append(f"image_config_digest:{image_config_digest}")
    return values


@register("agent")
class DockerWorkloadAttestor(WorkloadAttestor):
    NAME = "docker"
    CONFIG = Schema([
        Field("docker_socket_path", STR, default=DEFAULT_DOCKER_SOCKET, check=_check_host),
        Field("docker_version", STR, default="",
              check=lambda v: None if not v or _API_VERSION.match(v) else f'invalid API version "{v}"'),
        Field("container_id_cgroup_matchers", STR_LIST, default=[]),
        Field("use_new_container_locator", BOOL, default=None),
        Field("verbose_container_locator_logs", BOOL, default=False),
        Field("podman_socket_path", STR, default=DEFAULT_PODMAN_SOCKET, check=_check_host),
        Field("podman_socket_path_template", STR, default=DEFAULT_PODMAN_TEMPLATE),
        Field("experimental", RAW, default={}, check=_check_experimental),
    ])
    CONFIG_TYPE = DockerConfig

    def __init__(self, config: DockerConfig, matchers: Optional[CgroupMatchers] = None,
                 engine: Optional[DockerEngine] = None,
                 sleep: Callable[[float], Any] = asyncio.sleep) -> None:
        self.config = config
        self.matchers = matchers
        self.engine = engine or DockerEngine(config.docker_version)
        self._sleep = sleep

    @classmethod
    def _matchers(cls, config: DockerConfig) -> Optional[CgroupMatchers]:
        if not config.container_id_cgroup_matchers:
            return None
        if config.use_new_container_locator is None or config.use_new_container_locator:
            raise PluginConfigError(
                "the new container locator and custom cgroup matchers cannot both be used; to continue "
                "using custom matchers set use_new_container_locator=false", "container_id_cgroup_matchers")
        try:
            return CgroupMatchers(config.container_id_cgroup_matchers)
        except ValueError as exc:
            raise PluginConfigError(str(exc), "container_id_cgroup_matchers") from None

    @classmethod
    def validate(cls, config: DockerConfig, ctx: PluginContext) -> None:
        cls._matchers(config)
        if (why := check_socket_template(config.podman_socket_path_template)) is not None:
            raise PluginConfigError(f"invalid podman_socket_path_template: {why}", "podman_socket_path_template")
        if (why := _check_host(config.podman_socket_path_template)) is not None:
            raise PluginConfigError(why, "podman_socket_path_template")

    @classmethod
    def from_config(cls, config: DockerConfig, ctx: PluginContext) -> "DockerWorkloadAttestor":
        matchers = cls._matchers(config)
        if matchers is not None:
            _log.warning("Using the legacy container locator with custom cgroup matchers. "
                         "This feature will be removed in a future release.")
        return cls(config, matchers)

    async def close(self) -> None:
        await asyncio.to_thread(self.engine.close)

    # --- attestation ---
    def locate(self, pid: int) -> tuple[str, str]:
        """(container ID, engine socket); ("", "") outside containers. Reads /proc only."""
        proc = proc_root()
        cgroups = read_cgroups(pid, proc)
        if self.config.verbose_container_locator_logs:
            for i, c in enumerate(cgroups or [], 1):
                _log.debug("PID cgroup enumerated", extra=log.fields(pid=pid, index=i, path=c.path))
        if self.matchers is not None:
            container_id = self.matchers.locate(cgroups or [])
        else:
            container_id = locate_container(pid, proc, cgroups)
        if not container_id:
            return "", ""
        socket = podman_socket(cgroups or [], self.config.podman_socket_path,
                               self.config.podman_socket_path_template)
        return container_id, socket or self.config.docker_socket_path

    async def attest(self, pid: int, uid: int, gid: int) -> list[Selector]:
        container_id, host = self.locate(pid)
        if not container_id:
            return []  # not a container workload: nothing to say, and not an error
        container = await self._inspect_with_retries(host, container_id)
        config = container.get("Config") or {}
        digest = await asyncio.to_thread(self.engine.image_id, host, config["Image"]) if config.get("Image") else ""
        return [Selector("docker", v) for v in selector_values(config, digest)]

    async def _inspect_with_retries(self, host: str, container_id: str) -> dict[str, Any]:
        attempt = 0
        while True:
            try:
                return await asyncio.to_thread(self.engine.inspect_container, host, container_id)
            except Exception as exc:  # the SDK raises DockerException, requests' errors, OSError
                if attempt == RETRIES:
                    raise WorkloadAttestationError(
                        f"unable to inspect container {container_id} at {host}: {_reason(exc)}") from None
            await self._sleep(INITIAL_BACKOFF * 2 ** attempt)
            attempt += 1


def _reason(exc: Exception) -> str:
    text = str(exc) or type(exc).__name__
    return text if len(text) <= 300 else text[:300] + "..."
