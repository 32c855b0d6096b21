"""spire.api.server.svid.v1.SVID: SVIDs for agents' workloads, and minted by admins."""

from __future__ import annotations

from typing import Any, Optional

import jwt
from cryptography import x509
from cryptography.hazmat.primitives import serialization
from grpclib.const import Status
from grpclib.exceptions import GRPCError

from ...common import log
from ...common.registration_proto import id_to_proto
from ...common.spiffeid import SpiffeId, SpiffeIdError
from ...proto.spire.api.server.svid.v1 import svid_grpc, svid_pb2
from ...proto.spire.api.types import jwtsvid_pb2, x509svid_pb2
from ..ca.errors import CAError, CARequestError
from ..ca.signing_pool import MIN_POOLED_BATCH
from ..core import ServerCore
from . import convert
from .auth import caller_of
from .convert import parse_csr, svid_to_proto
from .status import OK, status

_log = log.get("svid_api")


def jwt_svid_to_proto(sid: str, token: str) -> jwtsvid_pb2.JWTSVID:
    claims = jwt.decode(token, options={"verify_signature": False})
    return jwtsvid_pb2.JWTSVID(token=token, id=id_to_proto(sid),
                               expires_at=int(claims["exp"]), issued_at=int(claims.get("iat", 0)))


def _audience(values: Any) -> list[str]:
    aud = [a for a in values]
    if not aud:
        raise GRPCError(Status.INVALID_ARGUMENT, "at least one audience is required")
    if any(not a for a in aud):
        raise GRPCError(Status.INVALID_ARGUMENT, "audience cannot be empty")
    return aud


