"""WorkloadAttestor "k8s": selectors from the caller's pod, as the kubelet lists it (SPIRE's plugin).

The caller's container ID and pod UID come from its cgroups (``containerinfo``, as docker reads
them; the pod UID is the ``pod<uid>`` segment, ``_`` or ``-`` separated); the pod is found in
the kubelet's ``/pods`` (``kubelet.py``) by UID and its container by ID. Not yet listed (a pod
still starting): asked again every ``poll_retry_interval`` (500 ms) up to ``max_poll_attempts``
(60) times, as SPIRE; the list is shared for half an interval. A process in no container gets
no selectors and no error; nor does a container whose cgroups name no pod when no pod lists it.

Selectors (type ``k8s``): ``ns``, ``sa``, ``node-name``, ``pod-uid``, ``pod-name``,
``pod-image-count``, ``pod-init-image-count``, ``pod-image`` and ``pod-init-image`` (image and
image ID of each), ``pod-label:<k>:<v>``, ``pod-owner:<Kind>:<name>``,
``pod-owner-uid:<Kind>:<uid>``; and, unless ``disable_container_selectors``,
``container-name`` and ``container-image`` (image and image ID) of the caller's container.
"""

from __future__ import annotations

import asyncio
import os
import re
import time
import urllib.parse
from dataclasses import dataclass
from typing import Any, Callable, Optional

from ....common import log
from ....common.plugin import (
    BOOL, DURATION, INT, STR, Ctx, Field, KeyPath, Kind, PluginConfigError, PluginContext, Schema, register,
)
from ....common.registration import Selector
from .base import WorkloadAttestationError, WorkloadAttestor
from .containerinfo import Cgroup, ContainerLocatorError, locate_container, read_cgroups
from .kubelet import DEFAULT_SECURE_PORT, KubeletClient, KubeletConfigError, KubeletSettings
from .unix import proc_root

_log = log.get("workloadattestor.k8s")

SELECTOR_TYPE = "k8s"
DEFAULT_MAX_POLL_ATTEMPTS = 60
DEFAULT_POLL_RETRY_INTERVAL = 0.5
DEFAULT_RELOAD_INTERVAL = 60.0
DEFAULT_NODE_NAME_ENV = "MY_NODE_NAME"

_P = r"[!-/:-@\[-`{-~]"  # one ASCII punctuation character, Go's [[:punct:]]
_X = "[0-9a-fA-F]"
_POD_UID = re.compile(rf"{_P}pod({_X}{{8}}{_P}{_X}{{4}}{_P}{_X}{{4}}{_P}{_X}{{4}}{_P}{_X}{{12}})(?={_P}|$)")
# SPIRE's legacy locator (use_new_container_locator = false): pod UID, then the container ID at the end.
_LEGACY = re.compile(rf"{_P}pod({_X}{{8}}{_P}{_X}{{4}}{_P}{_X}{{4}}{_P}{_X}{{4}}{_P}{_X}{{12}}){_P}"
                     rf"(?:[^!-/:-@\[-`{{-~]+{_P})*([^!-/:-@\[-`{{-~]+)$")


def canonical_pod_uid(text: str) -> str:
    return re.sub(_P, "-", text)


def pod_uid_in(path: str) -> str:
    m = _POD_UID.search(path)
    return canonical_pod_uid(m.group(1)) if m else ""


def legacy_locate(cgroups: list[Cgroup]) -> tuple[str, str]:
    """SPIRE's older cgroup regex: (pod UID, container ID) of the first path that matches."""
    for c in cgroups:
        m = _LEGACY.search(c.path.removesuffix(".scope"))
        if m:
            return canonical_pod_uid(m.group(1)), m.group(2)
    return "", ""


class _Experimental(Kind):
    """SPIRE's ``experimental { sigstore { ... } }``: image signature checks are not built; a
    configuration that asks for them is refused rather than run without them."""

    name = "block"

    def convert(self, ctx: Ctx, path: KeyPath, value: Any) -> Any:
        blocks = value if isinstance(value, list) else [value]
        for block in blocks:
            if not isinstance(block, dict):
                raise ctx.error(path, "expected a block { ... }")
            for key in block:
                if key == "sigstore":
                    raise ctx.error(list(path) + [key], "sigstore image signature verification is not supported "
                                                        "by spire_py; remove the sigstore block")
                raise ctx.error(list(path) + [key], f'unknown key "{key}"; known keys: sigstore')
        return None


