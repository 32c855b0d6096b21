"""gcp_iit: what both sides share, and the claims of a Compute Engine instance identity token.

Wire compatible with SPIRE's ``pkg/common/plugin/gcp``: the agent's payload is the token
itself, the RS256 JWT the metadata server returns for the audience
``spire-gcp-node-attestor`` in ``format=full`` (so it carries ``google.compute_engine``).
The agent path template sees ``.PluginName``, ``.ServiceAccount`` (the email with "@"
replaced by "_") and the ``compute_engine`` fields under their Go names (``.ProjectID``,
``.ProjectNumber``, ``.Zone``, ``.InstanceID``, ``.InstanceName``,
``.InstanceCreationTimestamp``).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Mapping

from ..errors import SpireError

PLUGIN_NAME = "gcp_iit"
SELECTOR_TYPE = "gcp_iit"
AUDIENCE = "spire-gcp-node-attestor"
DEFAULT_AGENT_PATH_TEMPLATE = "/{{ .PluginName }}/{{ .ProjectID }}/{{ .InstanceID }}"
IDENTITY_PATH = "/computeMetadata/v1/instance/service-accounts/{}/identity"

# A full-format token is about 1 KiB; anything far larger is not one.
MAX_TOKEN_BYTES = 16 * 1024


class GCPIITError(SpireError, ValueError):
    """Claims that do not have the shape of an instance identity token."""


@dataclass(frozen=True)
class ComputeEngine:
    project_id: str
    project_number: int
    zone: str
    instance_id: str
    instance_name: str
    instance_creation_timestamp: int


@dataclass(frozen=True)
class IdentityToken:
    email: str
    compute_engine: ComputeEngine


def _str(obj: Mapping[str, Any], key: str) -> str:
    value = obj.get(key, "")
    if not isinstance(value, str):
        raise GCPIITError(f"identity token claim {key} must be a string")
    return value


def _int(obj: Mapping[str, Any], key: str) -> int:
    value = obj.get(key, 0)
    if isinstance(value, bool) or not isinstance(value, int):
        raise GCPIITError(f"identity token claim {key} must be a number")
    return value


def parse_claims(claims: Mapping[str, Any]) -> IdentityToken:
    """The claims of a verified token; Go decodes absent fields as zero values, as here."""
    google = claims.get("google") or {}
    ce = google.get("compute_engine") if isinstance(google, Mapping) else None
    if ce is None:
        ce = {}
    if not isinstance(ce, Mapping):
        raise GCPIITError("identity token claim google.compute_engine must be an object")
    return IdentityToken(
        email=_str(claims, "email"),
        compute_engine=ComputeEngine(
            project_id=_str(ce, "project_id"),
            project_number=_int(ce, "project_number"),
            zone=_str(ce, "zone"),
            instance_id=_str(ce, "instance_id"),
            instance_name=_str(ce, "instance_name"),
            instance_creation_timestamp=_int(ce, "instance_creation_timestamp"),
        ),
    )


def agent_path_data(token: IdentityToken) -> dict[str, Any]:
    ce = token.compute_engine
    return {
        "PluginName": PLUGIN_NAME,
        "ServiceAccount": token.email.replace("@", "_"),
        "ProjectID": ce.project_id,
        "ProjectNumber": ce.project_number,
        "Zone": ce.zone,
        "InstanceID": ce.instance_id,
        "InstanceName": ce.instance_name,
        "InstanceCreationTimestamp": ce.instance_creation_timestamp,
    }
