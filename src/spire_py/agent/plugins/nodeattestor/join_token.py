"""NodeAttestor "join_token" (agent): sends the token given by config or -joinToken."""

from __future__ import annotations

from ....common.plugin import NoConfig, PluginContext, register
from ..context import AgentPluginContext
from .base import AgentAttestationError, AgentNodeAttestor


@register("agent")
class JoinTokenAttestor(AgentNodeAttestor):
    NAME = "join_token"

    def __init__(self, token: str) -> None:
        self.token = token

    @classmethod
    def from_config(cls, config: NoConfig, ctx: PluginContext) -> "JoinTokenAttestor":
        return cls(ctx.join_token if isinstance(ctx, AgentPluginContext) else "")

    async def payload(self) -> bytes:
        if not self.token:
            raise AgentAttestationError("join token is required: set join_token in the config or pass -joinToken")
        return self.token.encode()
