"""NodeAttestor "k8s_psat" (server): agents by their projected service account token.

As SPIRE's plugin: the payload names a cluster of ``clusters`` and carries the token, which the
cluster's API server reviews (TokenReview with the cluster's ``audience``, default
``["spire-server"]``; an empty list leaves the API server's own audiences). The token must be
authenticated and belong to a service account of ``service_account_allow_list``
(``namespace:name``). The pod the token was issued for and its node are read from the API; the
agent is ``spiffe://<td>/spire/agent/k8s_psat/<cluster>/<node UID>`` and may re-attest (the same
node UID gets the same ID). Beyond SPIRE: the pod read must be the pod the token was bound to
(its UID), so a token that outlived its pod cannot attest as whichever pod took the name, and the
review must name one of the requested audiences (an audience-unaware authenticator checked none).

Selectors (type ``k8s_psat``): ``cluster``, ``agent_ns``, ``agent_sa``, ``agent_pod_name``,
``agent_pod_uid``, ``agent_node_ip``, ``agent_node_name``, ``agent_node_uid``, and
``agent_node_label:<k>:<v>`` / ``agent_pod_label:<k>:<v>`` for the allowed label keys.
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass
from typing import Any, Callable, Optional

from grpclib.const import Status

from ....common import log
from ....common.plugin import STR, STR_LIST, Ctx, Field, KeyPath, Kind, PluginContext, Schema, register
from ....common.config.schema import LabeledBlocks
from ....common.plugins import k8s
from ....common.plugins.k8s_apiserver import KubeAPI, KubeAPIError
from ....common.registration import Selector
from ....common.spiffeid import SpiffeIdError, TrustDomain
from .base import AttestationError, AttestResult, Challenge, NodeAttestor

_log = log.get("nodeattestor.k8s_psat")

DEFAULT_AUDIENCE = ["spire-server"]
SELECTOR_TYPE = "k8s_psat"

CLUSTER_SCHEMA = Schema([
    Field("service_account_allow_list", STR_LIST),
    Field("audience", STR_LIST),
    Field("kube_config_file", STR, default=""),
    Field("allowed_node_label_keys", STR_LIST),
    Field("allowed_pod_label_keys", STR_LIST),
])


@dataclass(frozen=True)
class Cluster:
    service_accounts: frozenset[str]
    audience: list[str]
    kube_config_file: str
    node_label_keys: frozenset[str]
    pod_label_keys: frozenset[str]


class _Clusters(Kind):
    """``clusters = { "<name>" = { ... } }``: each cluster checked, SPIRE's audience default."""

    name = "map of cluster name to cluster block"

    def convert(self, ctx: Ctx, path: KeyPath, value: Any) -> Any:
        out: dict[str, Cluster] = {}
        for name, values in LabeledBlocks(CLUSTER_SCHEMA).convert(ctx, path, value).items():
            if not values["service_account_allow_list"]:
                raise ctx.error(list(path) + [name, "service_account_allow_list"],
                                f'cluster "{name}" configuration must have at least one service account allowed')
            out[name] = Cluster(
                service_accounts=frozenset(values["service_account_allow_list"]),
                audience=list(values["audience"]) if "audience" in values.present else list(DEFAULT_AUDIENCE),
                kube_config_file=values["kube_config_file"],
                node_label_keys=frozenset(values["allowed_node_label_keys"]),
                pod_label_keys=frozenset(values["allowed_pod_label_keys"]),
            )
        return out

    def empty(self, ctx: Ctx, path: KeyPath) -> Any:
        return {}


@dataclass
class PSATConfig:
    clusters: dict[str, Cluster]


