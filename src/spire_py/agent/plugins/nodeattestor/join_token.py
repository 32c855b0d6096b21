"""NodeAttestor "join_token" (agent): sends the token given by config or -joinToken."""

from __future__ import annotations

from typing import Any

from ....common.plugin import PluginConfigError, PluginContext, register
from .base import AgentAttestationError, AgentNodeAttestor


@register("agent")
class JoinTokenAttestor(AgentNodeAttestor):
    NAME = "join_token"

    def __init__(self, token: str) -> None:
        self.token = token

    @classmethod
    def configure(cls, data: dict[str, Any], ctx: PluginContext) -> "JoinTokenAttestor":
        for key in data:
            raise PluginConfigError(f'unknown configuration key "{key}"', key)
        return cls(str(ctx.extra.get("join_token") or ""))

    async def payload(self) -> bytes:
        if not self.token:
            raise AgentAttestationError("join token is required: set join_token in the config or pass -joinToken")
        return self.token.encode()
