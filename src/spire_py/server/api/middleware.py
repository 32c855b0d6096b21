"""The server's side of :mod:`common.rpc`: authorization by :data:`policy.POLICY`, SPIRE's
per-IP rate limits, ``disable_jwt_svids`` and the audit log, for every API method at once."""

from __future__ import annotations

import os
import uuid
from typing import TYPE_CHECKING, Any, Iterable

from google.protobuf.message import Message
from grpclib.const import Status
from grpclib.exceptions import GRPCError

from ...common import log, rpc
from ...common.grpc_codes import go_code
from ...common.ratelimit import PerAddressLimiter
from . import policy
from .auth import authorize, identify

if TYPE_CHECKING:
    from ..core import ServerCore

_audit = log.get("audit")

# Request fields an audit line never shows (join tokens, attestation payloads and challenge answers).
_SECRET_FIELDS = frozenset({"token", "payload", "challenge_response"})
_MAX_AUDIT_VALUE = 256
_MAX_AUDIT_FIELDS = 16


def _audit_value(value: Any, depth: int = 0) -> Any:
    if isinstance(value, bytes):
        return f"<{len(value)} bytes>"
    if isinstance(value, Message):
        if depth >= 3:
            return "{...}"
        inner = ", ".join(f"{d.name}: {_field_value(d.name, v, depth + 1)}" for d, v in value.ListFields())
        return rpc.bounded("{" + inner + "}", _MAX_AUDIT_VALUE)
    if isinstance(value, (bool, int, float)):
        return value
    if isinstance(value, str):
        return rpc.bounded(value, _MAX_AUDIT_VALUE)
    items = list(value)  # repeated field
    if len(items) > 4:
        return f"<{len(items)} items>"
    return rpc.bounded("[" + ", ".join(str(_audit_value(v, depth + 1)) for v in items) + "]", _MAX_AUDIT_VALUE)


def _field_value(name: str, value: Any, depth: int = 0) -> Any:
    return "<redacted>" if name in _SECRET_FIELDS else _audit_value(value, depth)


def request_fields(request: Any) -> dict[str, Any]:
    """The request's set fields, bounded and with secrets left out, as audit fields."""
    if not isinstance(request, Message):
        return {}
    out: dict[str, Any] = {}
    for desc, value in request.ListFields()[:_MAX_AUDIT_FIELDS]:
        out[desc.name] = _field_value(desc.name, value)
    return out


class Middleware:
    def __init__(self, core: "ServerCore") -> None:
        self.core = core
        cfg = core.config
        limits = getattr(cfg, "ratelimit", None)
        self.attestation = PerAddressLimiter(policy.ATTESTATION_LIMIT) if getattr(limits, "attestation", True) else None
        self.signing = PerAddressLimiter(policy.SIGNING_LIMIT) if getattr(limits, "signing", True) else None
        self.jwt_disabled = bool(getattr(cfg, "disable_jwt_svids", False))
        self.audit = bool(getattr(cfg, "audit_log_enabled", False))

    def server(self, services: Iterable[Any]) -> rpc.GuardedServer:
        return rpc.GuardedServer(services, guard=self.guard, on_request=self.on_request,
                                 observer=self.observe if self.audit else None, known_methods=policy.POLICY)

    async def guard(self, call: rpc.Call) -> None:
        allowed = policy.POLICY.get(call.method)
        if allowed is None:  # GuardedServer refuses to start in this case; never serve it open
            raise GRPCError(Status.PERMISSION_DENIED, "authorization denied: no policy for this method")
        call.caller = await identify(call.stream, self.core, allowed)
        authorize(call.caller, allowed)
        if self.jwt_disabled and call.method in policy.JWT_METHODS:
            raise GRPCError(Status.UNIMPLEMENTED, "JWT functionality is disabled")

    async def on_request(self, call: rpc.Call, request: Any) -> None:
        caller = call.caller
        if caller is None or caller.local or not caller.address:
            return  # SPIRE limits TCP callers only
        if self.attestation is not None and call.method in policy.ATTESTATION_METHODS:
            await self.attestation.wait(caller.address, 1)
        elif self.signing is not None and call.method in policy.SIGNING_METHODS:
            count = len(request.params) if call.method.endswith("/BatchNewX509SVID") else 1
            await self.signing.wait(caller.address, max(count, 1))

    def observe(self, call: rpc.Call, status: Status, message: str) -> None:
        """One structured line per API call, as SPIRE's audit log (``type=audit``)."""
        fields: dict[str, Any] = {"type": "audit", "request_id": str(uuid.uuid4()), "method": call.method}
        caller = call.caller
        if caller is not None:
            if caller.local:
                fields.update(caller_uid=caller.uid, caller_gid=caller.gid)
                if caller.pid:
                    fields["caller_path"] = _binary_of(caller.pid)
            else:
                if caller.address:
                    fields["caller_addr"] = caller.address
                if caller.spiffe_id is not None:
                    fields["caller_id"] = str(caller.spiffe_id)
        for key, value in request_fields(call.request).items():
            fields.setdefault(key, value)
        for key, value in call.extra.items():
            fields.setdefault(key, rpc.bounded(str(value), _MAX_AUDIT_VALUE))
        if status == Status.OK:
            fields["status"] = "success"
        else:
            fields.update(status="error", status_code=go_code(status.value), status_message=message)
        _audit.info("API accessed", extra=log.fields(**fields))


def _binary_of(pid: int) -> str:
    try:
        return os.readlink(f"/proc/{pid}/exe")
    except OSError:
        return ""
