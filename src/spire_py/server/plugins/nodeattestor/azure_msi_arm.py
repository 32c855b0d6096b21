"""What the azure_msi server attestor asks Azure: the tenant's OpenID signing keys, and the
Resource Manager (ARM) calls that turn a principal into VM selectors.

Keys: ``<authority>/<tenant>/.well-known/openid-configuration`` names ``jwks_uri``; the
set is cached for an hour (SPIRE's refresh interval) and fetched again, at most once a
minute, when a token names a key ID it does not hold (key rotation).

ARM, as SPIRE's client.go does through the Go SDK, here over the REST shapes the SDKs
wrap: the resources list filtered on ``identity/principalId``, ``virtualMachines`` get,
``networkInterfaces`` get. Its bearer token comes from the client-credentials grant
(``app_id``/``app_secret``) at ``<authority>/<tenant>/oauth2/v2.0/token`` or, without
them, from the server VM's own managed identity (IMDS).

``<authority>`` is ``AZURE_AUTHORITY_HOST`` (the variable Azure's identity SDKs read),
default ``https://login.microsoftonline.com``; ARM is ``https://management.azure.com``,
replaced by ``SPIRE_PY_AZURE_RESOURCE_MANAGER_URL`` for tests and sovereign-cloud mirrors
only (SPIRE has no setting for it).
"""

from __future__ import annotations

import json
import os
import threading
import time
import urllib.parse
from typing import Any, Optional, Protocol

import requests

from ....common.errors import SpireError
from ....common.plugins import azure_msi as msi

AUTHORITY = "https://login.microsoftonline.com"
AUTHORITY_ENV = "AZURE_AUTHORITY_HOST"
ARM = "https://management.azure.com"
ARM_ENV = "SPIRE_PY_AZURE_RESOURCE_MANAGER_URL"
ARM_RESOURCE = "https://management.azure.com/"
KEYSET_REFRESH_SECONDS = 3600
KEYSET_MISS_REFETCH_SECONDS = 60
TIMEOUT = 10.0
MAX_RESPONSE = 1024 * 1024
API_RESOURCES = "2021-04-01"
API_COMPUTE = "2024-07-01"
API_NETWORK = "2024-05-01"


class AzureAPIError(SpireError):
    """Azure could not be asked, or answered with something unusable."""


def authority() -> str:
    host = (os.environ.get(AUTHORITY_ENV) or AUTHORITY).strip().rstrip("/")
    return host if "://" in host else "https://" + host


def arm_endpoint() -> str:
    return (os.environ.get(ARM_ENV) or ARM).strip().rstrip("/")


def _json(session: requests.Session, method: str, url: str, **kw: Any) -> Any:
    try:
        resp = session.request(method, url, timeout=TIMEOUT, stream=True, **kw)
        with resp:
            body = resp.raw.read(MAX_RESPONSE + 1, decode_content=True)
            status = resp.status_code
    except requests.RequestException as exc:
        raise AzureAPIError(str(exc)) from None
    if len(body) > MAX_RESPONSE:
        raise AzureAPIError(f"response larger than {MAX_RESPONSE} bytes")
    try:
        doc = json.loads(body) if body else {}
    except ValueError:
        doc = None
    if status != 200:
        err = doc.get("error") if isinstance(doc, dict) else None
        detail = (err.get("message") or err.get("code")) if isinstance(err, dict) else \
            (doc.get("error_description") if isinstance(doc, dict) else None)
        raise AzureAPIError(f"unexpected status code {status}" + (f": {detail}" if detail else ""))
    if not isinstance(doc, dict):
        raise AzureAPIError("unable to decode response: not a JSON object")
    return doc


class TenantKeys:
    """One tenant's OpenID signing keys (a JWKS), by key ID."""

    def __init__(self, tenant_id: str, session: Optional[requests.Session] = None) -> None:
        self.tenant_id = tenant_id
        self.session = session or requests.Session()
        self._lock = threading.Lock()
        self._keys: dict[str, dict[str, Any]] = {}
        self._fetched = 0.0

    def key(self, kid: str) -> Optional[dict[str, Any]]:
        with self._lock:
            age = time.monotonic() - self._fetched
            if not self._fetched or age > KEYSET_REFRESH_SECONDS or \
                    (kid not in self._keys and age > KEYSET_MISS_REFETCH_SECONDS):
                self._download()
            return self._keys.get(kid)

    def _download(self) -> None:
        tenant = urllib.parse.quote(self.tenant_id, safe="")
        config = _json(self.session, "GET", f"{authority()}/{tenant}/.well-known/openid-configuration")
        jwks_uri = config.get("jwks_uri")
        if not isinstance(jwks_uri, str) or not jwks_uri:
            raise AzureAPIError("OpenID configuration has no jwks_uri")
        jwks = _json(self.session, "GET", jwks_uri)
        keys = jwks.get("keys")
        if not isinstance(keys, list):
            raise AzureAPIError("JWKS has no keys")
        self._keys = {k["kid"]: k for k in keys if isinstance(k, dict) and isinstance(k.get("kid"), str)}
        self._fetched = time.monotonic()


