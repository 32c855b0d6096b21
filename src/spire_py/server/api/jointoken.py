"""Agent.CreateJoinToken, kept apart from the rest of the agent API."""

from __future__ import annotations

import time
import uuid
from typing import Any

from grpclib.const import Status
from grpclib.exceptions import GRPCError

from ...common.registration import Entry, Selector
from ...common.spiffeid import SpiffeId, is_reserved_path
from ...proto.spire.api.types import jointoken_pb2
from ..core import ServerCore
from ..datastore.models import JoinToken
from ..plugins.nodeattestor.join_token import InvalidJoinToken, join_token_id
from . import convert


def _alias_arg(core: ServerCore, req: Any) -> SpiffeId | None:
    """The optional extra agent ID: as SPIRE's TrustDomainWorkloadIDFromProto, a workload ID
    of this trust domain, so a token cannot hand out a server or agent ID."""
    if not req.HasField("agent_id") or not (req.agent_id.trust_domain or req.agent_id.path):
        return None
    try:
        sid = convert.id_from_proto(req.agent_id, "agent ID", core.trust_domain)
    except convert.InvalidInput as exc:
        raise GRPCError(Status.INVALID_ARGUMENT, str(exc)) from None
    td = core.trust_domain
    if not sid.path:
        raise GRPCError(Status.INVALID_ARGUMENT,
                        f'invalid agent ID: "{sid}" is not a workload in trust domain "{td}"; path is empty')
    if is_reserved_path(sid):
        raise GRPCError(Status.INVALID_ARGUMENT, f'invalid agent ID: "{sid}" is not a workload in trust domain '
                                                 f'"{td}"; path is in the reserved namespace')
    return sid


async def create_join_token(core: ServerCore, req: Any) -> jointoken_pb2.JoinToken:
    """Store a token (the caller's value or a UUID) and, with an agent ID, its alias entry."""
    if req.ttl < 1:
        raise GRPCError(Status.INVALID_ARGUMENT, "ttl is required, you must provide one")
    alias = _alias_arg(core, req)
    token = req.token or str(uuid.uuid4())
    try:
        # SPIRE finds a bad value only at attestation (Internal, token burnt); refuse it up front.
        parent = join_token_id(core.trust_domain, token)
    except InvalidJoinToken as exc:
        raise GRPCError(Status.INVALID_ARGUMENT, f"invalid join token: {exc}") from None
    expires_at = int(time.time()) + req.ttl
    await core.db(core.datastore.create_join_token, JoinToken(token=token, expires_at=expires_at))
    if alias is not None:
        # As SPIRE: an entry that gives the attested agent the requested ID as an alias.
        await core.db(core.datastore.create_entry, Entry(
            id="", spiffe_id=str(alias), parent_id=str(parent), selectors=[Selector("spiffe_id", str(parent))]))
        await core.refresh_cache()
    return jointoken_pb2.JoinToken(value=token, expires_at=expires_at)
