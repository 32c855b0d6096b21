"""What the agent hands its plugins at configure time, beyond the common context."""

from __future__ import annotations

from dataclasses import dataclass

from ...common.plugin import PluginContext


@dataclass
class AgentPluginContext(PluginContext):
    side: str = "agent"
    # join_token from the config file or -joinToken, for the join_token NodeAttestor.
    join_token: str = ""
