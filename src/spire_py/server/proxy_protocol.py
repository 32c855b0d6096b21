"""``proxy_protocol_trusted_cidrs``: the PROXY protocol (v1 and v2, haproxy's spec) on the
server's TCP listener, so that behind a load balancer the per-IP rate limits and the audit log
see the real client address.

As SPIRE's listener (go-proxyproto, USE for trusted sources, REJECT for the others): a
connection from a trusted CIDR may start with a PROXY header, whose source address then stands
for the peer's; a connection from anywhere else that sends one is closed; a connection without
a header is served as usual. The header is read off the socket (peeked, then consumed to its
exact length) before the TLS handshake starts; the parsing is the proxy-protocol library's.
"""

from __future__ import annotations

import asyncio
import ipaddress
import socket
from typing import Any, Callable, Iterable, Optional

from proxyprotocol.v1 import ProxyProtocolV1
from proxyprotocol.v2 import ProxyProtocolV2

from ..common import log
from ..common.errors import SpireError
from ..common.rpc import listen_backlog

_log = log.get("endpoints")

V1_SIGNATURE = b"PROXY "
V2_SIGNATURE = b"\r\n\r\n\x00\r\nQUIT\n"
V1_MAX = 107  # the longest v1 line, CRLF included
HEADER_TIMEOUT = 10.0  # go-proxyproto's default ReadHeaderTimeout
MAX_PENDING = 1024  # connections still in header or handshake; more are closed at once
Address = tuple[str, int]


class ProxyHeaderError(SpireError):
    """The connection's PROXY header is refused or malformed; the connection is closed."""


class TrustedSources:
    def __init__(self, cidrs: Iterable[str]) -> None:
        self.networks = [ipaddress.ip_network(c, strict=False) for c in cidrs]

    def trusts(self, host: str) -> bool:
        try:
            ip = ipaddress.ip_address(host.split("%", 1)[0])
        except ValueError:
            return False
        if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped is not None:
            ip = ip.ipv4_mapped
        return any(ip in n for n in self.networks)


async def _readable(loop: asyncio.AbstractEventLoop, sock: socket.socket) -> None:
    fut: asyncio.Future[None] = loop.create_future()
    fd = sock.fileno()

    def ready() -> None:
        if not fut.done():
            fut.set_result(None)

    loop.add_reader(fd, ready)
    try:
        await fut
    finally:
        loop.remove_reader(fd)


async def _peek(loop: asyncio.AbstractEventLoop, sock: socket.socket, size: int,
                enough: Callable[[bytes], bool]) -> bytes:
    """Up to ``size`` bytes at the head of the socket without consuming them, once ``enough``
    says so (or the peer closed)."""
    last = b""
    while True:
        try:
            data = sock.recv(size, socket.MSG_PEEK)
        except BlockingIOError:
            await _readable(loop, sock)
            continue
        if not data or len(data) >= size or enough(data):
            return data
        if data == last:  # nothing new yet: wait for more
            await _readable(loop, sock)
        last = data


async def _consume(loop: asyncio.AbstractEventLoop, sock: socket.socket, size: int) -> bytes:
    out = b""
    while len(out) < size:
        chunk = await loop.sock_recv(sock, size - len(out))
        if not chunk:
            raise ProxyHeaderError("connection closed inside the PROXY header")
        out += chunk
    return out


def _signature(data: bytes) -> Optional[bytes]:
    """The PROXY signature ``data`` starts with; b"" while undecided; None for no header."""
    for sig in (V1_SIGNATURE, V2_SIGNATURE):
        if data.startswith(sig):
            return sig
        if sig.startswith(data[:len(sig)]) and len(data) < len(sig):
            return b""
    return None


