"""The Prometheus endpoint over TLS, as SPIRE's ``Prometheus { tls { ... } }`` serves it.

- ``cert_file``/``key_file``: that certificate; ``client_ca_file``: clients must present one
  that CA signed (mTLS).
- ``use_spire_svid``: the daemon's own X.509-SVID, the newest at each handshake (it rotates).
- ``authorized_spiffe_ids``: clients must present an X.509-SVID that chains to the trust
  domain's bundle (the newest at each handshake) with one of these IDs. Only IDs of the
  daemon's own trust domain: the bundle of another is not at hand where a scrape arrives.

The handshake runs in the connection's own thread with a time limit (prometheus-client's
HTTPS server shakes hands in its accept loop, where one silent client stalls every scrape).
Contexts are cached and rebuilt only when the SVID or the bundle changed.
"""

from __future__ import annotations

import socket
import socketserver
import ssl
import threading
from typing import Any, Callable, Optional
from wsgiref.simple_server import WSGIRequestHandler, WSGIServer

from cryptography import x509
from cryptography.hazmat.primitives import serialization

from .. import log
from .errors import TelemetryError
from ..tls import PeerAuthError, load_cert_chain, spiffe_id_of

_log = log.get("telemetry")

HANDSHAKE_TIMEOUT = 10.0
READ_TIMEOUT = 30.0

# The daemon's current X.509-SVID (chain, private key), None before it has one.
SvidSource = Callable[[], Optional[tuple[list[x509.Certificate], Any]]]
# The daemon's trust domain's X.509 authorities.
BundleSource = Callable[[], list[x509.Certificate]]


class EndpointTLS:
    """What a handshake needs: the context (rebuilt on change) and who may scrape."""

    def __init__(self, cfg: Any) -> None:
        """``cfg``: common.config.sections.PrometheusTLSConfig."""
        self.cfg = cfg
        self.authorized = frozenset(cfg.authorized_spiffe_ids)
        self.svid: Optional[SvidSource] = None
        self.bundle: Optional[BundleSource] = None
        self._lock = threading.Lock()
        self._ctx: Optional[ssl.SSLContext] = None
        self._made_from: Any = None

    def check(self, trust_domain: str) -> None:
        """At start: every authorized ID is in ``trust_domain``; the daemon can serve what is asked."""
        prefix = f"spiffe://{trust_domain}/"
        foreign = sorted(i for i in self.authorized if not i.startswith(prefix))
        if foreign:
            raise TelemetryError(f"telemetry: Prometheus authorized_spiffe_ids must be in trust domain "
                               f"{trust_domain!r}: {', '.join(foreign)}")
        if self.cfg.use_spire_svid and self.svid is None:
            raise TelemetryError("telemetry: failed to create TLS config for Prometheus: use_spire_svid requires "
                               "access to the current SPIRE SVID")
        if self.authorized and self.bundle is None:
            raise TelemetryError("telemetry: failed to create TLS config for Prometheus: authorized_spiffe_ids "
                               "requires access to SPIRE trust bundles")
        if not self.cfg.use_spire_svid:
            try:
                self.context()  # missing or unreadable files stop start-up, as SPIRE's
            except (OSError, ValueError) as exc:
                files = ", ".join(f"{k} {getattr(self.cfg, k)!r}" for k in ("cert_file", "key_file", "client_ca_file")
                                  if getattr(self.cfg, k))
                raise TelemetryError(f"telemetry: failed to create TLS config for Prometheus ({files}): {exc}") from None

    def context(self) -> ssl.SSLContext:
        svid = self.svid() if self.cfg.use_spire_svid and self.svid is not None else None
        if self.cfg.use_spire_svid and svid is None:
            raise ssl.SSLError("the SPIRE SVID is not available yet")
        roots = self.bundle() if self.authorized and self.bundle is not None else []
        made_from = (tuple(svid[0]) if svid else None, tuple(roots))
        with self._lock:
            if self._ctx is None or made_from != self._made_from:
                self._ctx, self._made_from = self._build(svid, roots), made_from
            return self._ctx

    def _build(self, svid: Optional[tuple[list[x509.Certificate], Any]], roots: list[x509.Certificate]) -> ssl.SSLContext:
        ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        ctx.minimum_version = ssl.TLSVersion.TLSv1_2
        ctx.options |= ssl.OP_NO_TICKET  # SPIRE's SessionTicketsDisabled
        if svid is not None:
            load_cert_chain(ctx, svid[0], svid[1])
        else:
            ctx.load_cert_chain(self.cfg.cert_file, self.cfg.key_file)
        if self.cfg.client_ca_file:
            ctx.load_verify_locations(cafile=self.cfg.client_ca_file)
            ctx.verify_mode = ssl.CERT_REQUIRED
        elif self.authorized:
            if not roots:
                raise ssl.SSLError("no trust bundle to verify clients with")
            ctx.load_verify_locations(cadata="".join(
                r.public_bytes(serialization.Encoding.PEM).decode() for r in roots))
            ctx.verify_mode = ssl.CERT_REQUIRED
        return ctx

    def allows(self, conn: ssl.SSLSocket) -> bool:
        """With authorized_spiffe_ids: the verified client SVID's ID is one of them."""
        if not self.authorized:
            return True
        der = conn.getpeercert(binary_form=True)
        if not der:
            return False
        try:
            peer = str(spiffe_id_of(x509.load_der_x509_certificate(der)))
        except (PeerAuthError, ValueError):
            return False
        if peer in self.authorized:
            return True
        _log.debug("Prometheus scrape refused: unauthorized SPIFFE ID", extra=log.fields(spiffe_id=peer))
        return False


class _Quiet(WSGIRequestHandler):
    def log_message(self, format: str, *args: Any) -> None:
        pass


class TLSServer(socketserver.ThreadingMixIn, WSGIServer):
    """wsgiref's server, one thread per connection, each connection's TLS handshake in its thread."""

    daemon_threads = True

    def __init__(self, address: tuple[str, int], app: Any, tls: EndpointTLS) -> None:
        self.address_family = socket.getaddrinfo(address[0], address[1], type=socket.SOCK_STREAM)[0][0]
        self.tls = tls
        super().__init__(address, _Quiet)
        self.set_app(app)

    def finish_request(self, request: Any, client_address: Any) -> None:
        request.settimeout(HANDSHAKE_TIMEOUT)
        try:
            conn = self.tls.context().wrap_socket(request, server_side=True)
        except (OSError, ValueError) as exc:  # ssl.SSLError is an OSError: a refused or failed handshake
            _log.debug("Prometheus TLS handshake failed", extra=log.fields(error=str(exc)))
            return
        try:
            if self.tls.allows(conn):
                conn.settimeout(READ_TIMEOUT)
                super().finish_request(conn, client_address)
        finally:
            conn.close()

    def handle_error(self, request: Any, client_address: Any) -> None:
        _log.debug("Prometheus scrape failed", extra=log.fields(address=str(client_address)))


def serve(host: str, port: int, app: Any, tls: EndpointTLS) -> tuple[TLSServer, threading.Thread]:
    server = TLSServer((host, port), app, tls)
    thread = threading.Thread(target=server.serve_forever, name="prometheus-tls", daemon=True)
    thread.start()
    return server, thread
