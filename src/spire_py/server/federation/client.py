"""Fetch a trust domain's bundle from its bundle endpoint (SPIRE's bundle client).

``https_spiffe``: the endpoint's chain must verify against the federated trust
domain's bundle we already hold, and its leaf must carry ``endpoint_spiffe_id``
(no host name check). ``https_web``: the system's web PKI with host name checks
(OpenSSL's default verify paths, so ``SSL_CERT_FILE``/``SSL_CERT_DIR`` apply, as
they do for Go). One bounded HTTP/1.1 GET per fetch: the response head and body have
size limits, the whole exchange a deadline.
"""

from __future__ import annotations

import asyncio
import ssl
from dataclasses import dataclass
from typing import Optional
from urllib.parse import urlsplit

from cryptography import x509

from ...common import tls
from ...common.bundle import Bundle, BundleError
from ...common.errors import SpireError
from ...common.spiffeid import SpiffeId, TrustDomain

MAX_BUNDLE_BYTES = 4 * 1024 * 1024
MAX_HEAD_BYTES = 64 * 1024
FETCH_TIMEOUT = 30.0


class FetchError(SpireError):
    """The bundle could not be fetched or is not a valid bundle of the trust domain."""


@dataclass(frozen=True)
class SpiffeAuth:
    endpoint_id: SpiffeId
    roots: tuple[x509.Certificate, ...]


def _context(auth: Optional[SpiffeAuth]) -> ssl.SSLContext:
    if auth is None:
        ctx = ssl.create_default_context()
    else:
        if not auth.roots:
            raise FetchError("can't perform SPIFFE Authentication: local copy of bundle not found")
        ctx = tls.client_context(list(auth.roots))
        ctx.set_alpn_protocols(["http/1.1"])
    ctx.minimum_version = ssl.TLSVersion.TLSv1_2
    return ctx


async def _read_body(reader: asyncio.StreamReader, headers: dict[str, str]) -> bytes:
    if headers.get("transfer-encoding", "").lower() == "chunked":
        body = bytearray()
        while True:
            size_line = await reader.readline()
            try:
                size = int(size_line.split(b";", 1)[0].strip(), 16)
            except ValueError:
                raise FetchError("malformed chunked response") from None
            if size == 0:
                return bytes(body)
            if len(body) + size > MAX_BUNDLE_BYTES:
                raise FetchError(f"bundle larger than {MAX_BUNDLE_BYTES} bytes")
            body += await reader.readexactly(size)
            await reader.readexactly(2)
    if "content-length" in headers:
        try:
            length = int(headers["content-length"])
        except ValueError:
            raise FetchError("malformed Content-Length") from None
        if length < 0 or length > MAX_BUNDLE_BYTES:
            raise FetchError(f"bundle larger than {MAX_BUNDLE_BYTES} bytes")
        return await reader.readexactly(length)
    rest = bytearray()
    while len(rest) <= MAX_BUNDLE_BYTES:
        more = await reader.read(MAX_BUNDLE_BYTES + 1 - len(rest))
        if not more:
            break
        rest += more
    if len(rest) > MAX_BUNDLE_BYTES:
        raise FetchError(f"bundle larger than {MAX_BUNDLE_BYTES} bytes")
    return bytes(rest)


async def _get(url: str, auth: Optional[SpiffeAuth]) -> tuple[int, bytes]:
    parts = urlsplit(url)
    if parts.scheme.lower() != "https" or not parts.hostname:
        raise FetchError(f'bundle endpoint URL must be an https URL with a host: "{url}"')
    host, port = parts.hostname, parts.port or 443
    target = (parts.path or "/") + (f"?{parts.query}" if parts.query else "")
    reader, writer = await asyncio.open_connection(
        host, port, ssl=_context(auth), server_hostname=host, limit=MAX_HEAD_BYTES)
    try:
        if auth is not None:
            leaf = tls.peer_leaf(writer.transport)
            if leaf is None:
                raise FetchError("bundle endpoint presented no certificate")
            got = tls.spiffe_id_of(leaf)
            if got != auth.endpoint_id:
                raise FetchError(f'unexpected ID "{got}"')
        host_header = parts.netloc.rsplit("@", 1)[-1]
        writer.write(f"GET {target} HTTP/1.1\r\nHost: {host_header}\r\nUser-Agent: spire-server\r\n"
                     "Accept: application/json\r\nAccept-Encoding: identity\r\nConnection: close\r\n\r\n".encode("latin-1"))
        await writer.drain()
        try:
            head = await reader.readuntil(b"\r\n\r\n")
        except asyncio.LimitOverrunError:
            raise FetchError("response head too large") from None
        lines = head.decode("latin-1").split("\r\n")
        status_parts = lines[0].split(" ", 2)
        if len(status_parts) < 2 or not status_parts[0].startswith("HTTP/1.") or not status_parts[1].isdigit():
            raise FetchError("malformed HTTP response")
        headers = {}
        for line in lines[1:]:
            if ":" in line:
                k, v = line.split(":", 1)
                headers[k.strip().lower()] = v.strip()
        status = int(status_parts[1])
        if status != 200:
            return status, (await reader.read(1024))
        return status, await _read_body(reader, headers)
    finally:
        writer.close()


async def fetch_bundle(trust_domain: TrustDomain, url: str, auth: Optional[SpiffeAuth] = None) -> Bundle:
    """The endpoint's bundle of ``trust_domain``; FetchError says why not (SPIRE's wording)."""
    try:
        status, body = await asyncio.wait_for(_get(url, auth), FETCH_TIMEOUT)
    except FetchError:
        raise
    except ssl.SSLCertVerificationError as exc:
        raise FetchError(f"failed to fetch bundle: {exc.verify_message or exc}") from None
    except (OSError, asyncio.TimeoutError, asyncio.IncompleteReadError, tls.PeerAuthError) as exc:
        raise FetchError(f"failed to fetch bundle: {exc or type(exc).__name__}") from None
    if status != 200:
        raise FetchError(f"unexpected status {status} fetching bundle: {body.decode('utf-8', 'replace')}")
    try:
        return Bundle.from_json(trust_domain, body)
    except BundleError as exc:
        raise FetchError(f"failed to decode bundle: {exc}") from None