class TokenSource(Protocol):
    def token(self) -> str: ...


class _CachedToken:
    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._token = ""
        self._expires = 0.0

    def token(self) -> str:
        with self._lock:
            if not self._token or time.monotonic() > self._expires:
                token, lifetime = self._fetch()
                self._token, self._expires = token, time.monotonic() + max(lifetime - 60, 0)
            return self._token

    def _fetch(self) -> tuple[str, int]:
        raise NotImplementedError


class AppCredential(_CachedToken):
    """The OAuth 2.0 client-credentials grant for an app registered in the tenant."""

    def __init__(self, tenant_id: str, app_id: str, app_secret: str, session: Optional[requests.Session] = None):
        super().__init__()
        self.tenant_id, self.app_id, self.app_secret = tenant_id, app_id, app_secret
        self.session = session or requests.Session()

    def _fetch(self) -> tuple[str, int]:
        tenant = urllib.parse.quote(self.tenant_id, safe="")
        doc = _json(self.session, "POST", f"{authority()}/{tenant}/oauth2/v2.0/token", data={
            "grant_type": "client_credentials", "client_id": self.app_id, "client_secret": self.app_secret,
            "scope": ARM_RESOURCE + ".default"})
        token = doc.get("access_token")
        if not isinstance(token, str) or not token:
            raise AzureAPIError("token response missing access token")
        try:
            return token, int(doc.get("expires_in") or 0)
        except (TypeError, ValueError):
            return token, 0


class ManagedIdentityCredential(_CachedToken):
    """The server VM's own managed identity, from IMDS."""

    def __init__(self, client: Optional[msi.IMDSClient] = None) -> None:
        super().__init__()
        self.client = client or msi.IMDSClient()

    def _fetch(self) -> tuple[str, int]:
        try:
            return self.client.token(ARM_RESOURCE)
        except msi.AzureMSIError as exc:
            raise AzureAPIError(f"managed identity: {exc}") from None


class ARMClient:
    """The three Resource Manager reads the resolver needs, in one subscription."""

    def __init__(self, subscription_id: str, credential: TokenSource, session: Optional[requests.Session] = None):
        self.subscription_id = subscription_id
        self.credential = credential
        self.session = session or requests.Session()

    def _get(self, url: str) -> Any:
        headers = {"Authorization": f"Bearer {self.credential.token()}"}
        return _json(self.session, "GET", url, headers=headers)

    def _base(self) -> str:
        return f"{arm_endpoint()}/subscriptions/{urllib.parse.quote(self.subscription_id, safe='')}"

    def virtual_machine_resource_id(self, principal_id: str) -> str:
        odata = principal_id.replace("'", "''")
        flt = f"resourceType eq 'Microsoft.Compute/virtualMachines' and identity/principalId eq '{odata}'"
        url: Optional[str] = f"{self._base()}/resources?" + urllib.parse.urlencode(
            {"$filter": flt, "api-version": API_RESOURCES})
        values: list[Any] = []
        pages = 0
        while url and pages < 10:
            try:
                page = self._get(url)
            except AzureAPIError as exc:
                raise AzureAPIError(f"unable to list virtual machine by principal: {exc}") from None
            values += page.get("value") or []
            url = page.get("nextLink")
            pages += 1
        if not values:
            raise AzureAPIError(f'principal "{principal_id}" not found')
        if len(values) > 1:
            raise AzureAPIError(f'expected one result for principal "{principal_id}" at most')
        rid = values[0].get("id") if isinstance(values[0], dict) else None
        if not rid:
            raise AzureAPIError("virtual machine resource missing ID")
        return str(rid)

    def _resource(self, group: str, provider: str, name: str, api: str) -> Any:
        q = urllib.parse.quote
        return self._get(f"{self._base()}/resourceGroups/{q(group, safe='')}/providers/{provider}/"
                         f"{q(name, safe='')}?api-version={api}")

    def virtual_machine(self, group: str, name: str) -> Any:
        return self._resource(group, "Microsoft.Compute/virtualMachines", name, API_COMPUTE)

    def network_interface(self, group: str, name: str) -> Any:
        return self._resource(group, "Microsoft.Network/networkInterfaces", name, API_NETWORK)
