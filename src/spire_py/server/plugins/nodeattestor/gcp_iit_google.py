"""What the gcp_iit server attestor asks Google: its token-signing certificates and, with
``use_instance_metadata``, the Compute Engine instance.

The certificates come from ``https://www.googleapis.com/oauth2/v1/certs`` (a JSON map of
key ID to PEM certificate), cached until the response's ``Expires``, as SPIRE's
googlePublicKeyRetriever. The instance comes from the Compute API's
``instances.get`` (``GET compute/v1/projects/P/zones/Z/instances/NAME``) through
google-auth's AuthorizedSession with Application Default Credentials or
``service_account_file`` (scope compute.readonly).

SPIRE has no setting for either address. ``SPIRE_PY_GCP_IIT_CERTS_URL`` and
``SPIRE_PY_GCP_COMPUTE_ENDPOINT`` replace them, for tests and air-gapped mirrors only; the
code path is the same (the credentials' own ``token_uri`` already decides where tokens
come from).
"""

from __future__ import annotations

import email.utils
import json
import os
import threading
import time
import urllib.parse
from typing import Any, Optional

import requests

from ....common.errors import SpireError

CERTS_URL = "https://www.googleapis.com/oauth2/v1/certs"
CERTS_URL_ENV = "SPIRE_PY_GCP_IIT_CERTS_URL"
COMPUTE_ENDPOINT = "https://compute.googleapis.com"
COMPUTE_ENDPOINT_ENV = "SPIRE_PY_GCP_COMPUTE_ENDPOINT"
COMPUTE_SCOPE = "https://www.googleapis.com/auth/compute.readonly"
TIMEOUT = 10.0
MAX_RESPONSE = 1024 * 1024


class GoogleAPIError(SpireError):
    """Google could not be asked, or answered with something unusable."""


def _read(resp: requests.Response) -> bytes:
    body = resp.raw.read(MAX_RESPONSE + 1, decode_content=True)
    if len(body) > MAX_RESPONSE:
        raise GoogleAPIError(f"response larger than {MAX_RESPONSE} bytes")
    return bytes(body)


class GoogleCertificates:
    """Google's token-signing certificates by key ID, refreshed when their Expires passes."""

    def __init__(self, url: str = "", session: Optional[requests.Session] = None) -> None:
        self.url = url or os.environ.get(CERTS_URL_ENV) or CERTS_URL
        self.session = session or requests.Session()
        self._lock = threading.Lock()
        self._certs: dict[str, str] = {}
        self._expiry: Optional[float] = None

    def get(self) -> dict[str, str]:
        with self._lock:
            if self._expiry is None or time.time() > self._expiry:
                self._download()
            return dict(self._certs)

    def _download(self) -> None:
        try:
            resp = self.session.get(self.url, timeout=TIMEOUT, stream=True)
            with resp:
                if resp.status_code != 200:
                    raise GoogleAPIError(f"unexpected status code: {resp.status_code}")
                body = _read(resp)
                expires = resp.headers.get("Expires", "")
        except requests.RequestException as exc:
            raise GoogleAPIError(str(exc)) from None
        try:
            data = json.loads(body)
        except ValueError as exc:
            raise GoogleAPIError(f"unable to unmarshal certificate response: {exc}") from None
        if not isinstance(data, dict) or not all(isinstance(v, str) and "BEGIN CERTIFICATE" in v
                                                 for v in data.values()):
            raise GoogleAPIError("unable to unmarshal certificate response: malformed PEM block")
        self._certs = data
        self._expiry = None
        if expires:
            try:
                self._expiry = email.utils.parsedate_to_datetime(expires).timestamp()
            except (TypeError, ValueError):
                pass


class ComputeClient:
    """instances.get with google-auth credentials (created on first use: no I/O at configure)."""

    def __init__(self, service_account_file: str = "", endpoint: str = "") -> None:
        self.service_account_file = service_account_file
        self.endpoint = (endpoint or os.environ.get(COMPUTE_ENDPOINT_ENV) or COMPUTE_ENDPOINT).rstrip("/")
        self._lock = threading.Lock()
        self._session: Any = None

    def _authorized(self) -> Any:
        with self._lock:
            if self._session is None:
                import google.auth
                from google.auth.transport.requests import AuthorizedSession
                from google.oauth2 import service_account

                if self.service_account_file:
                    creds = service_account.Credentials.from_service_account_file(
                        self.service_account_file, scopes=[COMPUTE_SCOPE])
                else:
                    creds, _ = google.auth.default(scopes=[COMPUTE_SCOPE])
                self._session = AuthorizedSession(creds)
            return self._session

    def instance(self, project: str, zone: str, name: str) -> dict[str, Any]:
        import google.auth.exceptions

        q = urllib.parse.quote
        url = f"{self.endpoint}/compute/v1/projects/{q(project, safe='')}/zones/{q(zone, safe='')}" \
              f"/instances/{q(name, safe='')}"
        try:
            resp = self._authorized().get(url, timeout=TIMEOUT, stream=True)
            with resp:
                body = _read(resp)
                status = resp.status_code
        except (requests.RequestException, google.auth.exceptions.GoogleAuthError) as exc:
            raise GoogleAPIError(str(exc)) from None
        if status != 200:
            try:
                message = json.loads(body)["error"]["message"]
            except (ValueError, KeyError, TypeError):
                message = body[:200].decode("utf-8", "replace")
            raise GoogleAPIError(f"googleapi: Error {status}: {message}")
        try:
            instance = json.loads(body)
        except ValueError as exc:
            raise GoogleAPIError(f"unable to decode the instance: {exc}") from None
        if not isinstance(instance, dict):
            raise GoogleAPIError("unable to decode the instance: not a JSON object")
        return instance
