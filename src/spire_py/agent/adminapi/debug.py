"""spire.agent.debug.v1.Debug: the agent's own state for ``spire-agent debug getinfo``.

As SPIRE: the agent SVID's chain verified against the agent's bundle (leaf to root), uptime,
the cached SVID counts and the last successful sync; the answer is reused for 5 seconds.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Any, Callable, Optional

from cryptography import x509
from grpclib.const import Status
from grpclib.exceptions import GRPCError

from ...common import log
from ...common.registration_proto import id_to_proto
from ...common.x509util import X509SVIDError, spiffe_id_of, verify_chain
from ...proto.spire.api.agent.debug.v1 import debug_grpc, debug_pb2

_log = log.get("debug_api")

CACHE_EXPIRY = 5.0
INT32_MAX = 2**31 - 1


@dataclass
class AgentInfo:
    """What the agent hands the Debug API on each (uncached) call."""

    svid: list[x509.Certificate]
    roots: list[x509.Certificate]
    cached_x509_svids: int
    cached_jwt_svids: int
    last_sync_success: float  # Unix seconds; 0 before the first successful sync


def _int32(value: float, what: str) -> int:
    n = int(value)
    if not 0 <= n <= INT32_MAX:
        raise GRPCError(Status.INTERNAL, f"out of range value for {what}")
    return n


class DebugService(debug_grpc.DebugBase):
    def __init__(self, info: Callable[[], AgentInfo], started: float,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self.info = info
        self.started = started
        self.clock = clock
        self._cached: Optional[tuple[float, debug_pb2.GetInfoResponse]] = None

    def _response(self) -> debug_pb2.GetInfoResponse:
        info = self.info()
        try:
            chain = verify_chain(info.svid[0], info.svid[1:], info.roots) if info.svid else []
        except X509SVIDError as exc:
            _log.error("Failed to verify agent SVID", extra=log.fields(error=str(exc)))
            raise GRPCError(Status.INTERNAL, f"failed to verify agent SVID: {exc}") from None
        resp = debug_pb2.GetInfoResponse(
            uptime=_int32(time.time() - self.started, "uptime"),
            svids_count=_int32(info.cached_x509_svids, "X.509 SVIDs count"),
            cached_x509_svids_count=_int32(info.cached_x509_svids, "X.509 SVIDs count"),
            cached_jwt_svids_count=_int32(info.cached_jwt_svids, "JWT SVIDs count"),
            cached_svidstore_x509_svids_count=0,  # no SVIDStore plugins
            last_sync_success=int(info.last_sync_success))
        for cert in chain:
            c = resp.svid_chain.add(expires_at=int(cert.not_valid_after_utc.timestamp()),
                                    subject=cert.subject.rfc4514_string())
            try:
                c.id.CopyFrom(id_to_proto(spiffe_id_of(cert)))
            except X509SVIDError:
                c.ClearField("id")  # a CA without a SPIFFE ID: no id, as SPIRE
        return resp

    async def GetInfo(self, stream: Any) -> None:
        await stream.recv_message()
        now = self.clock()
        if self._cached is None or now - self._cached[0] >= CACHE_EXPIRY:
            self._cached = (now, self._response())
        await stream.send_message(self._cached[1])
