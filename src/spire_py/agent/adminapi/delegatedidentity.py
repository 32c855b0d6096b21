"""spire.api.agent.delegatedidentity.v1: other workloads' identities for an authorized delegate.

SPIRE's rules: the caller on the admin socket is attested with the workload attestors (its
connection pinned at accept, as on the Workload API); it is a delegate when one of the entries
its selectors match has a SPIFFE ID listed in ``authorized_delegates``. A delegate names the
workload by selectors (taken as attested) or by pid (attested here), never both. Admin and
downstream entries are never handed out. Streams check the delegate again on every update.
The matching, SVID and JWT caches are the Workload API's (``WorkloadAPIService``).
"""

from __future__ import annotations

import asyncio
import logging
import os
import time
from typing import Any, Iterable, Optional, Sequence

from cryptography.hazmat.primitives.serialization import Encoding
from grpclib.const import Status
from grpclib.exceptions import GRPCError

from ...common import telemetry
from ...common.registration import Entry, Selector
from ...common.telemetry.names import DELEGATED_FIRST_UPDATE
from ...common.registration_proto import id_to_proto
from ...common.x509util import certs_to_der_chain
from ...proto.spire.api.agent.delegatedidentity.v1 import delegatedidentity_grpc
from ...proto.spire.api.agent.delegatedidentity.v1 import delegatedidentity_pb2 as pb
from ...proto.spire.api.types import jwtsvid_pb2, x509svid_pb2
from ..workloadapi.caller import CallerRegistry
from ..workloadapi.handler import WorkloadAPIService, _Call
from ..workloadapi.jwks import jwks_json

MAX_REQUEST_SELECTORS = 256


def _selectors_from_proto(items: Iterable[Any]) -> list[Selector]:
    out = []
    for s in items:
        if not s.type or ":" in s.type or not s.value:
            raise ValueError("invalid selector")
        out.append(Selector(s.type, s.value))
    return out


def _visible(entries: Iterable[Entry]) -> list[Entry]:
    """Admin and downstream SVIDs never leave through this API."""
    return [e for e in entries if not e.admin and not e.downstream]


def _proc_owner(pid: int) -> tuple[int, int]:
    st = os.stat(os.path.join(os.environ.get("HOST_PROC") or "/proc", str(pid)))
    return st.st_uid, st.st_gid


