"""Node attestation over AttestAgent (the bootstrap bundle comes from trust_bundle.py)."""

from __future__ import annotations

import ssl
from typing import Any, Optional

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric.types import PrivateKeyTypes
from grpclib.const import Status
from grpclib.exceptions import GRPCError

from ..common import log
from ..common.errors import SpireError
from ..common.spiffeid import TrustDomain, is_agent_id
from ..common.tls import spiffe_id_of
from ..proto.spire.api.server.agent.v1 import agent_pb2
from ..proto.spire.api.types import attestation_pb2
from .client import RPC_TIMEOUT, ServerClient
from .plugins.nodeattestor.base import AgentAttestationError, AgentNodeAttestor

_log = log.get("attestor")


class AttestationFailed(SpireError):
    """Node attestation was refused or could not run; the message says why.

    ``status`` is the server's gRPC status when the server refused, else None."""

    def __init__(self, message: str, status: Optional[Status] = None) -> None:
        super().__init__(message)
        self.status = status


def make_csr(key: PrivateKeyTypes) -> bytes:
    # The server ignores the CSR's names and keeps only the key; SPIRE sends an empty subject.
    csr = x509.CertificateSigningRequestBuilder().subject_name(x509.Name([])).sign(key, hashes.SHA256())  # type: ignore[arg-type]
    return csr.public_bytes(serialization.Encoding.DER)


def chain_from_proto(cert_chain: Any) -> list[x509.Certificate]:
    return [x509.load_der_x509_certificate(bytes(c)) for c in cert_chain]


async def attest(
    client: ServerClient, attestor: AgentNodeAttestor, key: PrivateKeyTypes, td: TrustDomain
) -> tuple[list[x509.Certificate], bool]:
    """Run AttestAgent: payload, challenges, result. Returns (agent SVID chain, reattestable)."""
    try:
        payload = await attestor.payload()
    except AgentAttestationError as exc:
        raise AttestationFailed(str(exc)) from None
    req = agent_pb2.AttestAgentRequest(params=agent_pb2.AttestAgentRequest.Params(
        data=attestation_pb2.AttestationData(type=attestor.NAME, payload=payload),
        params=agent_pb2.AgentX509SVIDParams(csr=make_csr(key)),
    ))
    try:
        async with client.agent.AttestAgent.open(timeout=RPC_TIMEOUT) as stream:
            await stream.send_message(req)
            while True:
                resp = await stream.recv_message()
                if resp is None:
                    # A refusal after a challenge comes in the trailers: surface its status.
                    await stream.recv_trailing_metadata()
                    raise AttestationFailed("server closed the attestation stream without a result")
                if resp.HasField("result"):
                    break
                try:
                    answer = await attestor.respond(bytes(resp.challenge))
                except AgentAttestationError as exc:
                    raise AttestationFailed(str(exc)) from None
                await stream.send_message(agent_pb2.AttestAgentRequest(challenge_response=answer))
            await stream.end()
    except GRPCError as exc:
        raise AttestationFailed(f"attestation refused by server: {exc.status.name}: {exc.message}", exc.status) from None
    except (ConnectionError, OSError, ssl.SSLError) as exc:
        raise AttestationFailed(f"cannot reach server: {exc}") from None
    chain = chain_from_proto(resp.result.svid.cert_chain)
    if not chain:
        raise AttestationFailed("server returned an empty agent SVID")
    sid = spiffe_id_of(chain[0])
    if sid.trust_domain != td or not is_agent_id(sid):
        raise AttestationFailed(f'server returned an unexpected agent ID "{sid}"')
    _log.info("Node attestation was successful", extra=log.fields(spiffe_id=str(sid), reattestable=resp.result.reattestable))
    return chain, resp.result.reattestable
