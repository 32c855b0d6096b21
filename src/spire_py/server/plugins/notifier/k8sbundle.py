"""Notifier "k8sbundle": the trust bundle's X.509 authorities, PEM, in a ConfigMap key.

As SPIRE's plugin: ``namespace`` (``spire``), ``config_map`` (``spire-bundle``),
``config_map_key`` (``bundle.crt``), ``kube_config_file_path`` (none: in-cluster). The
ConfigMap must exist (SPIRE patches it and never creates it); the key is written at start and
on every bundle change with a read-modify-write, so HA servers do not undo each other.
SPIRE's newer ``webhook_label``/``api_service_label`` (CA bundles injected into webhook
and APIService objects) are not built and refused; so is ``clusters``.
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass
from typing import Any, Callable, Optional

from ....common import log
from ....common.bundle import Bundle
from ....common.config.schema import RAW
from ....common.plugin import STR, Field, PluginConfigError, PluginContext, Schema, register
from ....common.plugins.k8s_apiserver import KubeAPI, KubeAPIError
from .base import Notifier, NotifyError

_log = log.get("notifier.k8sbundle")

_UNBUILT = ("webhook_label", "api_service_label", "clusters")


def _refuse(key: str) -> Callable[[Any], Optional[str]]:
    return lambda value: (f"{key} is not supported by spire_py's k8sbundle; use BundlePublisher \"k8s_configmap\" "
                          "for more clusters") if value not in (None, "", [], {}) else None


@dataclass
class K8sBundleConfig:
    namespace: str
    config_map: str
    config_map_key: str
    kube_config_file_path: str
    webhook_label: Any
    api_service_label: Any
    clusters: Any


@register("server")
class K8sBundleNotifier(Notifier):
    NAME = "k8sbundle"
    CONFIG = Schema([
        Field("namespace", STR, default="spire"),
        Field("config_map", STR, default="spire-bundle"),
        Field("config_map_key", STR, default="bundle.crt"),
        Field("kube_config_file_path", STR, default=""),
        *(Field(k, RAW, default=None, check=_refuse(k)) for k in _UNBUILT),
    ])
    CONFIG_TYPE = K8sBundleConfig

    def __init__(self, config: K8sBundleConfig, api: Optional[KubeAPI] = None) -> None:
        self.config = config
        self.api = api or KubeAPI(config.kube_config_file_path)

    @classmethod
    def validate(cls, config: K8sBundleConfig, ctx: PluginContext) -> None:
        for key in ("namespace", "config_map", "config_map_key"):
            if not getattr(config, key):
                raise PluginConfigError(f"configuration missing {key}", key)

    @classmethod
    def from_config(cls, config: K8sBundleConfig, ctx: PluginContext) -> "K8sBundleNotifier":
        return cls(config)

    async def bundle_updated(self, bundle: Bundle) -> None:
        c = self.config
        try:
            outcome = await asyncio.to_thread(self.api.put_configmap_key, c.namespace, c.config_map,
                                              c.config_map_key, bundle.to_pem().decode(), False)
        except KubeAPIError as exc:
            raise NotifyError(f"unable to update ConfigMap {c.namespace}/{c.config_map}: {exc}") from None
        _log.debug("Bundle pushed to ConfigMap", extra=log.fields(
            namespace=c.namespace, config_map=c.config_map, key=c.config_map_key, outcome=outcome))
