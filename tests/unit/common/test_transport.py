"""The transport risks retired first: caller credentials on the Unix socket, and
SPIFFE-ID-based mutual TLS with rotation, both on grpclib."""

from __future__ import annotations

import asyncio
import datetime as dt
import os
import ssl

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID
from google.protobuf import wrappers_pb2
from grpclib.client import Channel
from grpclib.const import Cardinality, Handler
from grpclib.server import Server

from spire_py.common import tls
from spire_py.common.spiffeid import SpiffeId


class Echo:
    """A one-method service that answers with what it learnt about the caller."""

    def __init__(self, inspect):
        self.inspect = inspect

    async def call(self, stream):
        await stream.recv_message()
        await stream.send_message(wrappers_pb2.StringValue(value=self.inspect(stream)))

    def __mapping__(self):
        return {
            "/test.Echo/Call": Handler(
                self.call, Cardinality.UNARY_UNARY, wrappers_pb2.StringValue, wrappers_pb2.StringValue
            )
        }


async def _call(channel):
    return await channel.request(
        "/test.Echo/Call", Cardinality.UNARY_UNARY, wrappers_pb2.StringValue, wrappers_pb2.StringValue
    ).__aenter__()


async def call(channel) -> str:
    async with channel.request(
        "/test.Echo/Call", Cardinality.UNARY_UNARY, wrappers_pb2.StringValue, wrappers_pb2.StringValue
    ) as stream:
        await stream.send_message(wrappers_pb2.StringValue(value="hi"), end=True)
        reply = await stream.recv_message()
        await stream.recv_trailing_metadata()
        return reply.value


async def test_unix_socket_handler_sees_caller_pid_uid_gid(tmp_path):
    path = str(tmp_path / "api.sock")
    server = Server([Echo(lambda s: "%d %d %d" % tls.peer_ucred(s.peer._transport))])
    await server.start(path=path)
    try:
        ch = Channel(path=path)
        assert await call(ch) == f"{os.getpid()} {os.getuid()} {os.getgid()}"
        ch.close()
    finally:
        server.close()
        await server.wait_closed()


# --- a tiny PKI made here, independent of the server CA code under test elsewhere ---

def _name(cn):
    return x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, cn)])


def make_ca(cn="ca"):
    key = ec.generate_private_key(ec.SECP256R1())
    now = dt.datetime.now(dt.timezone.utc)
    cert = (
        x509.CertificateBuilder()
        .subject_name(_name(cn)).issuer_name(_name(cn)).public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(minutes=1)).not_valid_after(now + dt.timedelta(hours=1))
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .add_extension(x509.KeyUsage(False, False, False, False, False, True, True, False, False), critical=True)
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), critical=False)
        .sign(key, hashes.SHA256())
    )
    return cert, key


def make_svid(ca, spiffe_id):
    ca_cert, ca_key = ca
    key = ec.generate_private_key(ec.SECP256R1())
    now = dt.datetime.now(dt.timezone.utc)
    cert = (
        x509.CertificateBuilder()
        .subject_name(_name("svid")).issuer_name(ca_cert.subject).public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(minutes=1)).not_valid_after(now + dt.timedelta(minutes=30))
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(x509.KeyUsage(True, False, True, False, False, False, False, False, False), critical=True)
        .add_extension(x509.ExtendedKeyUsage([x509.oid.ExtendedKeyUsageOID.SERVER_AUTH, x509.oid.ExtendedKeyUsageOID.CLIENT_AUTH]), critical=False)
        .add_extension(x509.SubjectAlternativeName([x509.UniformResourceIdentifier(spiffe_id)]), critical=False)
        .add_extension(x509.AuthorityKeyIdentifier.from_issuer_public_key(ca_key.public_key()), critical=False)
        .sign(ca_key, hashes.SHA256())
    )
    return [cert], key


SERVER_ID = SpiffeId.parse("spiffe://example.org/spire/server")


def _peer_id(stream):
    leaf = tls.peer_leaf(stream.peer._transport)
    return str(tls.spiffe_id_of(leaf)) if leaf else "anonymous"


@pytest.fixture
async def mtls_server(unused_tcp_port_factory=None):
    ca = make_ca()
    chain, key = make_svid(ca, str(SERVER_ID))
    rot = tls.RotatingServerContext(tls.server_context(chain, key, [ca[0]]))
    server = Server([Echo(_peer_id)])
    await server.start("127.0.0.1", 0, ssl=rot.listener)
    port = server._server.sockets[0].getsockname()[1]
    yield ca, rot, port
    server.close()
    await server.wait_closed()


async def test_mtls_server_identifies_agent_by_spiffe_id(mtls_server):
    ca, _, port = mtls_server
    chain, key = make_svid(ca, "spiffe://example.org/spire/agent/join_token/abc")
    ch = tls.SpiffeChannel("127.0.0.1", port, ssl_context=tls.client_context([ca[0]], chain, key), expected=SERVER_ID)
    assert await call(ch) == "spiffe://example.org/spire/agent/join_token/abc"
    ch.close()


async def test_mtls_client_without_svid_is_anonymous(mtls_server):
    ca, _, port = mtls_server
    ch = tls.SpiffeChannel("127.0.0.1", port, ssl_context=tls.client_context([ca[0]]), expected=SERVER_ID)
    assert await call(ch) == "anonymous"
    ch.close()


async def test_client_refuses_server_with_wrong_spiffe_id(mtls_server):
    ca, _, port = mtls_server
    ch = tls.SpiffeChannel(
        "127.0.0.1", port, ssl_context=tls.client_context([ca[0]]),
        expected=SpiffeId.parse("spiffe://example.org/not/the/server"),
    )
    with pytest.raises(tls.PeerAuthError):
        await call(ch)
    ch.close()


async def test_client_refuses_server_from_another_ca(mtls_server):
    _, _, port = mtls_server
    other = make_ca("other")
    ch = tls.SpiffeChannel("127.0.0.1", port, ssl_context=tls.client_context([other[0]]), expected=SERVER_ID)
    with pytest.raises(ssl.SSLError):
        await call(ch)
    ch.close()


async def test_server_refuses_client_svid_from_untrusted_ca(mtls_server):
    ca, _, port = mtls_server
    rogue = make_ca("rogue")
    chain, key = make_svid(rogue, "spiffe://example.org/spire/agent/join_token/abc")
    ch = tls.SpiffeChannel("127.0.0.1", port, ssl_context=tls.client_context([ca[0]], chain, key), expected=SERVER_ID)
    with pytest.raises((ssl.SSLError, ConnectionError, asyncio.IncompleteReadError, Exception)) as ei:
        await call(ch)
    assert "anonymous" not in str(ei.value)
    ch.close()


async def test_rotated_server_context_serves_new_svid_and_trusts_new_ca(mtls_server):
    ca, rot, port = mtls_server
    new_ca = make_ca("ca2")
    chain, key = make_svid(new_ca, str(SERVER_ID))
    rot.update(tls.server_context(chain, key, [ca[0], new_ca[0]]))
    # A client that only trusts the new CA now connects, with an SVID from the new CA.
    achain, akey = make_svid(new_ca, "spiffe://example.org/spire/agent/x/1")
    ch = tls.SpiffeChannel("127.0.0.1", port, ssl_context=tls.client_context([new_ca[0]], achain, akey), expected=SERVER_ID)
    assert await call(ch) == "spiffe://example.org/spire/agent/x/1"
    ch.close()
