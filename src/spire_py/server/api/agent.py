"""spire.api.server.agent.v1.Agent: attestation, renewal, join tokens, agent admin."""

from __future__ import annotations

import secrets
import time
from typing import Any

from google.protobuf import empty_pb2
from grpclib.const import Status
from grpclib.exceptions import GRPCError

from ...common import log, rpc, telemetry
from ...common.registration import Selector
from ...common.spiffeid import SpiffeId, is_agent_id
from ...common.telemetry.names import NODE_ATTEST
from ...proto.spire.api.server.agent.v1 import agent_grpc, agent_pb2
from ..core import ServerCore
from ..datastore.models import AttestedNode
from ..plugins.nodeattestor.base import AttestationError
from ..plugins.nodeattestor.join_token import JoinTokenRefused
from . import convert
from .auth import caller_of
from .convert import parse_csr, svid_to_proto
from .jointoken import create_join_token

_log = log.get("agent_api")


def _agent_id_arg(core: ServerCore, pb: Any) -> str:
    try:
        sid = convert.id_from_proto(pb, "agent ID", core.trust_domain)
    except convert.InvalidInput as exc:
        raise GRPCError(Status.INVALID_ARGUMENT, str(exc)) from None
    if not is_agent_id(sid):
        raise GRPCError(Status.INVALID_ARGUMENT, f'invalid agent ID: "{sid}" is not an agent in trust domain "{core.trust_domain}"')
    return str(sid)


