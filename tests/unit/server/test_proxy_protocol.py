"""proxy_protocol_trusted_cidrs: PROXY v1/v2 headers from trusted sources give the client address
the rate limits and the audit log see; a header from anywhere else closes the connection; a
connection without one is served as usual (SPIRE's USE/REJECT policy)."""

from __future__ import annotations

import asyncio
import ipaddress
import logging
import socket
import ssl
import struct

import pytest
from grpclib.client import Channel

from spire_py.common import tls
from spire_py.proto.spire.api.server.bundle.v1 import bundle_grpc, bundle_pb2
from spire_py.server.proxy_protocol import ProxyHeaderError, TrustedSources, read_header

from tests.unit.helpers.inprocess_server import running_server

V2_SIG = b"\r\n\r\n\x00\r\nQUIT\n"
CLIENT_HELLO = b"\x16\x03\x01\x02\x00\x01\x00\x01\xfc\x03\x03"


def v2_tcp4(src: str, sport: int, command: int = 0x21) -> bytes:
    body = ipaddress.IPv4Address(src).packed + ipaddress.IPv4Address("10.0.0.1").packed + struct.pack("!HH", sport, 8081)
    return V2_SIG + bytes([command, 0x11]) + struct.pack("!H", len(body)) + body


async def header_of(chunks: list[bytes], trusted: bool = True) -> tuple[object, bytes]:
    """What read_header makes of ``chunks`` sent one by one, and what is left on the socket."""
    a, b = socket.socketpair()
    a.setblocking(False)
    loop = asyncio.get_running_loop()
    try:
        async def send() -> None:
            for chunk in chunks:
                b.sendall(chunk)
                await asyncio.sleep(0.01)
        sender = asyncio.ensure_future(send())
        try:
            got: object = await asyncio.wait_for(read_header(loop, a, trusted), 10)
        except ProxyHeaderError as exc:
            got = exc
        await sender
        b.shutdown(socket.SHUT_WR)
        rest = b""
        while chunk := await loop.sock_recv(a, 4096):
            rest += chunk
        return got, rest
    finally:
        a.close()
        b.close()


async def test_v1_and_v2_headers_name_the_client_and_are_consumed_exactly():
    assert await header_of([b"PROXY TCP4 203.0.113.7 10.0.0.1 5555 8081\r\n" + CLIENT_HELLO]) == (
        ("203.0.113.7", 5555), CLIENT_HELLO)
    assert await header_of([b"PROXY TCP6 2001:db8::7 2001:db8::1 6666 8081\r\n", CLIENT_HELLO]) == (
        ("2001:db8::7", 6666), CLIENT_HELLO)
    assert await header_of([v2_tcp4("198.51.100.9", 4242) + CLIENT_HELLO]) == (("198.51.100.9", 4242), CLIENT_HELLO)
    whole = v2_tcp4("198.51.100.9", 4242)
    assert await header_of([whole[:5], whole[5:14], whole[14:], CLIENT_HELLO]) == (
        ("198.51.100.9", 4242), CLIENT_HELLO)  # split anywhere


async def test_no_header_local_and_unknown_keep_the_socket_address():
    assert await header_of([CLIENT_HELLO]) == (None, CLIENT_HELLO)  # nothing consumed
    assert await header_of([CLIENT_HELLO], trusted=False) == (None, CLIENT_HELLO)
    assert await header_of([b"PROXY UNKNOWN\r\n" + CLIENT_HELLO]) == (None, CLIENT_HELLO)
    assert (await header_of([v2_tcp4("198.51.100.9", 1, command=0x20) + CLIENT_HELLO]))[0] is None  # LOCAL


async def test_a_header_from_an_untrusted_source_or_a_malformed_one_is_refused():
    for chunks, trusted, words in (
            ([b"PROXY TCP4 203.0.113.7 10.0.0.1 5555 8081\r\n"], False, "outside proxy_protocol_trusted_cidrs"),
            ([v2_tcp4("198.51.100.9", 1)], False, "outside proxy_protocol_trusted_cidrs"),
            ([b"PROXY TCP4 not-an-ip 10.0.0.1 5555 8081\r\n"], True, "invalid PROXY header"),
            ([b"PROXY " + b"x" * 120], True, "without its CRLF")):
        got, _ = await header_of(chunks, trusted)
        assert isinstance(got, ProxyHeaderError) and words in str(got), got


def test_trusted_sources_are_cidrs_and_ipv4_mapped_addresses_count():
    sources = TrustedSources(["10.0.0.0/8", "fd00::/8"])
    assert sources.trusts("10.1.2.3") and sources.trusts("::ffff:10.1.2.3") and sources.trusts("fd00::1")
    assert not sources.trusts("192.168.0.1") and not sources.trusts("not-an-address")


class ProxiedChannel(Channel):
    """A TLS channel to the server whose connection starts with ``header`` (a load balancer's)."""

    def __init__(self, port: int, header: bytes) -> None:
        super().__init__("127.0.0.1", port, ssl=tls.client_context([], None, None, insecure=True))
        self._header = header

    async def _create_connection(self):  # type: ignore[no-untyped-def]
        sock = socket.create_connection(("127.0.0.1", self._port))
        sock.sendall(self._header)
        sock.setblocking(False)
        _, protocol = await self._loop.create_connection(self._protocol_factory, sock=sock, ssl=self._ssl,
                                                         server_hostname="")
        return protocol


async def test_the_server_sees_the_proxied_client_and_refuses_untrusted_headers(tmp_path, caplog):
    caplog.set_level(logging.INFO, logger="spire_py")
    extra = 'proxy_protocol_trusted_cidrs = ["127.0.0.0/8"]\n    audit_log_enabled = true'
    async with running_server(tmp_path, extra) as srv:
        for header in (b"PROXY TCP4 203.0.113.7 10.0.0.1 5555 8081\r\n", b""):
            ch = ProxiedChannel(srv.port, header)
            try:
                resp = await bundle_grpc.BundleStub(ch).GetBundle(bundle_pb2.GetBundleRequest(), timeout=30)
                assert resp.trust_domain == "example.org"
            finally:
                ch.close()
        addrs = [r.fields.get("caller_addr") for r in caplog.records
                 if getattr(r, "fields", {}).get("method", "").endswith("/GetBundle")]
        assert addrs == ["203.0.113.7", "127.0.0.1"]

    untrusted = 'proxy_protocol_trusted_cidrs = ["10.0.0.0/8"]'
    (tmp_path / "b").mkdir()
    async with running_server(tmp_path / "b", untrusted) as srv:
        ch = ProxiedChannel(srv.port, b"PROXY TCP4 203.0.113.7 10.0.0.1 5555 8081\r\n")
        try:
            with pytest.raises((OSError, ssl.SSLError, ConnectionError)):  # closed before TLS
                await bundle_grpc.BundleStub(ch).GetBundle(bundle_pb2.GetBundleRequest(), timeout=30)
        finally:
            ch.close()
        plain = Channel("127.0.0.1", srv.port, ssl=tls.client_context([], None, None, insecure=True))
        try:  # no header from an untrusted source: served as usual
            assert (await bundle_grpc.BundleStub(plain).GetBundle(bundle_pb2.GetBundleRequest(), timeout=30)).trust_domain
        finally:
            plain.close()
