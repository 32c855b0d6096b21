"""The kubelet's ``/pods`` for WorkloadAttestor "k8s" (SPIRE's kubelet client).

Secure port (default 10250): HTTPS to ``<node name>:<port>``, the kubelet's certificate verified
against ``kubelet_ca_path`` (default: the service account's cluster CA) unless
``skip_kubelet_verification``; without a node name the kubelet is reached on 127.0.0.1 and, as
SPIRE, its chain is verified but not its name. The agent authenticates with an X.509 client
certificate (``certificate_path`` + ``private_key_path``), the bearer token at ``token_path``
(default: the service account token), or nothing (``use_anonymous_authentication``). Read-only
port: plain HTTP to 127.0.0.1. Credentials are loaded again every ``reload_interval``.
"""

from __future__ import annotations

import json
import ssl
import threading
import time
import urllib.error
import urllib.request
from dataclasses import dataclass
from typing import Any, Optional

from .base import WorkloadAttestationError

DEFAULT_SECURE_PORT = 10250
DEFAULT_CA_PATH = "/var/run/secrets/kubernetes.io/serviceaccount/ca.crt"
DEFAULT_TOKEN_PATH = "/var/run/secrets/kubernetes.io/serviceaccount/token"
REQUEST_TIMEOUT = 10.0
# A node's pod list: ~110 pods of tens of KiB each at most; far beyond that is not a kubelet.
MAX_POD_LIST_BYTES = 64 * 1024 * 1024
MAX_FILE_BYTES = 1024 * 1024


class KubeletConfigError(WorkloadAttestationError):
    """Credentials or the CA could not be loaded (SPIRE: InvalidArgument at configure)."""


@dataclass(frozen=True)
class KubeletSettings:
    secure: bool
    port: int
    node_name: str
    skip_verification: bool
    ca_path: str
    token_path: str
    certificate_path: str
    private_key_path: str
    anonymous: bool
    reload_interval: float


def _read(path: str, what: str) -> bytes:
    try:
        with open(path, "rb") as f:
            data = f.read(MAX_FILE_BYTES + 1)
    except OSError as exc:
        raise KubeletConfigError(f"unable to load {what}: open {path}: {exc.strerror or exc}") from None
    if len(data) > MAX_FILE_BYTES:
        raise KubeletConfigError(f"unable to load {what}: {path} is larger than {MAX_FILE_BYTES} bytes")
    return data


class KubeletClient:
    def __init__(self, settings: KubeletSettings) -> None:
        self.settings = settings
        self._lock = threading.Lock()
        self._loaded_at = -1.0
        self._context: Optional[ssl.SSLContext] = None
        self._token = ""

    @property
    def url(self) -> str:
        s = self.settings
        if not s.secure:
            return f"http://127.0.0.1:{s.port}/pods"
        return f"https://{s.node_name or '127.0.0.1'}:{s.port}/pods"

    def load(self) -> None:
        """(Re)build the TLS context and read the token; KubeletConfigError on failure."""
        s = self.settings
        if not s.secure:
            return
        ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
        if s.skip_verification:
            ctx.check_hostname = False
            ctx.verify_mode = ssl.CERT_NONE
        else:
            ca = _read(s.ca_path or DEFAULT_CA_PATH, "kubelet CA")
            try:
                ctx.load_verify_locations(cadata=ca.decode("ascii", errors="replace"))
            except (ssl.SSLError, ValueError) as exc:
                raise KubeletConfigError(f"unable to parse kubelet CA: {exc}") from None
            # Over 127.0.0.1 the kubelet's certificate names the node, not the address: chain only.
            ctx.check_hostname = bool(s.node_name)
        token = ""
        if s.anonymous:
            pass
        elif s.certificate_path and s.private_key_path:
            _read(s.certificate_path, "certificate")
            _read(s.private_key_path, "private key")
            try:
                ctx.load_cert_chain(s.certificate_path, s.private_key_path)
            except (ssl.SSLError, OSError) as exc:
                raise KubeletConfigError(f"unable to load keypair: {exc}") from None
        elif s.certificate_path:
            raise KubeletConfigError("the private key path is required with the certificate path")
        elif s.private_key_path:
            raise KubeletConfigError("the certificate path is required with the private key path")
        else:
            token = _read(s.token_path or DEFAULT_TOKEN_PATH, "token").decode(errors="replace").strip()
        with self._lock:
            self._context, self._token, self._loaded_at = ctx, token, time.monotonic()

    def _fresh(self) -> tuple[Optional[ssl.SSLContext], str]:
        with self._lock:
            stale = self._loaded_at < 0 or time.monotonic() - self._loaded_at >= self.settings.reload_interval
        if stale and self.settings.secure:
            try:
                self.load()
            except KubeletConfigError:
                if self._loaded_at < 0:
                    raise
                # As SPIRE: keep the last good credentials, the next call tries again.
        with self._lock:
            return self._context, self._token

    def pod_list(self) -> list[dict[str, Any]]:
        """The ``items`` of the kubelet's pod list (blocking)."""
        ctx, token = self._fresh()
        req = urllib.request.Request(self.url, headers={"Authorization": f"Bearer {token}"} if token else {})
        handlers: list[Any] = [urllib.request.ProxyHandler({})]  # the kubelet is never behind a proxy
        if ctx is not None:
            handlers.append(urllib.request.HTTPSHandler(context=ctx))
        opener = urllib.request.build_opener(*handlers)
        try:
            with opener.open(req, timeout=REQUEST_TIMEOUT) as resp:
                body: bytes = resp.read(MAX_POD_LIST_BYTES + 1)
        except urllib.error.HTTPError as exc:
            detail = exc.read(1024).decode(errors="replace")
            raise WorkloadAttestationError(f"unexpected status code on pods response: {exc.code} {detail}") from None
        except (urllib.error.URLError, OSError) as exc:
            raise WorkloadAttestationError(f"unable to perform request: {getattr(exc, 'reason', exc)}") from None
        if len(body) > MAX_POD_LIST_BYTES:
            raise WorkloadAttestationError(f"unable to read pods response: larger than {MAX_POD_LIST_BYTES} bytes")
        try:
            doc = json.loads(body)
        except ValueError as exc:
            raise WorkloadAttestationError(f"unable to parse kubelet response: {exc}") from None
        items = doc.get("items") if isinstance(doc, dict) else None
        return [i for i in items or [] if isinstance(i, dict)]
