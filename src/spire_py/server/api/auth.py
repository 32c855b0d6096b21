"""Who is calling, and may they? Enforced once, for every server API method, by :class:`Middleware`.

Callers on the admin Unix socket are local administrators. Callers on the TCP
listener are known by the SPIFFE ID of their verified client SVID: an agent must
be attested, not banned, and present the SVID serial the datastore expects; an
admin or downstream workload must have an entry saying so. What each method
admits is :data:`policy.POLICY`.
"""

from __future__ import annotations

import asyncio
import socket
import time
from collections import OrderedDict
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Collection, NamedTuple, Optional

from cryptography import x509
from grpclib.const import Status
from grpclib.exceptions import GRPCError

from ...common import log, rpc, tls
from ...common.registration import Selector
from ...common.spiffeid import SpiffeId, is_agent_id
from ..datastore.models import AttestedNode
from .policy import ADMIN, AGENT, ANY, DOWNSTREAM, LOCAL

if TYPE_CHECKING:
    from ..core import ServerCore

_log = log.get("api")

__all__ = ["ADMIN", "AGENT", "ANY", "DOWNSTREAM", "LOCAL", "Caller", "authorize", "caller_of", "identify"]


@dataclass
class Caller:
    local: bool = False
    spiffe_id: Optional[SpiffeId] = None
    cert: Optional[x509.Certificate] = None
    uid: Optional[int] = None
    gid: Optional[int] = None
    pid: Optional[int] = None
    address: Optional[str] = None  # the peer's IP for TCP callers
    is_agent: bool = False
    is_admin: bool = False
    is_downstream: bool = False
    # An agent's node selectors, read with its attested node when it was authorized.
    agent_selectors: list[Selector] = field(default_factory=list)

    def describe(self) -> str:
        if self.local:
            return f"local uid {self.uid}"
        return str(self.spiffe_id) if self.spiffe_id else "anonymous"


def _transport(stream: Any) -> Any:
    return stream.peer._transport


async def identify(stream: Any, core: "ServerCore", allowed: Collection[str] = (ADMIN, AGENT, DOWNSTREAM)) -> Caller:
    """The caller, with only the roles ``allowed`` checked (an ``any`` method costs no datastore read)."""
    transport = _transport(stream)
    sock = transport.get_extra_info("socket")
    if sock is not None and sock.family == socket.AF_UNIX:
        pid, uid, gid = tls.peer_ucred(transport)
        return Caller(local=True, uid=uid, gid=gid, pid=pid)
    peername = transport.get_extra_info("peername")
    address = str(peername[0]) if isinstance(peername, tuple) and peername else None
    peer = _peer_of(transport)
    if peer is None:
        return Caller(address=address)
    sid = peer.spiffe_id
    caller = Caller(spiffe_id=sid, cert=peer.cert, address=address)
    if sid.trust_domain != core.trust_domain or ANY in allowed:
        return caller
    if is_agent_id(sid):
        if AGENT in allowed:
            node = await _check_agent(core, sid, peer)
            caller.is_agent, caller.agent_selectors = True, node.selectors
    elif ADMIN in allowed or DOWNSTREAM in allowed:
        flags = await asyncio.to_thread(core.cache.flags_for, str(sid))
        caller.is_admin = flags.admin or str(sid) in core.admin_ids
        caller.is_downstream = flags.downstream
    return caller


class _Peer(NamedTuple):
    """A verified client certificate as the middleware needs it, parsed once per certificate."""

    spiffe_id: SpiffeId
    cert: x509.Certificate
    serial: str
    not_after: float


# Client certificates seen lately, by DER: a connection's calls (every agent's sync every 5 s)
# reuse the parse. Bounded; the oldest is dropped first.
MAX_PEERS = 16384
_peers: "OrderedDict[bytes, _Peer]" = OrderedDict()


def _peer_of(transport: Any) -> Optional[_Peer]:
    sslobj = transport.get_extra_info("ssl_object")
    der = sslobj.getpeercert(binary_form=True) if sslobj is not None else None
    if not der:
        return None
    peer = _peers.get(der)
    if peer is None:
        leaf = x509.load_der_x509_certificate(der)
        try:
            sid = tls.spiffe_id_of(leaf)
        except tls.PeerAuthError as exc:
            raise GRPCError(Status.UNAUTHENTICATED, f"invalid caller certificate: {rpc.quote(exc)}") from None
        peer = _Peer(sid, leaf, str(leaf.serial_number), leaf.not_valid_after_utc.timestamp())
        _peers[der] = peer
        while len(_peers) > MAX_PEERS:
            _peers.popitem(last=False)
    return peer


async def _check_agent(core: "ServerCore", sid: SpiffeId, peer: _Peer) -> AttestedNode:
    """The agent's attested node, if it may call: attested, not banned, current SVID."""
    if time.time() >= peer.not_after:  # checked at the handshake; a connection can outlive it
        raise GRPCError(Status.PERMISSION_DENIED, f'agent "{rpc.quote(sid)}" SVID is expired')
    agent_id = str(sid)
    node = core.cached.cached_agent(agent_id) or await core.db(core.cached.agent_node, agent_id)
    if node is None:
        raise GRPCError(Status.PERMISSION_DENIED, "agent is not attested")
    if node.banned:
        raise GRPCError(Status.PERMISSION_DENIED, "agent is banned")
    serial = peer.serial
    if serial not in (node.cert_serial_number, node.new_cert_serial_number):
        raise GRPCError(Status.PERMISSION_DENIED, "agent SVID does not match expected serial number")
    if serial == node.new_cert_serial_number:
        # First use of a renewed SVID: it becomes the current one and the old one stops working.
        node.cert_serial_number, node.cert_not_after = node.new_cert_serial_number, node.new_cert_not_after
        node.new_cert_serial_number, node.new_cert_not_after = "", 0
        await core.db(core.datastore.update_attested_node, node, {
            "cert_serial_number", "cert_not_after", "new_cert_serial_number", "new_cert_not_after"})
    return node


def authorize(caller: Caller, allowed: Collection[str]) -> None:
    """Raise PermissionDenied unless the caller has one of the allowed roles."""
    if ANY in allowed or (LOCAL in allowed and caller.local):
        return
    if (ADMIN in allowed and caller.is_admin) or (AGENT in allowed and caller.is_agent) or (
        DOWNSTREAM in allowed and caller.is_downstream
    ):
        return
    if caller.local:
        raise GRPCError(Status.PERMISSION_DENIED, "authorization denied: method is not served to local callers")
    if caller.spiffe_id is None:
        raise GRPCError(Status.PERMISSION_DENIED, "authorization denied: caller is not authenticated")
    raise GRPCError(Status.PERMISSION_DENIED, f'authorization denied for "{rpc.quote(caller.spiffe_id)}"')


def caller_of(stream: Any) -> Caller:
    """The caller the middleware identified and authorized for the RPC being served."""
    caller = rpc.current_call().caller
    assert isinstance(caller, Caller), "server API served without the authorization middleware"
    return caller
