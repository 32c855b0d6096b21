"""The bundle the agent authenticates the server with before it has one of its own.

As SPIRE's trustbundlesources: trust_bundle_spiffe_workload_api (another agent's
Workload API), trust_bundle_url (HTTPS, or plain HTTP over trust_bundle_unix_socket)
or trust_bundle_path. A configured source that cannot be read stops the agent: it
never falls back to trusting whatever server answers; only insecure_bootstrap does.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import http.client
import socket
import ssl
import urllib.parse
import urllib.request
from typing import Any, Optional

from cryptography import x509

from ..common import log
from ..common.bundle import Bundle as SpiffeBundle
from ..common.spiffeid import TrustDomain
from .attestor import AttestationFailed
from .storage import load_der_chain

_log = log.get("attestor")

# SPIRE's spiffeWorkloadAPIFetchTimeout; HTTP downloads get the same.
FETCH_TIMEOUT = 60.0


async def load_bootstrap_roots(config: Any, td: TrustDomain) -> Optional[list[x509.Certificate]]:
    """Roots from the configured source; None only for insecure_bootstrap."""
    if config.trust_bundle_spiffe_workload_api:
        return await fetch_from_workload_api(config.trust_bundle_spiffe_workload_api, td)
    if config.trust_bundle_url:
        data = await asyncio.to_thread(_download, config)
    elif config.trust_bundle_path:
        try:
            with open(config.trust_bundle_path, "rb") as f:
                data = f.read()
        except OSError as exc:
            raise AttestationFailed(f"could not load trust bundle: {exc}") from None
    elif config.insecure_bootstrap:
        return None
    else:
        raise AttestationFailed("no trust bundle configured (trust_bundle_path, trust_bundle_url or "
                                "trust_bundle_spiffe_workload_api) and insecure_bootstrap is not set")
    return _parse(data, (config.trust_bundle_format or "pem").lower(), td)


def _parse(data: bytes, fmt: str, td: TrustDomain) -> list[x509.Certificate]:
    try:
        roots = SpiffeBundle.from_json(td, data).x509_authorities if fmt == "spiffe" \
            else x509.load_pem_x509_certificates(data)
    except ValueError as exc:
        raise AttestationFailed(f"could not parse trust bundle ({fmt}): {exc}") from None
    if not roots:
        raise AttestationFailed("no certificates found in trust bundle")
    return roots


# --- trust_bundle_spiffe_workload_api ---------------------------------------------------------
def _workload_client(address: str) -> Any:
    """A Workload API client for unix:///path or tcp://ip:port (the one `spire-agent api` uses)."""
    from grpclib.client import Channel

    from .workloadapi.client import WorkloadClient

    parsed = urllib.parse.urlsplit(address)
    if parsed.scheme == "unix":
        return WorkloadClient(parsed.path, FETCH_TIMEOUT)
    if parsed.scheme == "tcp" and parsed.hostname and parsed.port:
        host, port = parsed.hostname, parsed.port

        class TCPWorkloadClient(WorkloadClient):
            async def __aenter__(self) -> "TCPWorkloadClient":
                self.channel = Channel(host, port)
                return self

        return TCPWorkloadClient(address, FETCH_TIMEOUT)
    raise AttestationFailed(f'"{address}" is not a valid SPIFFE Workload API endpoint address')


async def fetch_from_workload_api(address: str, td: TrustDomain) -> list[x509.Certificate]:
    """The X.509 bundle of our trust domain, from FetchX509Bundles on another agent's socket."""
    from ..proto.workload import workload_pb2 as pb

    _log.debug(f"Fetching trust bundle from SPIFFE Workload API: {address}")
    try:
        async with _workload_client(address) as client:
            resp = await client.first(client.stub.FetchX509Bundles, pb.X509BundlesRequest())
    except AttestationFailed:
        raise
    except Exception as exc:  # grpclib, OSError, timeout, stream ended: all mean "could not read it"
        reason = getattr(exc, "message", None) or str(exc) or type(exc).__name__
        raise AttestationFailed(
            f"unable to fetch trust bundle from SPIFFE Workload API {address}: {reason}") from None
    der = resp.bundles.get(td.id_string())
    if not der:
        raise AttestationFailed(f'SPIFFE Workload API {address} did not provide a trust bundle for '
                                f'trust domain "{td.name}"')
    try:
        roots = load_der_chain(der)
    except ValueError as exc:
        raise AttestationFailed(f"SPIFFE Workload API {address} sent a malformed bundle: {exc}") from None
    if not roots:
        raise AttestationFailed("no certificates found in trust bundle")
    return roots


# --- trust_bundle_url [over trust_bundle_unix_socket] -----------------------------------------
class _UnixHTTPConnection(http.client.HTTPConnection):
    def __init__(self, socket_path: str, host: str) -> None:
        super().__init__(host or "localhost", timeout=FETCH_TIMEOUT)
        self.socket_path = socket_path

    def connect(self) -> None:
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        sock.settimeout(self.timeout)
        try:
            sock.connect(self.socket_path)
        except OSError:
            sock.close()
            raise
        self.sock = sock


def _unix_socket_url(config: Any) -> str:
    """The URL with SPIRE's spire-*/spiffe-* query parameters, which tell the bundle server who asks."""
    url = urllib.parse.urlsplit(config.trust_bundle_url)
    params = urllib.parse.parse_qsl(url.query, keep_blank_values=True)
    params += [
        ("spire-attest-mode", "bootstrap"),
        ("spire-connection-attempts", "1"),
        ("spire-attest-start-time", dt.datetime.now(dt.timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")),
        ("spire-server-address", config.server_address),
        ("spire-server-port", str(config.server_port)),
        ("spiffe-trust-domain", config.trust_domain),
    ]
    return urllib.parse.urlunsplit(url._replace(query=urllib.parse.urlencode(sorted(params))))


def _download(config: Any) -> bytes:
    url = config.trust_bundle_url
    try:
        if config.trust_bundle_unix_socket:
            url = _unix_socket_url(config)
            parts = urllib.parse.urlsplit(url)
            conn = _UnixHTTPConnection(config.trust_bundle_unix_socket, parts.hostname or "")
            try:
                conn.request("GET", urllib.parse.urlunsplit(("", "", parts.path or "/", parts.query, "")))
                resp = conn.getresponse()
                if resp.status != 200:
                    raise AttestationFailed(f"error downloading trust bundle: {resp.status} {resp.reason}")
                return resp.read()
            finally:
                conn.close()
        with urllib.request.urlopen(url, timeout=FETCH_TIMEOUT, context=ssl.create_default_context()) as r:
            return bytes(r.read())
    except (OSError, http.client.HTTPException) as exc:
        where = f" from {config.trust_bundle_unix_socket}" if config.trust_bundle_unix_socket else ""
        raise AttestationFailed(f"unable to fetch trust bundle URL {config.trust_bundle_url}{where}: {exc}") from None