@dataclass
class K8sConfig:
    kubelet_read_only_port: int
    kubelet_secure_port: int
    max_poll_attempts: int
    poll_retry_interval: float
    reload_interval: float
    kubelet_ca_path: str
    skip_kubelet_verification: bool
    token_path: str
    certificate_path: str
    private_key_path: str
    use_anonymous_authentication: bool
    node_name_env: str
    node_name: str
    disable_container_selectors: bool
    use_new_container_locator: Optional[bool]
    verbose_container_locator_logs: bool
    experimental: None


def _settings(config: K8sConfig, getenv: Callable[[str], Optional[str]] = os.environ.get) -> KubeletSettings:
    if config.kubelet_secure_port > 0 and config.kubelet_read_only_port > 0:
        raise PluginConfigError("cannot use both the read-only and secure port", "kubelet_read_only_port")
    if config.certificate_path and not config.private_key_path:
        raise PluginConfigError("the private key path is required with the certificate path", "certificate_path")
    if config.private_key_path and not config.certificate_path:
        raise PluginConfigError("the certificate path is required with the private key path", "private_key_path")
    secure = config.kubelet_read_only_port <= 0
    port = config.kubelet_read_only_port if not secure else (config.kubelet_secure_port or DEFAULT_SECURE_PORT)
    node_name = config.node_name or getenv(config.node_name_env or DEFAULT_NODE_NAME_ENV) or ""
    return KubeletSettings(
        secure=secure, port=port, node_name=node_name, skip_verification=config.skip_kubelet_verification,
        ca_path=config.kubelet_ca_path, token_path=config.token_path, certificate_path=config.certificate_path,
        private_key_path=config.private_key_path, anonymous=config.use_anonymous_authentication,
        reload_interval=config.reload_interval if config.reload_interval > 0 else DEFAULT_RELOAD_INTERVAL,
    )


def _images(statuses: list[dict[str, Any]]) -> list[str]:
    return sorted({s.get(k) or "" for s in statuses for k in ("imageID", "image")})


def pod_selector_values(pod: dict[str, Any]) -> list[str]:
    meta, spec, status = pod.get("metadata") or {}, pod.get("spec") or {}, pod.get("status") or {}
    containers, inits = status.get("containerStatuses") or [], status.get("initContainerStatuses") or []
    values = [
        f"sa:{spec.get('serviceAccountName') or ''}", f"ns:{meta.get('namespace') or ''}",
        f"node-name:{spec.get('nodeName') or ''}", f"pod-uid:{meta.get('uid') or ''}",
        f"pod-name:{meta.get('name') or ''}", f"pod-image-count:{len(containers)}",
        f"pod-init-image-count:{len(inits)}",
    ]
    values += [f"pod-image:{i}" for i in _images(containers)]
    values += [f"pod-init-image:{i}" for i in _images(inits)]
    values += [f"pod-label:{k}:{v}" for k, v in sorted((meta.get("labels") or {}).items())]
    for owner in meta.get("ownerReferences") or []:
        values.append(f"pod-owner:{owner.get('kind', '')}:{owner.get('name', '')}")
        values.append(f"pod-owner-uid:{owner.get('kind', '')}:{owner.get('uid', '')}")
    return values


def container_selector_values(status: dict[str, Any]) -> list[str]:
    return [f"container-name:{status.get('name') or ''}"] + [f"container-image:{i}" for i in _images([status])]


def find_container(pod: dict[str, Any], container_id: str) -> Optional[dict[str, Any]]:
    status = pod.get("status") or {}
    for s in (status.get("containerStatuses") or []) + (status.get("initContainerStatuses") or []):
        cid = s.get("containerID") or ""
        if cid and urllib.parse.urlsplit(cid).netloc == container_id:
            return dict(s)
    return None