class DelegatedIdentityService(delegatedidentity_grpc.DelegatedIdentityBase):
    def __init__(self, workload: WorkloadAPIService, callers: CallerRegistry,
                 authorized_delegates: Iterable[str]) -> None:
        self.workload = workload
        self.cache = workload.cache
        self.callers = callers
        self.authorized = frozenset(authorized_delegates)

    # --- who is asking --------------------------------------------------------------------
    async def _authorize(self, stream: Any, call: _Call, cached: Optional[list[Selector]] = None) -> list[Selector]:
        selectors = cached if cached is not None else await self.workload._attest(stream, call, self.callers)
        entries = self.cache.entries_for(selectors)
        if not entries:
            call.log(logging.ERROR, "No identity issued")
            raise GRPCError(Status.PERMISSION_DENIED, "no identity issued")
        for e in entries:
            if e.spiffe_id in self.authorized:
                if cached is None:
                    call.log(logging.DEBUG, "Caller authorized as delegate", delegate_id=e.spiffe_id)
                return selectors
        call.log(logging.ERROR, "Permission denied; caller not configured as an authorized delegate.",
                 num_registered_entries=len(entries), default_id=entries[0].spiffe_id)
        raise GRPCError(Status.PERMISSION_DENIED, "caller not configured as an authorized delegate")

    async def _requested(self, call: _Call, pid: int, selectors: Sequence[Any]) -> list[Selector]:
        """The workload the delegate asks for: its selectors, or those of ``pid`` attested now."""
        if bool(selectors) == bool(pid):
            call.log(logging.ERROR, "Invalid argument; must provide either selectors or non-zero PID, but not both")
            raise GRPCError(Status.INVALID_ARGUMENT, "must provide either selectors or non-zero PID, but not both")
        if selectors:
            try:
                if len(selectors) > MAX_REQUEST_SELECTORS:
                    raise ValueError(f"more than {MAX_REQUEST_SELECTORS} selectors")
                return sorted(set(_selectors_from_proto(selectors)))
            except ValueError as exc:
                call.log(logging.ERROR, "Invalid argument; could not parse provided selectors", error=str(exc))
                raise GRPCError(Status.INVALID_ARGUMENT, "could not parse provided selectors") from None
        try:
            uid, gid = _proc_owner(pid)
        except OSError as exc:
            call.log(logging.ERROR, "Workload attestation failed", pid=pid, error=exc.strerror or str(exc))
            raise GRPCError(Status.UNAVAILABLE, "workload attestation failed") from None
        return await self.workload.attest_process(call, pid, uid, gid)

    # --- X.509-SVIDs ----------------------------------------------------------------------
    def _x509_response(self, entries: list[Entry]) -> Optional[pb.SubscribeToX509SVIDsResponse]:
        """None while an entry's SVID is not (re)minted yet."""
        resp = pb.SubscribeToX509SVIDsResponse()
        resp.federates_with.extend(sorted(self.cache.federated_bundles_for(entries)))
        for e in entries:
            svid = self.cache.svids.get(e.id)
            if svid is None or svid.spiffe_id != e.spiffe_id:
                return None
            resp.x509_svids.add(
                x509_svid=x509svid_pb2.X509SVID(
                    id=id_to_proto(e.spiffe_id), cert_chain=[c.public_bytes(Encoding.DER) for c in svid.chain],
                    expires_at=svid.expires_at, hint=e.hint),
                x509_svid_key=svid.key_der)
        return resp

    async def SubscribeToX509SVIDs(self, stream: Any) -> None:
        await self.workload._tracked(self._subscribe_x509_svids(stream))

    async def _subscribe_x509_svids(self, stream: Any) -> None:
        call = _Call("SubscribeToX509SVIDs")
        started = time.monotonic()
        measured = False
        req = await stream.recv_message()
        delegate = await self._authorize(stream, call)
        selectors = await self._requested(call, req.pid, req.selectors)
        with self.cache.subscribe(selectors):
            last: Optional[bytes] = None
            first = True
            while True:
                version = self.cache.version
                if not first:
                    await self._authorize(stream, call, delegate)
                first = False
                resp = self._x509_response(_visible(self.cache.entries_for(selectors)))
                if resp is not None:
                    wire = resp.SerializeToString(deterministic=True)
                    if not measured and resp.x509_svids:  # SPIRE's latency to the first update with an SVID
                        telemetry.current().measure_since(DELEGATED_FIRST_UPDATE, started)
                        measured = True
                    if wire != last:
                        await stream.send_message(resp)
                        last = wire
                        call.log(logging.DEBUG, "Fetched X.509 SVID for delegated identity", count=len(resp.x509_svids),
                                 spiffe_id=",".join(f"spiffe://{s.x509_svid.id.trust_domain}{s.x509_svid.id.path}"
                                                    for s in resp.x509_svids))
                await self.workload._next_change(version)

    # --- bundles --------------------------------------------------------------------------
    async def _bundle_stream(self, stream: Any, call: _Call, make: Any) -> None:
        await stream.recv_message()
        delegate = await self._authorize(stream, call)
        last: Optional[bytes] = None
        first = True
        while True:
            version = self.cache.version
            if not first:
                await self._authorize(stream, call, delegate)
            first = False
            if self.cache.bundles:
                resp = make(dict(self.cache.bundles))
                wire = resp.SerializeToString(deterministic=True)
                if wire != last:
                    await stream.send_message(resp)
                    last = wire
            await self.workload._next_change(version)

    async def SubscribeToX509Bundles(self, stream: Any) -> None:
        def make(bundles: dict[str, Any]) -> pb.SubscribeToX509BundlesResponse:
            return pb.SubscribeToX509BundlesResponse(
                ca_certificates={td: certs_to_der_chain(b.x509_authorities) for td, b in bundles.items()})

        await self.workload._tracked(self._bundle_stream(stream, _Call("SubscribeToX509Bundles"), make))

    async def SubscribeToJWTBundles(self, stream: Any) -> None:
        def make(bundles: dict[str, Any]) -> pb.SubscribeToJWTBundlesResponse:
            return pb.SubscribeToJWTBundlesResponse(bundles={td: jwks_json(b) for td, b in bundles.items()})

        await self.workload._tracked(self._bundle_stream(stream, _Call("SubscribeToJWTBundles"), make))

    # --- JWT-SVIDs ------------------------------------------------------------------------
    async def FetchJWTSVIDs(self, stream: Any) -> None:
        call = _Call("FetchJWTSVIDs")
        req = await stream.recv_message()
        audience = list(req.audience)
        if not audience:
            call.log(logging.ERROR, "Missing required audience parameter")
            raise GRPCError(Status.INVALID_ARGUMENT, "audience must be specified")
        await self._authorize(stream, call)
        selectors = await self._requested(call, req.pid, req.selectors)
        resp = pb.FetchJWTSVIDsResponse()
        for e in _visible(self.cache.entries_for(selectors)):
            try:
                jwt = await self.cache.jwt_svid(e, audience)
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                reason = exc.message if isinstance(exc, GRPCError) else str(exc)
                call.log(logging.ERROR, "Could not fetch JWT-SVID", spiffe_id=e.spiffe_id, error=reason)
                raise GRPCError(Status.UNAVAILABLE, f"could not fetch JWT-SVID: {reason}") from None
            resp.svids.append(jwtsvid_pb2.JWTSVID(token=jwt.token, id=id_to_proto(e.spiffe_id), expires_at=jwt.expires_at,
                                                  issued_at=jwt.issued_at, hint=e.hint))
            call.log(logging.DEBUG, "Fetched JWT SVID", spiffe_id=e.spiffe_id)
        if not resp.svids:
            call.log(logging.ERROR, "No identity issued")
            raise GRPCError(Status.PERMISSION_DENIED, "no identity issued")
        await stream.send_message(resp)
