"""TLS with SPIFFE semantics on top of the standard ``ssl`` module.

Peers are authenticated by SPIFFE ID chained to a trust bundle, not by host name:
OpenSSL verifies the chain against the bundle roots, then the caller checks the
URI SAN of the verified leaf. Contexts are swapped on rotation through the
server's SNI callback, so new handshakes use the newest SVID and bundle while
live connections keep theirs.
"""

from __future__ import annotations

import os
import socket
import ssl
import struct
import tempfile
from dataclasses import dataclass
from typing import Any, Callable, Iterable, Optional

from cryptography import x509
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.types import PrivateKeyTypes
from grpclib.client import Channel
from grpclib.protocol import H2Protocol

from . import h2writes
from .errors import SpireError
from .spiffeid import SpiffeId, SpiffeIdError

ALPN = ["h2"]


class PeerAuthError(SpireError, ConnectionError):
    """The TLS peer is not the SPIFFE ID we expected (or has none)."""


def _pem_chain(chain: Iterable[x509.Certificate]) -> bytes:
    return b"".join(c.public_bytes(serialization.Encoding.PEM) for c in chain)


def load_cert_chain(ctx: ssl.SSLContext, chain: list[x509.Certificate], key: PrivateKeyTypes) -> None:
    # ssl loads certificates and keys only from paths. On Linux they go through anonymous
    # memory files (memfd, read back through /proc/self/fd): the private key never touches a
    # file system, and a read-only root file system with no writable /tmp still works.
    key_pem = key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    )
    if hasattr(os, "memfd_create") and os.path.isdir("/proc/self/fd"):
        fds = [os.memfd_create("spire-tls-chain", os.MFD_CLOEXEC), os.memfd_create("spire-tls-key", os.MFD_CLOEXEC)]
        try:
            for fd, data in zip(fds, (_pem_chain(chain), key_pem)):
                view = memoryview(data)
                while view:
                    view = view[os.write(fd, view):]
            ctx.load_cert_chain(f"/proc/self/fd/{fds[0]}", f"/proc/self/fd/{fds[1]}")
        finally:
            for fd in fds:
                os.close(fd)
        return
    # Elsewhere: a private temp dir that lives only for the call.
    with tempfile.TemporaryDirectory(prefix="spire-tls-") as d:
        os.chmod(d, 0o700)
        cert_path, key_path = os.path.join(d, "svid.pem"), os.path.join(d, "key.pem")
        fd = os.open(key_path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(fd, "wb") as f:
            f.write(key_pem)
        with open(cert_path, "wb") as f:
            f.write(_pem_chain(chain))
        ctx.load_cert_chain(cert_path, key_path)


def _base(ctx: ssl.SSLContext, roots: list[x509.Certificate]) -> ssl.SSLContext:
    ctx.minimum_version = ssl.TLSVersion.TLSv1_2
    ctx.set_alpn_protocols(ALPN)
    if roots:
        ctx.load_verify_locations(cadata=_pem_chain(roots).decode())
    return ctx


def server_context(
    chain: list[x509.Certificate], key: PrivateKeyTypes, roots: list[x509.Certificate]
) -> ssl.SSLContext:
    """Server side: present ``chain``; verify a client certificate against ``roots`` if one is sent.

    Client certificates are optional because an agent attests before it has an SVID.
    """
    ctx = _base(ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER), roots)
    ctx.verify_mode = ssl.CERT_OPTIONAL if roots else ssl.CERT_NONE
    load_cert_chain(ctx, chain, key)
    return ctx


def client_context(
    roots: list[x509.Certificate],
    chain: Optional[list[x509.Certificate]] = None,
    key: Optional[PrivateKeyTypes] = None,
    *,
    insecure: bool = False,
) -> ssl.SSLContext:
    """Client side: verify the server chain against ``roots`` (no host name check: SPIFFE ID check follows).

    ``insecure`` skips chain verification: only for SPIRE's insecure_bootstrap.
    """
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    ctx.check_hostname = False
    if insecure:
        ctx.verify_mode = ssl.CERT_NONE
        _base(ctx, [])
    else:
        ctx.verify_mode = ssl.CERT_REQUIRED
        _base(ctx, roots)
    if chain and key is not None:
        load_cert_chain(ctx, chain, key)
    return ctx