@register("agent")
class K8sWorkloadAttestor(WorkloadAttestor):
    NAME = "k8s"
    CONFIG = Schema([
        Field("kubelet_read_only_port", INT, default=0),
        Field("kubelet_secure_port", INT, default=0),
        Field("max_poll_attempts", INT, default=0),
        Field("poll_retry_interval", DURATION, default=0.0),
        Field("reload_interval", DURATION, default=0.0),
        Field("kubelet_ca_path", STR, default=""),
        Field("skip_kubelet_verification", BOOL, default=False),
        Field("token_path", STR, default=""),
        Field("certificate_path", STR, default=""),
        Field("private_key_path", STR, default=""),
        Field("use_anonymous_authentication", BOOL, default=False),
        Field("node_name_env", STR, default=""),
        Field("node_name", STR, default=""),
        Field("disable_container_selectors", BOOL, default=False),
        Field("use_new_container_locator", BOOL, default=None),
        Field("verbose_container_locator_logs", BOOL, default=False),
        Field("experimental", _Experimental(), default=None),
    ])
    CONFIG_TYPE = K8sConfig

    def __init__(self, config: K8sConfig, client: KubeletClient,
                 sleep: Callable[[float], Any] = asyncio.sleep) -> None:
        self.config = config
        self.client = client
        self.max_attempts = config.max_poll_attempts if config.max_poll_attempts > 0 else DEFAULT_MAX_POLL_ATTEMPTS
        self.interval = config.poll_retry_interval if config.poll_retry_interval > 0 else DEFAULT_POLL_RETRY_INTERVAL
        self._sleep = sleep
        self._cache: tuple[float, list[dict[str, Any]]] = (0.0, [])
        self._fetching: Optional[asyncio.Future[list[dict[str, Any]]]] = None

    @classmethod
    def validate(cls, config: K8sConfig, ctx: PluginContext) -> None:
        _settings(config)

    @classmethod
    def from_config(cls, config: K8sConfig, ctx: PluginContext) -> "K8sWorkloadAttestor":
        client = KubeletClient(_settings(config))
        try:
            client.load()  # as SPIRE's Configure: a CA or token that does not load stops the start
        except KubeletConfigError as exc:
            raise PluginConfigError(str(exc)) from None
        return cls(config, client)

    # --- attestation ---
    def locate(self, pid: int) -> tuple[str, str]:
        """(pod UID, container ID) of the process; ("", "") outside containers. Reads /proc only."""
        proc = proc_root()
        cgroups = read_cgroups(pid, proc) or []
        if self.config.verbose_container_locator_logs:
            for i, c in enumerate(cgroups, 1):
                _log.debug("PID cgroup enumerated", extra=log.fields(pid=pid, index=i, path=c.path))
        if self.config.use_new_container_locator is False:
            return legacy_locate(cgroups)
        container_id = locate_container(pid, proc, cgroups)
        if not container_id:
            return "", ""
        uids = {pod_uid_in(c.path) for c in cgroups if container_id in c.path} - {""}
        if len(uids) > 1:
            raise ContainerLocatorError(f"multiple pod UIDs found ({', '.join(sorted(uids))})")
        return (uids.pop() if uids else ""), container_id

    async def _pods(self) -> list[dict[str, Any]]:
        """The kubelet's pod list, shared by concurrent attestations for half a retry interval."""
        at, pods = self._cache
        if pods and time.monotonic() - at < self.interval / 2:
            return pods
        if self._fetching is not None:
            return await asyncio.shield(self._fetching)
        loop = asyncio.get_running_loop()
        self._fetching = fut = loop.create_future()
        try:
            pods = await asyncio.to_thread(self.client.pod_list)
            self._cache = (time.monotonic(), pods)
            fut.set_result(pods)
            return pods
        except BaseException as exc:
            fut.set_exception(exc if isinstance(exc, Exception) else WorkloadAttestationError("cancelled"))
            fut.exception()  # retrieved: waiters get it, nobody else needs to
            raise
        finally:
            self._fetching = None

    def _match(self, pods: list[dict[str, Any]], pod_uid: str, container_id: str) -> Optional[list[str]]:
        found: Optional[list[str]] = None
        for pod in pods:
            if pod_uid and (pod.get("metadata") or {}).get("uid") != pod_uid:
                continue
            values: list[str] = []
            status = find_container(pod, container_id)
            if status is not None:
                values = pod_selector_values(pod)
                if not self.config.disable_container_selectors:
                    values += container_selector_values(status)
            elif pod_uid and self.config.disable_container_selectors:
                values = pod_selector_values(pod)  # the container is not ready yet; the pod is known
            if values:
                if found is not None:
                    _log.warning("Two pods found with same container Id")
                    raise WorkloadAttestationError("two pods found with same container Id")
                found = values
        return found

    async def attest(self, pid: int, uid: int, gid: int) -> list[Selector]:
        pod_uid, container_id = self.locate(pid)
        if not container_id:
            return []  # not a container, so not a pod: nothing to say, and not an error
        attempts = self.max_attempts if pod_uid else 1  # a container no cgroup ties to a pod: one look
        for attempt in range(1, attempts + 1):
            values = self._match(await self._pods(), pod_uid, container_id)
            if values is not None:
                return [Selector(SELECTOR_TYPE, v) for v in values]
            if attempt < attempts:
                _log.debug("Container id not found", extra=log.fields(
                    pod_uid=pod_uid, container_id=container_id, attempt=attempt, retry_interval=self.interval))
                await self._sleep(self.interval)
        if not pod_uid:
            return []
        _log.warning("Container id not found; giving up", extra=log.fields(
            pod_uid=pod_uid, container_id=container_id, attempt=attempts))
        raise WorkloadAttestationError("no selectors found after max poll attempts")
