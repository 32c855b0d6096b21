"""A spire-server started inside the test's event loop, reached over real gRPC:
the admin API on its Unix socket (the caller is a local administrator), and every
service on its TLS port as whoever presents an SVID (an attested agent, a downstream
workload) or as an anonymous caller.

``running_server(tmp_path)`` starts one; the ``server`` fixture of
tests/unit/server/api/conftest.py wraps it for the API tests."""

from __future__ import annotations

import socket
from contextlib import asynccontextmanager
from pathlib import Path
from typing import AsyncIterator, Callable, Optional, TypeVar

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from grpclib.client import Channel

from spire_py.agent.attestor import make_csr
from spire_py.common import tls
from spire_py.proto.spire.api.server.agent.v1 import agent_grpc, agent_pb2
from spire_py.proto.spire.api.server.entry.v1 import entry_grpc, entry_pb2
from spire_py.proto.spire.api.server.svid.v1 import svid_grpc, svid_pb2
from spire_py.proto.spire.api.types import attestation_pb2, selector_pb2, spiffeid_pb2
from spire_py.proto.spire.api.types import entry_pb2 as types_entry_pb2
from spire_py.server.config import load_server_config
from spire_py.server.server import SpireServer

TD = "example.org"

Stub = TypeVar("Stub")


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class Handle:
    def __init__(self, server: SpireServer, socket_path: str, port: int) -> None:
        self.server = server
        self.admin = Channel(path=socket_path)
        self.port = port
        self._channels: list[Channel] = [self.admin]

    @property
    def datastore(self):  # type: ignore[no-untyped-def]
        assert self.server.core is not None
        return self.server.core.datastore

    def agent_api(self) -> agent_grpc.AgentStub:
        return agent_grpc.AgentStub(self.admin)

    def tcp(self, chain: Optional[list[x509.Certificate]] = None, key: Optional[ec.EllipticCurvePrivateKey] = None
            ) -> agent_grpc.AgentStub:
        """The agent API over TLS, as an agent (insecure bootstrap), optionally with an agent SVID."""
        return self.tls_stub(agent_grpc.AgentStub, chain, key)

    def admin_stub(self, stub: Callable[[Channel], Stub]) -> Stub:
        """Any service on the admin socket, as a local administrator."""
        return stub(self.admin)

    def tls_stub(self, stub: Callable[[Channel], Stub], chain: Optional[list[x509.Certificate]] = None,
                 key: Optional[ec.EllipticCurvePrivateKey] = None) -> Stub:
        """Any service on the TLS port (server not verified), presenting ``chain`` when given."""
        ch = Channel("127.0.0.1", self.port, ssl=tls.client_context([], chain, key, insecure=True))
        self._channels.append(ch)
        return stub(ch)

    async def attest_agent(self, token: str = "agent-1") -> tuple[str, list[x509.Certificate], ec.EllipticCurvePrivateKey]:
        """A join token created on the admin API, then attested over TLS: the agent's ID, SVID chain and key."""
        await self.agent_api().CreateJoinToken(agent_pb2.CreateJoinTokenRequest(ttl=600, token=token))
        resp, key = await self.attest_join_token(token.encode())
        chain = [x509.load_der_x509_certificate(der) for der in resp.result.svid.cert_chain]
        return f"spiffe://{TD}/spire/agent/join_token/{token}", chain, key

    async def attest_join_token(self, payload: bytes) -> tuple[agent_pb2.AttestAgentResponse, ec.EllipticCurvePrivateKey]:
        key = ec.generate_private_key(ec.SECP256R1())
        req = agent_pb2.AttestAgentRequest(params=agent_pb2.AttestAgentRequest.Params(
            data=attestation_pb2.AttestationData(type="join_token", payload=payload),
            params=agent_pb2.AgentX509SVIDParams(csr=make_csr(key))))
        async with self.tcp().AttestAgent.open() as stream:
            await stream.send_message(req, end=True)
            resp = await stream.recv_message()
            await stream.recv_trailing_metadata()
        return resp, key

    async def downstream_svid(self, path: str = "/downstream") -> tuple[list[x509.Certificate], ec.EllipticCurvePrivateKey]:
        """An X509-SVID minted on the admin API for an entry with ``downstream = true``."""
        created = await self.admin_stub(entry_grpc.EntryStub).BatchCreateEntry(entry_pb2.BatchCreateEntryRequest(
            entries=[types_entry_pb2.Entry(spiffe_id=spiffe_id(path), parent_id=spiffe_id("/downstream-parent"),
                                           selectors=[selector_pb2.Selector(type="unix", value="uid:0")],
                                           downstream=True)]))
        assert created.results[0].status.code == 0, created.results[0].status
        key = ec.generate_private_key(ec.SECP256R1())
        resp = await self.admin_stub(svid_grpc.SVIDStub).MintX509SVID(
            svid_pb2.MintX509SVIDRequest(csr=csr_for(key, f"spiffe://{TD}{path}")))
        return [x509.load_der_x509_certificate(der) for der in resp.svid.cert_chain], key

    def close(self) -> None:
        for ch in self._channels:
            ch.close()


@asynccontextmanager
async def running_server(tmp_path: Path, extra_server: str = "") -> AsyncIterator[Handle]:
    d = tmp_path / "srv"
    d.mkdir()
    sock, port = str(d / "api.sock"), _free_port()
    conf = d / "server.conf"
    conf.write_text(f"""
server {{
    bind_address = "127.0.0.1"
    bind_port = "{port}"
    socket_path = "{sock}"
    trust_domain = "{TD}"
    data_dir = "{d}/data"
    {extra_server}
}}
plugins {{
    DataStore "sql" {{ plugin_data {{ database_type = "sqlite3"
        connection_string = "{d}/data/datastore.sqlite3" }} }}
    NodeAttestor "join_token" {{ plugin_data {{}} }}
    KeyManager "memory" {{ plugin_data {{}} }}
}}
""")
    server = SpireServer(load_server_config(str(conf)))
    await server.start()
    h = Handle(server, sock, port)
    try:
        yield h
    finally:
        h.close()
        await server.stop()


def spiffe_id(path: str, td: str = TD) -> spiffeid_pb2.SPIFFEID:
    """The wire form of spiffe://<td><path>."""
    return spiffeid_pb2.SPIFFEID(trust_domain=td, path=path)


def csr_for(key: ec.EllipticCurvePrivateKey, *uris: str) -> bytes:
    """A signed CSR with these URI SANs (none: an empty subject, as agents send)."""
    builder = x509.CertificateSigningRequestBuilder().subject_name(x509.Name([]))
    if uris:
        builder = builder.add_extension(
            x509.SubjectAlternativeName([x509.UniformResourceIdentifier(u) for u in uris]), critical=False)
    return builder.sign(key, hashes.SHA256()).public_bytes(serialization.Encoding.DER)
