"""KeyManager "memory" (agent): keys live and die with the process."""

from __future__ import annotations

from ....common.plugin import register
from .base import AgentKeyManager


@register("agent")
class MemoryKeyManager(AgentKeyManager):
    NAME = "memory"
