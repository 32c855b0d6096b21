"""BundlePublisher "k8s_configmap": the trust bundle in a ConfigMap of each configured cluster.

As SPIRE's plugin: ``clusters = { "<id>" = { configmap_name, configmap_key, namespace,
kubeconfig_path, format } }`` (format ``spiffe``, ``jwks`` or ``pem``; no kubeconfig means the
in-cluster service account). The key is set with the ConfigMap's other keys kept (get, then
update with its resourceVersion; a missing ConfigMap is created). A bundle already published is
not published again; a cluster that fails makes the publication fail (the next change or
refresh retries it). No clusters: nothing is published.
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass
from typing import Any, Callable, Optional

from ....common import log
from ....common.bundle import Bundle
from ....common.config.schema import LabeledBlocks
from ....common.plugin import STR, Ctx, Field, KeyPath, Kind, PluginConfigError, PluginContext, Schema, register
from ....common.plugins.k8s_apiserver import KubeAPI, KubeAPIError, load_client_config
from .base import FORMATS, BundlePublisher, PublishError, format_bundle

_log = log.get("bundlepublisher.k8s_configmap")

CLUSTER_SCHEMA = Schema([
    Field("configmap_name", STR, default=""),
    Field("configmap_key", STR, default=""),
    Field("namespace", STR, default=""),
    Field("kubeconfig_path", STR, default=""),
    Field("format", STR, default=""),
])


@dataclass(frozen=True)
class Cluster:
    configmap_name: str
    configmap_key: str
    namespace: str
    kubeconfig_path: str
    format: str


class _Clusters(Kind):
    name = "map of cluster ID to cluster block"

    def convert(self, ctx: Ctx, path: KeyPath, value: Any) -> Any:
        out: dict[str, Cluster] = {}
        for cid, v in LabeledBlocks(CLUSTER_SCHEMA).convert(ctx, path, value).items():
            where = list(path) + [cid]
            for key, what in (("format", "bundle format"), ("namespace", "namespace"),
                              ("configmap_name", "configmap name"), ("configmap_key", "configmap key")):
                if not v[key]:
                    raise ctx.error(where + [key], f'missing {what} in cluster "{cid}"')
            fmt = str(v["format"]).lower()
            if fmt not in FORMATS:
                raise ctx.error(where + ["format"], f'could not parse bundle format from cluster "{cid}": '
                                                    f'unknown bundle format: "{v["format"]}"')
            out[cid] = Cluster(v["configmap_name"], v["configmap_key"], v["namespace"], v["kubeconfig_path"], fmt)
        return out

    def empty(self, ctx: Ctx, path: KeyPath) -> Any:
        return {}


@dataclass
class K8sConfigMapConfig:
    clusters: dict[str, Cluster]


@register("server")
class K8sConfigMapPublisher(BundlePublisher):
    NAME = "k8s_configmap"
    CONFIG = Schema([Field("clusters", _Clusters())])
    CONFIG_TYPE = K8sConfigMapConfig

    def __init__(self, clusters: dict[str, Cluster], api_for: Optional[Callable[[str], KubeAPI]] = None) -> None:
        self.clusters = clusters
        self._api_for = api_for or KubeAPI
        self._published: Optional[bytes] = None  # the last bundle published everywhere, as SPIFFE JSON

    @classmethod
    def from_config(cls, config: K8sConfigMapConfig, ctx: PluginContext) -> "K8sConfigMapPublisher":
        if not config.clusters:
            _log.warning("No clusters configured, bundle will not be published")
        for cid, cluster in config.clusters.items():
            try:
                load_client_config(cluster.kubeconfig_path)
            except KubeAPIError as exc:
                raise PluginConfigError(f'failed to create Kubernetes client for cluster "{cid}": {exc}',
                                        f"clusters.{cid}.kubeconfig_path") from None
        return cls(config.clusters)

    async def publish_bundle(self, bundle: Bundle) -> None:
        key = bundle.to_json()
        if key == self._published:
            return  # bundle not changed: no need to publish
        errors = await asyncio.to_thread(self._publish_all, bundle)
        if errors:
            raise PublishError("; ".join(errors))
        self._published = key

    def _publish_all(self, bundle: Bundle) -> list[str]:
        errors = []
        for cid, c in sorted(self.clusters.items()):
            try:
                data = format_bundle(bundle, c.format).decode()
                outcome = self._api_for(c.kubeconfig_path).put_configmap_key(c.namespace, c.configmap_name,
                                                                              c.configmap_key, data)
            except (KubeAPIError, PublishError) as exc:
                errors.append(f'failed to apply ConfigMap for cluster "{cid}": {exc}')
                continue
            _log.debug("Bundle published to Kubernetes ConfigMap", extra=log.fields(
                cluster_id=cid, format=c.format, namespace=c.namespace, configmap=c.configmap_name,
                key=c.configmap_key, outcome=outcome))
        return errors
