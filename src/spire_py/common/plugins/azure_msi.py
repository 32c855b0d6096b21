"""azure_msi: the payload both sides share and the Azure instance metadata service (IMDS).

Wire compatible with SPIRE's ``pkg/common/plugin/azure``: the agent sends
``{"token": "<JWT>"}``, a managed-identity access token IMDS issued for ``resource_id``
(the token's audience). The agent path template sees ``.PluginName``, ``.TenantID``
(``tid``), ``.PrincipalID`` (``sub``) and the registered claims under Go's names
(``.Issuer``, ``.Subject``, ``.Audience``, ``.ID``).

IMDS is ``http://169.254.169.254``; ``AZURE_POD_IDENTITY_AUTHORITY_HOST`` (the variable
Azure's identity SDKs read for the same purpose) points it elsewhere. The server uses
the same client when it resolves selectors with the VM's own managed identity.
"""

from __future__ import annotations

import json
import os
import urllib.error
import urllib.parse
import urllib.request
from dataclasses import dataclass
from typing import Any, Mapping

from ..errors import SpireError
from .payload import json_object

PLUGIN_NAME = "azure_msi"
SELECTOR_TYPE = "azure_msi"
DEFAULT_RESOURCE_ID = "https://management.azure.com/"
DEFAULT_AGENT_PATH_TEMPLATE = "/{{ .PluginName }}/{{ .TenantID }}/{{ .PrincipalID }}"

IMDS_DEFAULT = "http://169.254.169.254"
IMDS_ENV = "AZURE_POD_IDENTITY_AUTHORITY_HOST"
TOKEN_PATH = "/metadata/identity/oauth2/token"
TOKEN_API_VERSION = "2018-02-01"
INSTANCE_PATH = "/metadata/instance"
INSTANCE_API_VERSION = "2025-04-07"

# An access token is a few KiB; anything far larger is not one.
MAX_PAYLOAD_BYTES = 64 * 1024
MAX_RESPONSE = 256 * 1024


class AzureMSIError(SpireError, ValueError):
    """A payload, token response or metadata document that cannot be used."""


@dataclass(frozen=True)
class InstanceMetadata:
    name: str
    subscription_id: str
    resource_group_name: str
    vm_scale_set_name: str = ""


def marshal_attestation_data(token: str) -> bytes:
    return json.dumps({"token": token}).encode()


def unmarshal_attestation_data(payload: bytes) -> str:
    obj = json_object(payload, "failed to unmarshal data payload", AzureMSIError, MAX_PAYLOAD_BYTES)
    token = obj.get("token") or ""
    if not isinstance(token, str):
        raise AzureMSIError("failed to unmarshal data payload: token must be a string")
    if not token:
        raise AzureMSIError("missing token from attestation data")
    return token


def agent_path_data(claims: Mapping[str, Any]) -> dict[str, Any]:
    aud = claims.get("aud", "")
    return {
        "PluginName": PLUGIN_NAME,
        "TenantID": claims.get("tid", ""),
        "PrincipalID": claims.get("sub", ""),
        "Issuer": claims.get("iss", ""),
        "Subject": claims.get("sub", ""),
        "Audience": aud if isinstance(aud, list) else [aud],
        "ID": claims.get("jti", ""),
    }


def imds_endpoint() -> str:
    return (os.environ.get(IMDS_ENV) or IMDS_DEFAULT).strip().rstrip("/")


class IMDSClient:
    """The two IMDS calls SPIRE makes, with the ``Metadata: true`` header, bounded reads and
    a timeout. IMDS is link-local: never through an HTTP proxy."""

    def __init__(self, endpoint: str = "", timeout: float = 10.0) -> None:
        self.endpoint = (endpoint or imds_endpoint()).rstrip("/")
        self.timeout = timeout

    def _get(self, path: str, query: dict[str, str]) -> Any:
        url = f"{self.endpoint}{path}?{urllib.parse.urlencode(query)}"
        req = urllib.request.Request(url, headers={"Metadata": "true"})
        opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))
        try:
            with opener.open(req, timeout=self.timeout) as resp:
                body: bytes = resp.read(MAX_RESPONSE + 1)
        except urllib.error.HTTPError as exc:
            detail = exc.read(1024).decode("utf-8", "replace")
            raise AzureMSIError(f"unexpected status code {exc.code}: {detail}") from None
        except (urllib.error.URLError, OSError) as exc:
            raise AzureMSIError(f"{self.endpoint}: {getattr(exc, 'reason', exc)}") from None
        if len(body) > MAX_RESPONSE:
            raise AzureMSIError(f"response larger than {MAX_RESPONSE} bytes")
        try:
            return json.loads(body)
        except ValueError as exc:
            raise AzureMSIError(f"unable to decode response: {exc}") from None

    def token(self, resource: str) -> tuple[str, int]:
        """An access token for ``resource`` and its lifetime in seconds."""
        r = self._get(TOKEN_PATH, {"api-version": TOKEN_API_VERSION, "resource": resource})
        token = r.get("access_token") if isinstance(r, dict) else None
        if not token or not isinstance(token, str):
            raise AzureMSIError("response missing access token")
        try:
            expires_in = int(r.get("expires_in") or 0)
        except (TypeError, ValueError):
            expires_in = 0
        return token, expires_in

    def instance_metadata(self) -> InstanceMetadata:
        r = self._get(INSTANCE_PATH, {"api-version": INSTANCE_API_VERSION, "format": "json"})
        compute = (r.get("compute") if isinstance(r, dict) else None) or {}
        md = InstanceMetadata(str(compute.get("name") or ""), str(compute.get("subscriptionId") or ""),
                              str(compute.get("resourceGroupName") or ""), str(compute.get("vmScaleSetName") or ""))
        if not md.name:
            raise AzureMSIError("response missing instance name")
        if not md.subscription_id:
            raise AzureMSIError("response missing instance subscription id")
        if not md.resource_group_name:
            raise AzureMSIError("response missing instance resource group name")
        return md
