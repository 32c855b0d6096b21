"""A spire-server started inside the test's event loop, reached over real gRPC:
the admin API on its Unix socket, AttestAgent on its TLS port."""

from __future__ import annotations

import socket
from contextlib import asynccontextmanager
from pathlib import Path
from typing import AsyncIterator, Optional

from cryptography import x509
from cryptography.hazmat.primitives.asymmetric import ec
from grpclib.client import Channel

from spire_py.agent.attestor import make_csr
from spire_py.common import tls
from spire_py.proto.spire.api.server.agent.v1 import agent_grpc, agent_pb2
from spire_py.proto.spire.api.types import attestation_pb2
from spire_py.server.config import load_server_config
from spire_py.server.server import SpireServer

TD = "example.org"


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
        ch = Channel("127.0.0.1", self.port, ssl=tls.client_context([], chain, key, insecure=True))
        self._channels.append(ch)
        return agent_grpc.AgentStub(ch)

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