class AgentService(agent_grpc.AgentBase):
    def __init__(self, core: ServerCore) -> None:
        self.core = core

    # --- admin -------------------------------------------------------------------------
    def _filters(self, req: Any) -> dict[str, Any]:
        kw: dict[str, Any] = {}
        if not req.HasField("filter"):
            return kw
        f = req.filter
        if f.by_attestation_type:
            kw["by_attestation_type"] = f.by_attestation_type
        if f.HasField("by_banned"):
            kw["by_banned"] = f.by_banned.value
        if f.HasField("by_can_reattest"):
            kw["by_can_reattest"] = f.by_can_reattest.value
        if f.by_expires_before:
            try:
                kw["by_expires_before"] = int(time.mktime(time.strptime(f.by_expires_before, "%Y-%m-%d %H:%M:%S")))
            except ValueError:
                raise GRPCError(Status.INVALID_ARGUMENT, "failed to parse by_expires_before filter") from None
        if f.HasField("by_selector_match"):
            try:
                kw["by_selector_match"] = convert.selector_match_from_proto(f.by_selector_match)
            except convert.InvalidInput as exc:
                raise GRPCError(Status.INVALID_ARGUMENT, str(exc)) from None
        return kw

    async def CountAgents(self, stream: Any) -> None:
        req = await stream.recv_message()
        kw = self._filters(req) if hasattr(req, "filter") else {}
        n = await self.core.db(self.core.datastore.count_attested_nodes, **kw)
        await stream.send_message(agent_pb2.CountAgentsResponse(count=n))

    async def ListAgents(self, stream: Any) -> None:
        req = await stream.recv_message()
        if req.page_size < 0:
            raise GRPCError(Status.INVALID_ARGUMENT, "page size must not be negative")
        mask = req.output_mask if req.HasField("output_mask") else None
        nodes, token = await self.core.db(
            self.core.datastore.list_attested_nodes, fetch_selectors=True,
            page_token=req.page_token, page_size=req.page_size, **self._filters(req),
        )
        await stream.send_message(agent_pb2.ListAgentsResponse(
            agents=[convert.agent_to_proto(n, mask) for n in nodes], next_page_token=token))

    async def GetAgent(self, stream: Any) -> None:
        req = await stream.recv_message()
        sid = _agent_id_arg(self.core, req.id)
        node = await self.core.db(self.core.datastore.fetch_attested_node, sid, with_selectors=True)
        if node is None:
            raise GRPCError(Status.NOT_FOUND, "agent not found")
        mask = req.output_mask if req.HasField("output_mask") else None
        await stream.send_message(convert.agent_to_proto(node, mask))

    async def DeleteAgent(self, stream: Any) -> None:
        req = await stream.recv_message()
        caller = caller_of(stream)
        sid = _agent_id_arg(self.core, req.id)
        try:
            await self.core.db(self.core.datastore.delete_attested_node, sid)
        except GRPCError as exc:
            if exc.status != Status.NOT_FOUND:
                raise
            raise GRPCError(Status.NOT_FOUND, "agent not found") from None  # SPIRE hides the inner error
        _log.info("Agent deleted", extra=log.fields(agent_id=sid, caller=caller.describe()))
        await stream.send_message(empty_pb2.Empty())

    async def BanAgent(self, stream: Any) -> None:
        req = await stream.recv_message()
        caller = caller_of(stream)
        sid = _agent_id_arg(self.core, req.id)
        node = await self.core.db(self.core.datastore.fetch_attested_node, sid)
        if node is None:
            raise GRPCError(Status.NOT_FOUND, "agent not found")
        node.cert_serial_number = ""
        node.new_cert_serial_number = ""
        await self.core.db(self.core.datastore.update_attested_node, node,
                           {"cert_serial_number", "new_cert_serial_number"})
        _log.info("Agent banned", extra=log.fields(agent_id=sid, caller=caller.describe()))
        await stream.send_message(empty_pb2.Empty())

    async def CreateJoinToken(self, stream: Any) -> None:
        req = await stream.recv_message()
        await stream.send_message(await create_join_token(self.core, req))

    async def PostStatus(self, stream: Any) -> None:
        await stream.recv_message()
        raise GRPCError(Status.UNIMPLEMENTED, "unimplemented")

    # --- agents ------------------------------------------------------------------------
    async def AttestAgent(self, stream: Any) -> None:
        req = await stream.recv_message()
        if req is None or not req.HasField("params"):
            raise GRPCError(Status.INVALID_ARGUMENT, "malformed param: missing params")
        params = req.params
        if not params.HasField("data") or not params.data.type:
            raise GRPCError(Status.INVALID_ARGUMENT, "malformed param: missing attestation data")
        if not params.HasField("params"):
            raise GRPCError(Status.INVALID_ARGUMENT, "malformed param: missing X509-SVID params")
        csr = parse_csr(params.params.csr)
        attestor = self.core.node_attestors.get(params.data.type)
        if attestor is None:
            raise GRPCError(Status.FAILED_PRECONDITION,
                            f'error getting node attestor: could not find node attestor type "{params.data.type}"')

        async def challenge(data: bytes) -> bytes:
            await stream.send_message(agent_pb2.AttestAgentResponse(challenge=data))
            reply = await stream.recv_message()
            if reply is None or not reply.challenge_response:
                raise AttestationError("missing challenge response", Status.INVALID_ARGUMENT)
            return bytes(reply.challenge_response)

        try:
            with telemetry.current().call(NODE_ATTEST, (("attestor", params.data.type),)):
                result = await attestor.attest(bytes(params.data.payload), challenge)
        except JoinTokenRefused as exc:  # SPIRE's attestJoinToken messages, passed on unprefixed
            _log.warning("Agent attestation failed",
                         extra=log.fields(attestor=params.data.type, error=rpc.quote(exc, 512)))
            raise GRPCError(exc.status, str(exc)) from None
        except AttestationError as exc:
            _log.warning("Agent attestation failed",
                         extra=log.fields(attestor=params.data.type, error=rpc.quote(exc, 512)))
            raise GRPCError(exc.status, f"failed to attest: {exc}" if not str(exc).startswith("failed") else str(exc)) from None
        sid = result.agent_id
        if sid.trust_domain != self.core.trust_domain or not is_agent_id(sid):
            raise GRPCError(Status.INTERNAL, f'attestor returned an invalid agent ID "{sid}"')

        existing = await self.core.db(self.core.datastore.fetch_attested_node, str(sid))
        if existing is not None and existing.banned:
            raise GRPCError(Status.PERMISSION_DENIED, "failed to attest: agent is banned")
        chain = await self.core.sign(self.core.ca.sign_agent_svid, csr.public_key(), sid, self.core.agent_ttl)
        leaf = chain[0]
        node = AttestedNode(
            spiffe_id=str(sid),
            attestation_type=params.data.type,
            cert_serial_number=str(leaf.serial_number),
            cert_not_after=int(leaf.not_valid_after_utc.timestamp()),
            can_reattest=result.can_reattest,
        )
        if existing is None:
            await self.core.db(self.core.datastore.create_attested_node, node)
        else:
            # As SPIRE's UpdateAttestedNodeCertificateMask: the attestation type is not updatable.
            await self.core.db(self.core.datastore.update_attested_node, node, {
                "cert_serial_number", "cert_not_after", "new_cert_serial_number", "new_cert_not_after",
                "can_reattest"})
        selectors = list(result.selectors)
        if self.core.config.agent_spiffe_id_as_selector:  # experimental: as SPIRE, after attestation
            selectors.append(Selector("spiffe_id", str(sid)))
        await self.core.db(self.core.datastore.set_node_selectors, str(sid), selectors)
        _log.info("Agent attestation request completed", extra=log.fields(
            agent_id=str(sid), node_attestor_type=params.data.type, svid_serial_number=node.cert_serial_number))
        await stream.send_message(agent_pb2.AttestAgentResponse(result=agent_pb2.AttestAgentResponse.Result(
            svid=svid_to_proto(str(sid), chain), reattestable=result.can_reattest)))

    async def RenewAgent(self, stream: Any) -> None:
        req = await stream.recv_message()
        caller = caller_of(stream)
        if not req.HasField("params"):
            raise GRPCError(Status.INVALID_ARGUMENT, "params cannot be nil")
        csr = parse_csr(req.params.csr)
        sid: SpiffeId = caller.spiffe_id  # type: ignore[assignment]
        chain = await self.core.sign(self.core.ca.sign_agent_svid, csr.public_key(), sid, self.core.agent_ttl)
        node = await self.core.db(self.core.datastore.fetch_attested_node, str(sid))
        assert node is not None  # the middleware found this caller attested
        node.new_cert_serial_number = str(chain[0].serial_number)
        node.new_cert_not_after = int(chain[0].not_valid_after_utc.timestamp())
        await self.core.db(self.core.datastore.update_attested_node, node,
                           {"new_cert_serial_number", "new_cert_not_after"})
        _log.debug("Agent SVID renewed", extra=log.fields(agent_id=str(sid)))
        await stream.send_message(agent_pb2.RenewAgentResponse(svid=svid_to_proto(str(sid), chain)))


def new_token() -> str:
    return secrets.token_hex(16)
