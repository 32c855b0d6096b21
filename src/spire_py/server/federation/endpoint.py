"""The bundle endpoint: the trust domain's bundle as SPIFFE bundle JSON over HTTPS.

As SPIRE's ``pkg/server/endpoints/bundle``: GET ``/`` only (405 for other methods,
404 for other paths), the bundle's ``spiffe_refresh_hint`` replaced by the configured
``refresh_hint``, TLS 1.2 or newer. ``https_spiffe`` presents the server's own
X.509-SVID (swapped on every rotation); ``https_web`` presents a certificate read from
files and re-read every ``file_sync_interval``. Each connection serves one request;
the request head is bounded in size and time, and so is the number of connections.
"""

from __future__ import annotations

import asyncio
import os
import ssl
from typing import Awaitable, Callable, Optional

from cryptography import x509
from cryptography.hazmat.primitives.asymmetric.types import PrivateKeyTypes
from cryptography.hazmat.primitives.serialization import load_pem_private_key

from ...common import log, tls
from ...common.bundle import Bundle
from ...common.config.federation import BundleEndpointConfig
from ...common.errors import SpireError

_log = log.get("bundle_endpoint")

MAX_HEAD_BYTES = 8192
HEAD_TIMEOUT = 10.0  # SPIRE's ReadHeaderTimeout
MAX_CONNECTIONS = 128

BundleGetter = Callable[[], Awaitable[Bundle]]


class EndpointError(SpireError):
    """The bundle endpoint cannot be set up (unreadable serving certificate...)."""


def serving_context(chain: list[x509.Certificate], key: PrivateKeyTypes) -> ssl.SSLContext:
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    ctx.minimum_version = ssl.TLSVersion.TLSv1_2
    ctx.set_alpn_protocols(["http/1.1"])
    tls.load_cert_chain(ctx, chain, key)
    return ctx


def load_serving_cert(cert_path: str, key_path: str) -> tuple[list[x509.Certificate], PrivateKeyTypes]:
    try:
        with open(cert_path, "rb") as f:
            chain = x509.load_pem_x509_certificates(f.read())
    except (OSError, ValueError) as exc:
        raise EndpointError(f"unable to load serving certificate {cert_path}: {exc}") from None
    try:
        with open(key_path, "rb") as f:
            key = load_pem_private_key(f.read(), None)
    except (OSError, ValueError, TypeError) as exc:
        raise EndpointError(f"unable to load serving certificate key {key_path}: {exc}") from None
    return chain, key


