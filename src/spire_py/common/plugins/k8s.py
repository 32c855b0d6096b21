"""Kubernetes plugins: what both sides share (SPIRE's ``pkg/common/plugin/k8s``).

The k8s_psat payload is SPIRE's ``PSATAttestationData``, the JSON object
``{"cluster": "<name>", "token": "<projected service account token>"}``. The server reads
who the token belongs to from the TokenReview answer: the username
``system:serviceaccount:<namespace>:<name>`` and the ``authentication.kubernetes.io/pod-name``
and ``pod-uid`` extras. The agent ID is ``spiffe://<td>/spire/agent/k8s_psat/<cluster>/<node UID>``.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any, Mapping, Optional

from ..errors import SpireError
from ..spiffeid import SpiffeId, TrustDomain, agent_id
from .payload import json_object

PSAT_PLUGIN_NAME = "k8s_psat"
DEFAULT_PSAT_TOKEN_PATH = "/var/run/secrets/tokens/spire-agent"
POD_NAME_KEY = "authentication.kubernetes.io/pod-name"
POD_UID_KEY = "authentication.kubernetes.io/pod-uid"
# A projected token is about 1 KiB; a payload far larger is not one.
MAX_PAYLOAD_BYTES = 64 * 1024


class K8sError(SpireError, ValueError):
    """Attestation data or a TokenReview answer without the shape SPIRE gives it."""


@dataclass(frozen=True)
class PSATAttestationData:
    cluster: str
    token: str

    def encode(self) -> bytes:
        return json.dumps({"cluster": self.cluster, "token": self.token}).encode()

    @classmethod
    def decode(cls, payload: bytes) -> "PSATAttestationData":
        obj = json_object(payload, "failed to unmarshal data payload", K8sError, MAX_PAYLOAD_BYTES)
        cluster, token = obj.get("cluster", ""), obj.get("token", "")
        if not isinstance(cluster, str) or not isinstance(token, str):
            raise K8sError("failed to unmarshal data payload: cluster and token must be strings")
        return cls(cluster, token)


def psat_agent_id(td: TrustDomain, cluster: str, node_uid: str) -> SpiffeId:
    return agent_id(td, PSAT_PLUGIN_NAME, cluster, node_uid)


def selector_value(kind: str, *values: str) -> str:
    return f"{kind}:{':'.join(values)}"


def names_from_username(username: str) -> tuple[str, str]:
    """(namespace, service account) of ``system:serviceaccount:<ns>:<name>``."""
    if not username:
        raise K8sError("empty username")
    names = username.split(":")
    if len(names) != 4:
        raise K8sError(f"unexpected username format: {username}")
    if not names[2]:
        raise K8sError("missing namespace")
    if not names[3]:
        raise K8sError("missing service account name")
    return names[2], names[3]


def _one_extra(extra: Optional[Mapping[str, Any]], key: str, what: str) -> str:
    values = (extra or {}).get(key)
    if values is None:
        raise K8sError(f"missing pod {what}")
    if not isinstance(values, list) or len(values) != 1:
        raise K8sError(f"expected 1 {what} but got: {len(values) if isinstance(values, list) else 0}")
    if not values[0]:
        raise K8sError(f"pod {what} is empty")
    return str(values[0])


def pod_name_from_extra(extra: Optional[Mapping[str, Any]]) -> str:
    return _one_extra(extra, POD_NAME_KEY, "name")


def pod_uid_from_extra(extra: Optional[Mapping[str, Any]]) -> str:
    return _one_extra(extra, POD_UID_KEY, "UID")