class RotatingServerContext:
    """Holds the server's current SSLContext; the listening context delegates through SNI."""

    def __init__(self, ctx: ssl.SSLContext) -> None:
        self.current = ctx
        self.listener = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        self.listener.minimum_version = ssl.TLSVersion.TLSv1_2
        self.listener.set_alpn_protocols(ALPN)
        # OpenSSL keeps the verify mode of the context the connection started with, so the
        # listener asks for a client certificate; verification uses the swapped-in store.
        self.listener.verify_mode = ssl.CERT_OPTIONAL
        self.listener.sni_callback = self._pick

    def _pick(self, sslobj: ssl.SSLObject, _name: Optional[str], _ctx: ssl.SSLContext) -> None:
        sslobj.context = self.current

    def update(self, ctx: ssl.SSLContext) -> None:
        self.current = ctx


def peer_leaf(transport: Any) -> Optional[x509.Certificate]:
    """The verified peer leaf certificate of a TLS transport, or None."""
    sslobj = transport.get_extra_info("ssl_object")
    if sslobj is None:
        return None
    der = sslobj.getpeercert(binary_form=True)
    return x509.load_der_x509_certificate(der) if der else None


def spiffe_id_of(cert: x509.Certificate) -> SpiffeId:
    """The one URI SAN of an SVID, as a SpiffeId; anything else is refused."""
    try:
        san = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    except x509.ExtensionNotFound:
        raise PeerAuthError("certificate has no URI SAN") from None
    uris = san.get_values_for_type(x509.UniformResourceIdentifier)
    if len(uris) != 1:
        raise PeerAuthError(f"certificate must have exactly one URI SAN, has {len(uris)}")
    try:
        return SpiffeId.parse(uris[0])
    except SpiffeIdError as exc:
        raise PeerAuthError(f"certificate URI SAN is not a SPIFFE ID: {exc}") from None


# asyncio gives every TLS connection a read buffer of SSLProtocol.max_size (256 KiB), most of
# what each connected agent costs the server; a TLS record holds at most 16 KiB, so a smaller
# buffer only means more reads for large messages.
TLS_READ_BUFFER = 32 * 1024


def small_tls_read_buffers() -> None:
    """Make this process's asyncio TLS connections allocate TLS_READ_BUFFER, not 256 KiB."""
    from asyncio import sslproto

    if getattr(sslproto.SSLProtocol, "max_size", 0) > TLS_READ_BUFFER:
        sslproto.SSLProtocol.max_size = TLS_READ_BUFFER


def peer_ucred(transport: Any) -> tuple[int, int, int]:
    """(pid, uid, gid) of the process on the other end of a Unix socket (SO_PEERCRED)."""
    sock: socket.socket = transport.get_extra_info("socket")
    creds = sock.getsockopt(socket.SOL_SOCKET, socket.SO_PEERCRED, struct.calcsize("3i"))
    pid, uid, gid = struct.unpack("3i", creds)
    return pid, uid, gid


class SpiffeChannel(Channel):
    """A grpclib Channel that refuses a server whose verified SVID is not ``expected``.

    ``expected`` may be a callable deciding on the peer's SpiffeId (for "any member of").
    """

    def __init__(
        self,
        host: str,
        port: int,
        *,
        ssl_context: ssl.SSLContext,
        expected: SpiffeId | Callable[[SpiffeId], bool] | None,
        **kwargs: Any,
    ) -> None:
        super().__init__(host, port, ssl=ssl_context, **kwargs)
        self._expected = expected

    def _protocol_factory(self) -> H2Protocol:
        return h2writes.coalescing(super()._protocol_factory())

    async def _create_connection(self) -> H2Protocol:
        protocol = await super()._create_connection()
        if self._expected is None:
            return protocol
        transport = protocol.connection._transport
        try:
            leaf = peer_leaf(transport)
            if leaf is None:
                raise PeerAuthError("server presented no certificate")
            got = spiffe_id_of(leaf)
            ok = self._expected(got) if callable(self._expected) else got == self._expected
            if not ok:
                raise PeerAuthError(f'unexpected server ID "{got}"')
        except PeerAuthError:
            transport.close()
            raise
        return protocol