async def read_header(loop: asyncio.AbstractEventLoop, sock: socket.socket, trusted: bool) -> Optional[Address]:
    """The client address a PROXY header names (None: no header, or LOCAL/UNKNOWN), the header
    consumed; ProxyHeaderError when refused or malformed."""
    head = await _peek(loop, sock, 16, lambda b: _signature(b) != b"")
    sig = _signature(head)
    if not sig:
        return None  # TLS (or the peer closed): served as it is
    if not trusted:
        raise ProxyHeaderError("PROXY header from a source outside proxy_protocol_trusted_cidrs")
    try:
        if sig == V1_SIGNATURE:
            line = await _peek(loop, sock, V1_MAX, lambda b: b"\r\n" in b)
            end = line.find(b"\r\n")
            if end < 0:
                raise ProxyHeaderError("PROXY v1 header without its CRLF")
            result = ProxyProtocolV1().unpack(await _consume(loop, sock, end + 2))
        else:
            if len(head) < 16:
                head = await _peek(loop, sock, 16, lambda b: len(b) >= 16)
            if len(head) < 16:
                raise ProxyHeaderError("truncated PROXY v2 header")
            header = await _consume(loop, sock, 16 + int.from_bytes(head[14:16], "big"))
            result = ProxyProtocolV2().unpack(header)
    except ProxyHeaderError:
        raise
    except Exception as exc:  # the library's syntax errors
        raise ProxyHeaderError(f"invalid PROXY header: {exc}") from None
    if not result.proxied or not isinstance(result.source, tuple):
        return None  # LOCAL (a health check by the proxy itself) or UNKNOWN: the socket's address
    host, port = result.source
    return str(host), int(port)


class _Peer:
    """The transport as the gRPC protocol sees it, with the PROXY header's source as peername."""

    def __init__(self, transport: Any, peername: Address) -> None:
        self._transport = transport
        self._peername = peername

    def get_extra_info(self, name: str, default: Any = None) -> Any:
        if name == "peername":
            return self._peername
        return self._transport.get_extra_info(name, default)

    def __getattr__(self, name: str) -> Any:
        return getattr(self._transport, name)


class ProxyProtocolListener:
    """Accepts on ``sock``, reads any PROXY header, then hands the connection to ``factory``'s
    protocol over TLS. Stands in for the asyncio server grpclib keeps (close, wait_closed)."""

    def __init__(self, sock: socket.socket, factory: Callable[[], Any], ssl_context: Any,
                 sources: TrustedSources) -> None:
        self.sock = sock
        self.factory = factory
        self.ssl_context = ssl_context
        self.sources = sources
        self._pending: set[asyncio.Task[None]] = set()
        self._task: Optional[asyncio.Task[None]] = None

    def start(self) -> None:
        self._task = asyncio.get_running_loop().create_task(self._accept_loop())

    async def _accept_loop(self) -> None:
        loop = asyncio.get_running_loop()
        while True:
            conn, addr = await loop.sock_accept(self.sock)
            if len(self._pending) >= MAX_PENDING:
                conn.close()
                continue
            conn.setblocking(False)
            task = loop.create_task(self._serve(conn, (str(addr[0]), int(addr[1]))))
            self._pending.add(task)
            task.add_done_callback(self._pending.discard)

    async def _serve(self, conn: socket.socket, addr: Address) -> None:
        loop = asyncio.get_running_loop()
        try:
            async with asyncio.timeout(HEADER_TIMEOUT):
                source = await read_header(loop, conn, self.sources.trusts(addr[0]))
        except (ProxyHeaderError, TimeoutError, OSError) as exc:
            _log.debug("Connection closed before TLS", extra=log.fields(address=addr[0], error=str(exc) or "timeout"))
            conn.close()
            return
        peer = source or addr

        def protocol() -> Any:
            proto = self.factory()
            made = proto.connection_made
            proto.connection_made = lambda transport: made(_Peer(transport, peer))
            return proto

        try:
            await loop.connect_accepted_socket(protocol, conn, ssl=self.ssl_context,
                                               ssl_handshake_timeout=HEADER_TIMEOUT)
        except (OSError, TimeoutError, ConnectionError) as exc:
            _log.debug("TLS handshake failed", extra=log.fields(address=peer[0], error=str(exc) or "timeout"))
            conn.close()

    def close(self) -> None:
        if self._task is not None:
            self._task.cancel()
        for task in list(self._pending):
            task.cancel()
        self.sock.close()

    async def wait_closed(self) -> None:
        tasks = [t for t in (self._task, *self._pending) if t is not None]
        if tasks:
            await asyncio.gather(*tasks, return_exceptions=True)


async def start_server(server: Any, host: str, port: int, ssl_context: Any, cidrs: Iterable[str]) -> None:
    """Start grpclib ``server`` on host:port behind the PROXY protocol listener (the backlog of
    every other listener)."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.create_server((host, port), family=family, backlog=listen_backlog(), reuse_port=False)
    sock.setblocking(False)
    listener = ProxyProtocolListener(sock, server._protocol_factory, ssl_context, TrustedSources(cidrs))
    listener.start()
    server._server = listener
    server._server_closed_fut = asyncio.get_running_loop().create_future()
    _log.info("PROXY protocol enabled on TCP listener", extra=log.fields(trusted_cidrs=",".join(cidrs)))
