"""spire.api.server.debug.v1.Debug (grpc.health.v1.Health, which the agent serves too, is common/health_service.py)."""

from __future__ import annotations

import time
from typing import Any, Callable

from ...common.registration_proto import id_to_proto
from ...common.x509util import X509SVIDError, spiffe_id_of
from ...proto.spire.api.server.debug.v1 import debug_grpc, debug_pb2
from ..core import ServerCore


class DebugService(debug_grpc.DebugBase):
    def __init__(self, core: ServerCore, started: float, svid_chain: Callable[[], list[Any]]) -> None:
        self.core = core
        self.started = started
        self.svid_chain = svid_chain

    async def GetInfo(self, stream: Any) -> None:
        await stream.recv_message()
        ds = self.core.datastore
        agents = await self.core.db(ds.count_attested_nodes)
        entries = await self.core.db(ds.count_entries)
        bundles = await self.core.db(ds.count_bundles)
        chain = []
        for cert in self.svid_chain():
            pb = debug_pb2.GetInfoResponse.Cert(
                expires_at=int(cert.not_valid_after_utc.timestamp()), subject=cert.subject.rfc4514_string())
            try:  # as SPIRE: the ID of each certificate that has one (intermediates: the trust domain's)
                pb.id.CopyFrom(id_to_proto(spiffe_id_of(cert)))
            except X509SVIDError:
                pass
            chain.append(pb)
        await stream.send_message(debug_pb2.GetInfoResponse(
            svid_chain=chain, uptime=int(time.time() - self.started), agents_count=agents,
            entries_count=entries, federated_bundles_count=max(0, bundles - 1)))

