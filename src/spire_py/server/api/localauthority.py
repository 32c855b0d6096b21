"""spire.api.server.localauthority.v1.LocalAuthority: forced rotation of the server's own authorities.

As SPIRE's service, on the CA manager's two slots per kind: Prepare makes a new authority in
the next slot (published in the bundle at once), Activate swaps it in (the current one
becomes OLD), Taint marks the OLD one tainted in the bundle (agents then re-sign the SVIDs
it signed; the server's own SVID is rotated by the maintenance loop), Revoke drops a tainted
authority from the bundle. Only the OLD authority may be tainted or revoked; with an
UpstreamAuthority the local X.509 authority is not tainted or revoked, its upstream signer
is (TaintX509UpstreamAuthority, RevokeX509UpstreamAuthority). Messages and codes are SPIRE's.
"""

from __future__ import annotations

import time
from typing import Any, Callable, Optional

from grpclib.const import Status
from grpclib.exceptions import GRPCError

from ...common import log
from ...common.grpc_codes import go_code
from ...proto.spire.api.server.localauthority.v1 import localauthority_grpc
from ...proto.spire.api.server.localauthority.v1 import localauthority_pb2 as pb
from ..ca.slots import ACTIVE, OLD, PREPARED, JWTKeySlot, X509CASlot
from ..core import ServerCore
from ..datastore.models import Bundle, JWTKey

_log = log.get("localauthority_api")


def _x509_state(slot: X509CASlot) -> pb.AuthorityState:
    return pb.AuthorityState(authority_id=slot.authority_id, expires_at=int(slot.not_after),
                             upstream_authority_subject_key_id=slot.upstream_authority_id)


def _jwt_state(slot: JWTKeySlot) -> pb.AuthorityState:
    return pb.AuthorityState(authority_id=slot.kid, expires_at=int(slot.not_after))


def _err(code: Status, msg: str, cause: Optional[str] = None) -> GRPCError:
    """SPIRE's MakeErr: the cause is appended except for NotFound."""
    return GRPCError(code, f"{msg}: {cause}" if cause and code != Status.NOT_FOUND else msg)


def _rpc_text(exc: GRPCError) -> str:
    return f"rpc error: code = {go_code(exc.status.value)} desc = {exc.message or ''}"


