"""NodeAttestor "join_token" (server): single-use, expiring tokens made by the admin API."""

from __future__ import annotations

import asyncio
import time
from typing import Any

from grpclib.const import Status

from ....common.plugin import PluginConfigError, PluginContext, register
from ....common.spiffeid import TrustDomain, agent_id
from .base import AttestationError, AttestResult, Challenge, NodeAttestor


@register("server")
class JoinTokenAttestor(NodeAttestor):
    NAME = "join_token"

    def __init__(self, trust_domain: TrustDomain, datastore: Any) -> None:
        self.trust_domain = trust_domain
        self.datastore = datastore

    @classmethod
    def configure(cls, data: dict[str, Any], ctx: PluginContext) -> "JoinTokenAttestor":
        for key in data:
            raise PluginConfigError(f'unknown configuration key "{key}"', key)
        return cls(TrustDomain(ctx.trust_domain), ctx.extra.get("datastore"))

    async def attest(self, payload: bytes, challenge: Challenge) -> AttestResult:
        token = payload.decode("utf-8", "replace").strip()
        if not token:
            raise AttestationError("missing join token in attestation data", Status.INVALID_ARGUMENT)
        # Taking the token deletes it in the same transaction: a token attests exactly once.
        taken = await asyncio.to_thread(self.datastore.take_join_token, token)
        if taken is None:
            raise AttestationError("failed to attest: join token does not exist or has already been used")
        if taken.expires_at < int(time.time()):
            raise AttestationError("join token expired")
        return AttestResult(agent_id(self.trust_domain, "join_token", token), [], can_reattest=False)