class SVIDService(svid_grpc.SVIDBase):
    def __init__(self, core: ServerCore) -> None:
        self.core = core

    async def MintX509SVID(self, stream: Any) -> None:
        req = await stream.recv_message()
        csr = parse_csr(req.csr)
        try:
            san = csr.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
            uris = san.get_values_for_type(x509.UniformResourceIdentifier)
            dns = san.get_values_for_type(x509.DNSName)
        except x509.ExtensionNotFound:
            uris, dns = [], []
        if len(uris) != 1:
            raise GRPCError(Status.INVALID_ARGUMENT, "CSR must have exactly one URI SAN")
        try:
            sid = SpiffeId.parse(uris[0])
        except SpiffeIdError as exc:
            raise GRPCError(Status.INVALID_ARGUMENT, f"CSR URI SAN is invalid: {exc}") from None
        if sid.trust_domain != self.core.trust_domain:
            raise GRPCError(Status.INVALID_ARGUMENT, f'CSR URI SAN is invalid: "{sid}" is not a member of trust domain "{self.core.trust_domain}"')
        if req.ttl < 0:
            raise GRPCError(Status.INVALID_ARGUMENT, "ttl cannot be negative")
        chain = await self.core.sign(self.core.ca.sign_x509_svid, csr.public_key(), sid, req.ttl or None, dns)
        await stream.send_message(svid_pb2.MintX509SVIDResponse(svid=svid_to_proto(str(sid), chain)))

    async def MintWITSVID(self, stream: Any) -> None:
        await stream.recv_message()
        raise GRPCError(Status.UNIMPLEMENTED, "WIT-SVIDs are not supported")

    async def BatchNewWITSVID(self, stream: Any) -> None:
        await stream.recv_message()
        raise GRPCError(Status.UNIMPLEMENTED, "WIT-SVIDs are not supported")

    async def MintJWTSVID(self, stream: Any) -> None:
        req = await stream.recv_message()
        try:
            sid = convert.id_from_proto(req.id, "SPIFFE ID", self.core.trust_domain)
        except convert.InvalidInput as exc:
            raise GRPCError(Status.INVALID_ARGUMENT, str(exc)) from None
        aud = _audience(req.audience)
        token = await self.core.sign(self.core.ca.sign_jwt_svid, sid, aud, req.ttl or None)
        await stream.send_message(svid_pb2.MintJWTSVIDResponse(svid=jwt_svid_to_proto(str(sid), token)))

    async def _authorized_entries(self, caller: Any) -> dict[str, Any]:
        agent = str(caller.spiffe_id)
        selectors = caller.agent_selectors if caller.is_agent else []  # read with its node by the middleware
        await self.core.refresh_cache()
        return self.core.cache.authorized(agent, selectors).by_id

    async def BatchNewX509SVID(self, stream: Any) -> None:
        req = await stream.recv_message()
        caller = caller_of(stream)
        entries = await self._authorized_entries(caller)
        params = list(req.params)
        # Large batches: signed across worker processes (server/ca/signing_pool.py).
        results = await self._sign_pooled(params, entries)
        if results is None:
            # One trip to the thread pool for the whole batch: per-item trips cost more than the
            # signing itself and let other requests interleave between the items.
            results = await self.core.sign(self._sign_batch, params, entries)
        await stream.send_message(svid_pb2.BatchNewX509SVIDResponse(results=results))

    async def _sign_pooled(self, params: list[Any], entries: dict[str, Any]) -> Optional[list[Any]]:
        """``_sign_batch`` with the CSRs parsed and signed in the signing pool; None when the
        batch is too small or the pool cannot sign it (then it is signed in-process)."""
        pool = self.core.signing_pool
        if pool is None or len(params) < MIN_POOLED_BATCH:
            return None
        Result = svid_pb2.BatchNewX509SVIDResponse.Result
        results: list[Any] = [None] * len(params)
        todo: list[tuple[int, Any]] = []
        for i, p in enumerate(params):
            e = entries.get(p.entry_id) if p.entry_id else None
            if not p.entry_id:
                results[i] = Result(status=status(Status.INVALID_ARGUMENT, "missing entry ID"))
            elif e is None:
                results[i] = Result(status=status(Status.NOT_FOUND, "entry not found or not authorized"))
            elif not p.csr:
                results[i] = Result(status=status(Status.INVALID_ARGUMENT, "missing CSR"))
            else:
                todo.append((i, e))
        items = [(bytes(params[i].csr), e.spiffe_id, e.x509_svid_ttl or None, list(e.dns_names)) for i, e in todo]
        try:
            signed = await self.core.ca.sign_x509_svids_pooled(pool, items) if items else []
        except (CARequestError, CAError):
            return None  # in-process signing reports it as it always has
        if signed is None:
            return None
        for (i, e), (code, message, chain, expires_at) in zip(todo, signed):
            if code:
                results[i] = Result(status=status(Status(code), message))
            else:
                results[i] = Result(status=OK, svid=x509svid_pb2.X509SVID(
                    id=id_to_proto(e.spiffe_id), cert_chain=chain, expires_at=expires_at))
        return results

    def _sign_batch(self, params: list[Any], entries: dict[str, Any]) -> list[Any]:
        """Check each param, parse its CSR and sign it; every item gets its own status."""
        Result = svid_pb2.BatchNewX509SVIDResponse.Result
        results = []
        for p in params:
            if not p.entry_id:
                results.append(Result(status=status(Status.INVALID_ARGUMENT, "missing entry ID")))
                continue
            e = entries.get(p.entry_id)
            if e is None:
                results.append(Result(status=status(Status.NOT_FOUND, "entry not found or not authorized")))
                continue
            if not p.csr:
                results.append(Result(status=status(Status.INVALID_ARGUMENT, "missing CSR")))
                continue
            try:
                csr = parse_csr(p.csr)
            except GRPCError as exc:
                results.append(Result(status=status(exc.status, exc.message or "malformed CSR")))
                continue
            try:
                chain = self.core.ca.sign_x509_svid(csr.public_key(), SpiffeId.parse(e.spiffe_id),
                                                    e.x509_svid_ttl or None, list(e.dns_names))
            except CARequestError as exc:
                results.append(Result(status=status(Status.INVALID_ARGUMENT, f"failed to sign X509-SVID: {exc}")))
                continue
            results.append(Result(status=OK, svid=svid_to_proto(e.spiffe_id, chain)))
        return results

    async def NewJWTSVID(self, stream: Any) -> None:
        req = await stream.recv_message()
        caller = caller_of(stream)
        aud = _audience(req.audience)
        if not req.entry_id:
            raise GRPCError(Status.INVALID_ARGUMENT, "missing entry ID")
        entries = await self._authorized_entries(caller)
        e = entries.get(req.entry_id)
        if e is None:
            raise GRPCError(Status.NOT_FOUND, "entry not found or not authorized")
        sid = SpiffeId.parse(e.spiffe_id)
        token = await self.core.sign(self.core.ca.sign_jwt_svid, sid, aud, e.jwt_svid_ttl or None)
        await stream.send_message(svid_pb2.NewJWTSVIDResponse(svid=jwt_svid_to_proto(e.spiffe_id, token)))

    async def NewDownstreamX509CA(self, stream: Any) -> None:
        req = await stream.recv_message()
        caller = caller_of(stream)
        csr = parse_csr(req.csr)
        if req.preferred_ttl < 0:
            raise GRPCError(Status.INVALID_ARGUMENT, "preferred TTL cannot be negative")
        chain = await self.core.sign(self.core.ca.sign_downstream_x509_ca, csr.public_key(), req.preferred_ttl or None)
        bundle = await self.core.db(self.core.datastore.fetch_bundle, self.core.trust_domain.id_string())
        _log.info("Signed downstream X.509 CA", extra=log.fields(caller=caller.describe()))
        await stream.send_message(svid_pb2.NewDownstreamX509CAResponse(
            ca_cert_chain=[c.public_bytes(serialization.Encoding.DER) for c in chain],
            x509_authorities=list(bundle.x509_authorities) if bundle else [],
        ))