class BundleEndpoint:
    """Serves ``get_bundle()``'s bundle; ``set_svid`` swaps the https_spiffe certificate."""

    def __init__(self, config: BundleEndpointConfig, get_bundle: BundleGetter) -> None:
        if config.profile == "https_web" and config.serving_cert_file is None:  # i.e. ACME
            raise EndpointError("ACME is not supported by spire_py; configure the bundle endpoint with "
                                "profile \"https_web\" { serving_cert_file { ... } } or \"https_spiffe\"")
        self.config = config
        self._get_bundle = get_bundle
        self._current: Optional[ssl.SSLContext] = None
        self._listener = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        self._listener.minimum_version = ssl.TLSVersion.TLSv1_2
        self._listener.sni_callback = self._pick
        self._server: Optional[asyncio.base_events.Server] = None
        self._slots = asyncio.Semaphore(MAX_CONNECTIONS)
        self._sync_task: Optional[asyncio.Task[None]] = None
        self._cert_stamp: tuple[float, float] = (0.0, 0.0)

    @property
    def port(self) -> int:
        assert self._server is not None
        return int(self._server.sockets[0].getsockname()[1])

    def _pick(self, sslobj: ssl.SSLObject, _name: Optional[str], _ctx: ssl.SSLContext) -> None:
        if self._current is not None:
            sslobj.context = self._current

    def set_svid(self, chain: list[x509.Certificate], key: PrivateKeyTypes) -> None:
        """https_spiffe: present this X.509-SVID on new connections."""
        if self.config.profile == "https_spiffe":
            self._current = serving_context(chain, key)

    def _load_files(self) -> bool:
        scf = self.config.serving_cert_file
        assert scf is not None
        stamp = (os.stat(scf.cert_file_path).st_mtime, os.stat(scf.key_file_path).st_mtime)
        if stamp == self._cert_stamp:
            return False
        chain, key = load_serving_cert(scf.cert_file_path, scf.key_file_path)
        self._current = serving_context(chain, key)
        self._cert_stamp = stamp
        return True

    async def _sync_files(self, interval: float) -> None:
        while True:
            await asyncio.sleep(interval)
            try:
                if await asyncio.to_thread(self._load_files):
                    _log.info("Serving certificate reloaded")
            except (OSError, EndpointError) as exc:  # keep the previous certificate
                _log.error("Unable to reload serving certificate", extra=log.fields(error=str(exc)))

    async def start(self) -> None:
        if self.config.profile == "https_web":
            if self.config.serving_cert_file is None:
                raise EndpointError("https_web bundle endpoint needs serving_cert_file")
            try:
                self._load_files()
            except OSError as exc:
                raise EndpointError(f"unable to load serving certificate: {exc}") from None
            self._sync_task = asyncio.create_task(self._sync_files(self.config.serving_cert_file.file_sync_interval))
        elif self._current is None:
            raise EndpointError("https_spiffe bundle endpoint started without the server's X.509-SVID")
        # The listener's own context only starts handshakes; _pick swaps in the current one.
        self._server = await asyncio.start_server(
            self._handle, self.config.address, self.config.port, ssl=self._listener, reuse_address=True,
            ssl_handshake_timeout=HEAD_TIMEOUT, limit=MAX_HEAD_BYTES)
        _log.info("Serving bundle endpoint", extra=log.fields(
            address=f"{self.config.address}:{self.port}", profile=self.config.profile))

    async def close(self) -> None:
        if self._sync_task is not None:
            self._sync_task.cancel()
        if self._server is not None:
            self._server.close()
            await self._server.wait_closed()

    async def _handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        if self._slots.locked():
            writer.close()
            return
        async with self._slots:
            try:
                status, body, ctype = await asyncio.wait_for(self._respond(reader), HEAD_TIMEOUT)
                writer.write(
                    f"HTTP/1.1 {status}\r\nContent-Type: {ctype}\r\nContent-Length: {len(body)}\r\n"
                    "Connection: close\r\n\r\n".encode("ascii") + body)
                await asyncio.wait_for(writer.drain(), HEAD_TIMEOUT)
            except (asyncio.TimeoutError, ConnectionError, ssl.SSLError, ValueError):
                pass
            finally:
                writer.close()

    async def _respond(self, reader: asyncio.StreamReader) -> tuple[str, bytes, str]:
        try:
            head = await reader.readuntil(b"\r\n\r\n")
        except asyncio.LimitOverrunError:
            return "431 Request Header Fields Too Large", b"", "text/plain; charset=utf-8"
        except asyncio.IncompleteReadError:
            raise ConnectionError("request head cut short") from None
        parts = head.split(b"\r\n", 1)[0].decode("latin-1").split()
        if len(parts) != 3 or not parts[2].startswith("HTTP/1."):
            return "400 Bad Request", b"400 Bad Request", "text/plain; charset=utf-8"
        method, target = parts[0], parts[1]
        if method != "GET":
            return "405 Method Not Allowed", b"405 method not allowed\n", "text/plain; charset=utf-8"
        if target.split("?", 1)[0] != "/":
            return "404 Not Found", b"404 page not found\n", "text/plain; charset=utf-8"
        try:
            bundle = await self._get_bundle()
        except Exception as exc:
            _log.error("Unable to retrieve local bundle", extra=log.fields(error=str(exc)))
            return "500 Internal Server Error", b"500 unable to retrieve local bundle\n", "text/plain; charset=utf-8"
        bundle.refresh_hint = int(self.config.refresh_hint)
        return "200 OK", bundle.to_json(), "application/json"
