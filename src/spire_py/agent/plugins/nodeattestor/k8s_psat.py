"""NodeAttestor "k8s_psat" (agent): the projected service account token of the agent's pod.

As SPIRE's agent plugin: the token is read from ``token_path`` (default
``/var/run/secrets/tokens/spire-agent``) at every attestation, as the kubelet rotates it, and
sent with the ``cluster`` name as SPIRE's ``{"cluster": ..., "token": ...}`` payload.
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass

from ....common.plugin import STR, Field, PluginConfigError, PluginContext, Schema, register
from ....common.plugins import k8s
from .base import AgentAttestationError, AgentNodeAttestor


def load_token(path: str) -> str:
    try:
        with open(path, "rb") as f:
            data = f.read(k8s.MAX_PAYLOAD_BYTES + 1)
    except OSError as exc:
        raise AgentAttestationError(f"unable to load token from {path}: {exc.strerror or exc}") from None
    if not data:
        raise AgentAttestationError(f'unable to load token from {path}: "{path}" is empty')
    if len(data) > k8s.MAX_PAYLOAD_BYTES:
        raise AgentAttestationError(f"unable to load token from {path}: larger than {k8s.MAX_PAYLOAD_BYTES} bytes")
    try:
        return data.decode()
    except UnicodeDecodeError:
        raise AgentAttestationError(f"unable to load token from {path}: not UTF-8 text") from None


@dataclass
class PSATAgentConfig:
    cluster: str
    token_path: str


@register("agent")
class PSATAttestor(AgentNodeAttestor):
    NAME = k8s.PSAT_PLUGIN_NAME
    CONFIG = Schema([
        Field("cluster", STR, default=""),
        Field("token_path", STR, default=""),
    ])
    CONFIG_TYPE = PSATAgentConfig

    def __init__(self, cluster: str, token_path: str) -> None:
        self.cluster = cluster
        self.token_path = token_path

    @classmethod
    def validate(cls, config: PSATAgentConfig, ctx: PluginContext) -> None:
        if not config.cluster:
            raise PluginConfigError("missing required cluster block", "cluster")

    @classmethod
    def from_config(cls, config: PSATAgentConfig, ctx: PluginContext) -> "PSATAttestor":
        return cls(config.cluster, config.token_path or k8s.DEFAULT_PSAT_TOKEN_PATH)

    async def payload(self) -> bytes:
        token = await asyncio.to_thread(load_token, self.token_path)
        return k8s.PSATAttestationData(self.cluster, token).encode()