class LocalAuthorityService(localauthority_grpc.LocalAuthorityBase):
    def __init__(self, core: ServerCore) -> None:
        self.core = core

    @property
    def _manager(self) -> Any:
        return self.core.ca.manager

    @property
    def _td(self) -> str:
        return self.core.trust_domain.id_string()

    async def _run(self, what: str, fn: Callable[..., Any], *args: Any) -> Any:
        """A CA manager or datastore call off the loop; a failure is INTERNAL "<what>: <cause>"."""
        try:
            return await self.core.db(fn, *args)
        except GRPCError as exc:
            raise _err(Status.INTERNAL, what, _rpc_text(exc)) from None
        except Exception as exc:
            raise _err(Status.INTERNAL, what, str(exc)) from None

    async def _publish(self) -> None:
        """Store what the CA publishes now (a prepared authority) without waiting for the next tick."""
        rec = self.core.ca.bundle().to_record()
        b = Bundle(trust_domain_id=self._td, x509_authorities=list(rec["x509_authorities"]),
                   jwt_authorities=[JWTKey(k, der, exp) for k, der, exp in rec["jwt_authorities"]])
        await self.core.db(self.core.datastore.append_bundle, b)
        self.core.bundle_changed.set()

    # --- what the X.509 and JWT methods share (SPIRE's checks and wording are the same) -------------
    @staticmethod
    def _fill_state(resp: Any, current_id: str, nxt_id: str, nxt_status: str, state: Callable[[bool], Any]) -> Any:
        """GetXAuthorityState's answer; ``state(True)`` is the current slot's, ``state(False)`` the next's."""
        if not current_id:
            raise _err(Status.INTERNAL, "current slot does not contain authority ID")
        resp.active.CopyFrom(state(True))
        if nxt_id:
            if nxt_status == OLD:
                resp.old.CopyFrom(state(False))
            elif nxt_status == PREPARED:
                resp.prepared.CopyFrom(state(False))
        return resp

    @staticmethod
    def _check_activate(authority_id: str, nxt_id: str, nxt_status: str) -> None:
        if not authority_id:
            raise _err(Status.INVALID_ARGUMENT, "no authority ID provided")
        if authority_id != nxt_id:
            raise _err(Status.INVALID_ARGUMENT, "unexpected authority ID")
        if nxt_status != PREPARED:
            raise _err(Status.INTERNAL, "only Prepared authorities can be activated",
                       f"unsupported local authority status: {nxt_status}")

    @staticmethod
    def _check_taint(authority_id: str, current_id: str, nxt_id: str, nxt_status: str) -> None:
        if not authority_id:
            raise _err(Status.INVALID_ARGUMENT, "no authority ID provided")
        if authority_id == current_id:
            raise _err(Status.INVALID_ARGUMENT, "unable to taint current local authority")
        if authority_id != nxt_id:
            raise _err(Status.INVALID_ARGUMENT, "unexpected authority ID")
        if nxt_status != OLD:
            raise _err(Status.INVALID_ARGUMENT, "only Old local authorities can be tainted",
                       f"unsupported local authority status: {nxt_status}")

    # --- JWT ------------------------------------------------------------------------------------
    def _jwt_current(self) -> tuple[JWTKeySlot, JWTKeySlot]:
        current, nxt = self._manager.jwt_slots()
        if current.status != ACTIVE:
            raise _err(Status.UNAVAILABLE, "server is initializing")
        return current, nxt

    async def GetJWTAuthorityState(self, stream: Any) -> None:
        await stream.recv_message()
        current, nxt = self._jwt_current()
        await stream.send_message(self._fill_state(pb.GetJWTAuthorityStateResponse(), current.kid, nxt.kid, nxt.status,
                                                   lambda active: _jwt_state(current if active else nxt)))

    async def PrepareJWTAuthority(self, stream: Any) -> None:
        await stream.recv_message()
        self._jwt_current()
        await self._run("failed to prepare JWT authority", self._manager.prepare_jwt_now, time.time())
        await self._publish()
        _, nxt = self._manager.jwt_slots()
        await stream.send_message(pb.PrepareJWTAuthorityResponse(prepared_authority=_jwt_state(nxt)))

    async def ActivateJWTAuthority(self, stream: Any) -> None:
        req = await stream.recv_message()
        _, nxt = self._manager.jwt_slots()
        self._check_activate(req.authority_id, nxt.kid, nxt.status)
        await self._run("failed to activate JWT authority", self._manager.activate_jwt_now)
        current, _ = self._manager.jwt_slots()
        _log.info("JWT authority activated", extra=log.fields(local_authority_id=current.kid))
        await stream.send_message(pb.ActivateJWTAuthorityResponse(activated_authority=_jwt_state(current)))

    async def TaintJWTAuthority(self, stream: Any) -> None:
        req = await stream.recv_message()
        current, nxt = self._manager.jwt_slots()
        self._check_taint(req.authority_id, current.kid, nxt.kid, nxt.status)
        await self._run("failed to taint JWT authority", self.core.datastore.taint_jwt_key, self._td, nxt.kid)
        self.core.bundle_changed.set()
        _log.info("JWT authority tainted successfully", extra=log.fields(local_authority_id=nxt.kid))
        await stream.send_message(pb.TaintJWTAuthorityResponse(tainted_authority=pb.AuthorityState(
            authority_id=nxt.kid)))

    async def RevokeJWTAuthority(self, stream: Any) -> None:
        req = await stream.recv_message()
        why = await self._invalid_jwt_authority(req.authority_id)
        if why:
            raise _err(Status.INVALID_ARGUMENT, "invalid authority ID", why)
        await self._run("failed to revoke JWT authority", self.core.datastore.revoke_jwt_key, self._td,
                        req.authority_id)
        self._manager.forget_jwt_key(req.authority_id)
        self.core.bundle_changed.set()
        _log.info("JWT authority revoked successfully", extra=log.fields(local_authority_id=req.authority_id))
        await stream.send_message(pb.RevokeJWTAuthorityResponse(revoked_authority=pb.AuthorityState(
            authority_id=req.authority_id)))

    async def _invalid_jwt_authority(self, authority_id: str) -> str:
        if not authority_id:
            return "no authority ID provided"
        current, nxt = self._manager.jwt_slots()
        if authority_id == nxt.kid:
            return "unable to use a prepared key" if nxt.status == PREPARED else ""
        if authority_id == current.kid:
            return "unable to use current authority"
        b = await self.core.db(self.core.datastore.fetch_bundle, self._td)
        if b is not None and any(k.key_id == authority_id for k in b.jwt_authorities):
            return ""
        return "no JWT authority found with provided authority ID"

    # --- X.509 ----------------------------------------------------------------------------------
    def _x509_current(self) -> tuple[X509CASlot, X509CASlot]:
        current, nxt = self._manager.x509_slots()
        if current.status != ACTIVE:
            raise _err(Status.UNAVAILABLE, "server is initializing")
        return current, nxt

    async def GetX509AuthorityState(self, stream: Any) -> None:
        await stream.recv_message()
        current, nxt = self._x509_current()
        await stream.send_message(self._fill_state(
            pb.GetX509AuthorityStateResponse(), current.authority_id, nxt.authority_id, nxt.status,
            lambda active: _x509_state(current if active else nxt)))

    async def PrepareX509Authority(self, stream: Any) -> None:
        await stream.recv_message()
        self._x509_current()
        await self._run("failed to prepare X.509 authority", self._manager.prepare_x509_now, time.time())
        await self._publish()
        _, nxt = self._manager.x509_slots()
        await stream.send_message(pb.PrepareX509AuthorityResponse(prepared_authority=_x509_state(nxt)))

    async def ActivateX509Authority(self, stream: Any) -> None:
        req = await stream.recv_message()
        _, nxt = self._manager.x509_slots()
        self._check_activate(req.authority_id, nxt.authority_id, nxt.status)
        await self._run("failed to activate X.509 authority", self._manager.activate_x509_now)
        current, _ = self._manager.x509_slots()
        _log.info("X.509 authority activated", extra=log.fields(local_authority_id=current.authority_id))
        await stream.send_message(pb.ActivateX509AuthorityResponse(activated_authority=_x509_state(current)))

    def _has_upstream(self) -> bool:
        return self._manager.upstream is not None

    async def TaintX509Authority(self, stream: Any) -> None:
        req = await stream.recv_message()
        if self._has_upstream():
            raise _err(Status.FAILED_PRECONDITION, "local authority can't be tainted if there is an upstream authority")
        current, nxt = self._manager.x509_slots()
        self._check_taint(req.authority_id, current.authority_id, nxt.authority_id, nxt.status)
        await self._run("failed to taint X.509 authority", self.core.datastore.taint_x509_ca, self._td,
                        nxt.authority_id)
        self.core.bundle_changed.set()
        _log.info("X.509 authority tainted successfully", extra=log.fields(local_authority_id=nxt.authority_id))
        await stream.send_message(pb.TaintX509AuthorityResponse(tainted_authority=_x509_state(nxt)))

    async def RevokeX509Authority(self, stream: Any) -> None:
        req = await stream.recv_message()
        if self._has_upstream():
            raise _err(Status.FAILED_PRECONDITION, "local authority can't be revoked if there is an upstream authority")
        current, nxt = self._manager.x509_slots()
        why = ""
        if not req.authority_id:
            why = "no authority ID provided"
        elif req.authority_id == current.authority_id:
            why = "unable to use current authority"
        elif req.authority_id != nxt.authority_id or nxt.status != OLD:
            why = "only Old local authority can be revoked"
        if why:
            raise _err(Status.INVALID_ARGUMENT, "invalid authority ID", why)
        await self._run("failed to revoke X.509 authority", self.core.datastore.revoke_x509_ca, self._td,
                        req.authority_id)
        self._manager.forget_x509_authority(req.authority_id)
        self.core.bundle_changed.set()
        _log.info("X.509 authority revoked successfully", extra=log.fields(local_authority_id=req.authority_id))
        await stream.send_message(pb.RevokeX509AuthorityResponse(revoked_authority=pb.AuthorityState(
            authority_id=req.authority_id)))

    def _invalid_upstream_authority(self, skid: str) -> str:
        if not skid:
            return "no subject key ID provided"
        current, nxt = self._manager.x509_slots()
        if skid == current.upstream_authority_id:
            return "unable to use upstream authority singing current authority"  # sic, SPIRE's wording
        if skid != nxt.upstream_authority_id:
            return "upstream authority didn't sign the old local authority"
        if nxt.status == PREPARED:
            return "only upstream authorities signing an old authority can be used"
        return ""

    async def TaintX509UpstreamAuthority(self, stream: Any) -> None:
        req = await stream.recv_message()
        if not self._has_upstream():
            raise _err(Status.FAILED_PRECONDITION, "upstream authority is not configured")
        skid = req.subject_key_id.lower()
        why = self._invalid_upstream_authority(skid)
        if why:
            raise _err(Status.INVALID_ARGUMENT, "provided subject key id is not valid", why)
        await self._run("failed to taint upstream authority", self.core.datastore.taint_x509_ca, self._td, skid)
        self.core.bundle_changed.set()
        _log.info("X.509 upstream authority tainted successfully", extra=log.fields(subject_key_id=skid))
        await stream.send_message(pb.TaintX509UpstreamAuthorityResponse(upstream_authority_subject_key_id=skid))

    async def RevokeX509UpstreamAuthority(self, stream: Any) -> None:
        req = await stream.recv_message()
        if not self._has_upstream():
            raise _err(Status.FAILED_PRECONDITION, "upstream authority is not configured")
        skid = req.subject_key_id.lower()
        why = self._invalid_upstream_authority(skid)
        if why:
            raise _err(Status.INVALID_ARGUMENT, "invalid subject key ID", why)
        await self._run("failed to revoke X.509 upstream authority", self.core.datastore.revoke_x509_ca,
                        self._td, skid)
        self._manager.forget_x509_authority(skid)
        self.core.bundle_changed.set()
        _log.info("X.509 upstream authority successfully revoked", extra=log.fields(subject_key_id=skid))
        await stream.send_message(pb.RevokeX509UpstreamAuthorityResponse(upstream_authority_subject_key_id=skid))

    # --- WIT: not supported -----------------------------------------------------------------------
    async def _wit(self, stream: Any) -> None:
        await stream.recv_message()
        raise _err(Status.UNIMPLEMENTED, "WIT-SVID functionality is not yet implemented")

    async def GetWITAuthorityState(self, stream: Any) -> None:
        await self._wit(stream)

    async def PrepareWITAuthority(self, stream: Any) -> None:
        await self._wit(stream)

    async def ActivateWITAuthority(self, stream: Any) -> None:
        await self._wit(stream)

    async def TaintWITAuthority(self, stream: Any) -> None:
        await self._wit(stream)

    async def RevokeWITAuthority(self, stream: Any) -> None:
        await self._wit(stream)