@register("server")
class PSATAttestor(NodeAttestor):
    NAME = k8s.PSAT_PLUGIN_NAME
    CONFIG = Schema([Field("clusters", _Clusters())])
    CONFIG_TYPE = PSATConfig

    def __init__(self, trust_domain: TrustDomain, clusters: dict[str, Cluster],
                 api_for: Optional[Callable[[str], KubeAPI]] = None) -> None:
        self.trust_domain = trust_domain
        self.clusters = clusters
        self._api_for = api_for or KubeAPI

    @classmethod
    def from_config(cls, config: PSATConfig, ctx: PluginContext) -> "PSATAttestor":
        if not config.clusters:
            _log.info("No clusters configured, PSAT attestation is effectively disabled")
        return cls(TrustDomain(ctx.trust_domain), config.clusters)

    async def attest(self, payload: bytes, challenge: Challenge) -> AttestResult:
        if not payload:
            raise AttestationError("missing attestation payload", Status.INVALID_ARGUMENT)
        try:
            data = k8s.PSATAttestationData.decode(payload)
        except k8s.K8sError as exc:
            raise AttestationError(str(exc), Status.INVALID_ARGUMENT) from None
        if not data.cluster:
            raise AttestationError("missing cluster in attestation data", Status.INVALID_ARGUMENT)
        if not data.token:
            raise AttestationError("missing token in attestation data", Status.INVALID_ARGUMENT)
        cluster = self.clusters.get(data.cluster)
        if cluster is None:
            raise AttestationError(f'not configured for cluster "{data.cluster}"', Status.INVALID_ARGUMENT)
        return await asyncio.to_thread(self._attest, data, cluster)

    def _attest(self, data: k8s.PSATAttestationData, cluster: Cluster) -> AttestResult:
        try:
            with self._api_for(cluster.kube_config_file).session() as api:
                return self._attest_with(api, data, cluster)
        except KubeAPIError as exc:  # the client configuration did not load
            raise AttestationError(f"unable to validate token with TokenReview API: {exc}", Status.INTERNAL) from None

    def _attest_with(self, api: KubeAPI, data: k8s.PSATAttestationData, cluster: Cluster) -> AttestResult:
        try:
            status = api.validate_token(data.token, cluster.audience)
        except KubeAPIError as exc:
            raise AttestationError(f"unable to validate token with TokenReview API: {exc}", Status.INTERNAL) from None
        if not status.authenticated:
            raise AttestationError("token not authenticated according to TokenReview API")
        answered = set(getattr(status, "audiences", None) or [])
        if cluster.audience and not answered & set(cluster.audience):
            # Beyond SPIRE, as the TokenReview API asks of its clients: a review that names none of the
            # requested audiences came from an audience-unaware authenticator, which checked none of them.
            raise AttestationError(f"token audiences {sorted(answered)} reviewed by the TokenReview API do not "
                                   f"include any of {cluster.audience}")
        user = status.user
        try:
            namespace, account = k8s.names_from_username(getattr(user, "username", "") or "")
        except k8s.K8sError as exc:
            raise AttestationError(f"fail to parse username from token review status: {exc}", Status.INTERNAL) \
                from None
        full_name = f"{namespace}:{account}"
        if full_name not in cluster.service_accounts:
            raise AttestationError(f'"{full_name}" is not an allowed service account')
        extra = getattr(user, "extra", None)
        try:
            pod_name = k8s.pod_name_from_extra(extra)
        except k8s.K8sError as exc:
            raise AttestationError(f"fail to get pod name from token review status: {exc}", Status.INTERNAL) from None
        try:
            pod_uid = k8s.pod_uid_from_extra(extra)
        except k8s.K8sError as exc:
            raise AttestationError(f"fail to get pod UID from token review status: {exc}", Status.INTERNAL) from None
        try:
            pod = api.get_pod(namespace, pod_name)
        except KubeAPIError as exc:
            raise AttestationError(f"fail to get pod from k8s API server: {exc}", Status.INTERNAL) from None
        if (pod.metadata.uid or "") != pod_uid:
            # Beyond SPIRE: the pod of that name now is not the one the token was bound to.
            raise AttestationError(f'fail to get pod from k8s API server: pod "{namespace}/{pod_name}" has UID '
                                   f'"{pod.metadata.uid or ""}", the token was issued for "{pod_uid}"')
        node_name = (pod.spec.node_name if pod.spec else "") or ""
        try:
            node = api.get_node(node_name)
        except KubeAPIError as exc:
            raise AttestationError(f"fail to get node from k8s API server: {exc}", Status.INTERNAL) from None
        node_uid = (node.metadata.uid if node.metadata else "") or ""
        if not node_uid:
            raise AttestationError("node UID is empty", Status.INTERNAL)
        sv = k8s.selector_value
        values = [
            sv("cluster", data.cluster),
            sv("agent_ns", namespace),
            sv("agent_sa", account),
            sv("agent_pod_name", pod_name),
            sv("agent_pod_uid", pod_uid),
            sv("agent_node_ip", (pod.status.host_ip if pod.status else "") or ""),
            sv("agent_node_name", node_name),
            sv("agent_node_uid", node_uid),
        ]
        values += [sv("agent_node_label", k, v) for k, v in sorted((node.metadata.labels or {}).items())
                   if k in cluster.node_label_keys]
        values += [sv("agent_pod_label", k, v) for k, v in sorted((pod.metadata.labels or {}).items())
                   if k in cluster.pod_label_keys]
        try:
            agent_id = k8s.psat_agent_id(self.trust_domain, data.cluster, node_uid)
        except SpiffeIdError as exc:
            raise AttestationError(f"failed to create agent ID: {exc}", Status.INTERNAL) from None
        return AttestResult(agent_id, [Selector(SELECTOR_TYPE, v) for v in values], can_reattest=True)
