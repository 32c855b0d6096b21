"""The agent's connection to the server: mTLS with its SVID, the server known by SPIFFE ID."""

from __future__ import annotations

from typing import Any, Optional

from cryptography import x509
from cryptography.hazmat.primitives.asymmetric.types import PrivateKeyTypes

from ..common import tls
from ..common.spiffeid import SpiffeId, TrustDomain, server_id
from ..proto.spire.api.server.agent.v1 import agent_grpc
from ..proto.spire.api.server.bundle.v1 import bundle_grpc
from ..proto.spire.api.server.entry.v1 import entry_grpc
from ..proto.spire.api.server.svid.v1 import svid_grpc

RPC_TIMEOUT = 30.0


class ServerClient:
    """Stubs over one channel; rebuilt whenever the agent SVID or the bundle changes."""

    def __init__(
        self,
        address: str,
        port: int,
        trust_domain: TrustDomain,
        roots: list[x509.Certificate],
        svid: Optional[list[x509.Certificate]] = None,
        key: Optional[PrivateKeyTypes] = None,
        insecure: bool = False,
    ) -> None:
        expected: SpiffeId = server_id(trust_domain)
        ctx = tls.client_context(roots, svid, key, insecure=insecure)
        self.channel = tls.SpiffeChannel(address, port, ssl_context=ctx, expected=expected)
        self.agent = agent_grpc.AgentStub(self.channel)
        self.entry = entry_grpc.EntryStub(self.channel)
        self.bundle = bundle_grpc.BundleStub(self.channel)
        self.svid = svid_grpc.SVIDStub(self.channel)

    def close(self) -> None:
        self.channel.close()

    def __enter__(self) -> "ServerClient":
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()
