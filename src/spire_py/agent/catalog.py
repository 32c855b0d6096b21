"""The agent's plugins, as SPIRE's catalog: configured from the config in one place, handed
out by typed getters, closed on stop.

    catalog = AgentCatalog(config)
    catalog.check()            # validate: every plugin_data checked, nothing created
    catalog.load()             # run: configure them all (blocking; run it in a thread)
    catalog.node_attestor(); catalog.key_manager(); catalog.workload_attestors()
    await catalog.close()
"""

from __future__ import annotations

from typing import Optional, cast

from ..common.catalog import CatalogError, close_in_reverse
from ..common.daemon_config import check_plugins, configure_plugin
from ..common.plugin import Plugin
from . import plugins as _builtin_plugins  # noqa: F401  (registers the built-in plugins)
from .config import AgentConfig
from ..common.telemetry.telemetry import Sink as TelemetrySink, sinks_from_config
from .plugins.context import AgentPluginContext
from .plugins.keymanager.base import AgentKeyManager
from .plugins.nodeattestor.base import AgentNodeAttestor
from .plugins.workloadattestor.base import WorkloadAttestor




class AgentCatalog:
    def __init__(self, config: AgentConfig) -> None:
        self.config = config
        self._node_attestor: Optional[AgentNodeAttestor] = None
        self._key_manager: Optional[AgentKeyManager] = None
        self._workload_attestors: list[WorkloadAttestor] = []
        # Types SPIRE has and we have no plugin for yet: their lists stay empty.
        self._svid_stores: list[Plugin] = []
        self._telemetry_sinks: list[TelemetrySink] = []
        self._loaded: list[Plugin] = []  # in load order; closed in reverse

    def _context(self) -> AgentPluginContext:
        return AgentPluginContext(trust_domain=self.config.trust_domain, data_dir=self.config.data_dir,
                                  side="agent", join_token=self.config.join_token or "")

    # --- building -------------------------------------------------------------------
    def check(self) -> None:
        """Check every plugin's configuration without creating anything (``validate``);
        ConfigError naming file, line and key."""
        check_plugins("agent", self.config.plugins, self._context(), self.config)

    def load(self) -> None:
        """Configure every plugin in file order; blocking (keys and credentials are read)."""
        ctx = self._context()
        for spec in self.config.plugins:
            plugin = configure_plugin("agent", spec, ctx, self.config)
            self._loaded.append(plugin)
            if spec.type == "NodeAttestor":
                self._node_attestor = cast(AgentNodeAttestor, plugin)  # the registry maps each type to its base class
            elif spec.type == "KeyManager":
                self._key_manager = cast(AgentKeyManager, plugin)
            elif spec.type == "WorkloadAttestor":
                self._workload_attestors.append(cast(WorkloadAttestor, plugin))
            elif spec.type == "SVIDStore":
                self._svid_stores.append(plugin)
        # The telemetry block's sinks, not started: the agent starts them with its metrics.
        self._telemetry_sinks = sinks_from_config(self.config.telemetry, "spire_agent")

    async def close(self) -> None:
        """Close every loaded plugin, the last loaded first."""
        await close_in_reverse(self._loaded)

    # --- typed getters ----------------------------------------------------------------
    def node_attestor(self) -> AgentNodeAttestor:
        if self._node_attestor is None:
            raise CatalogError("no NodeAttestor loaded")
        return self._node_attestor

    def key_manager(self) -> AgentKeyManager:
        if self._key_manager is None:
            raise CatalogError("no KeyManager loaded")
        return self._key_manager

    def workload_attestors(self) -> list[WorkloadAttestor]:
        return list(self._workload_attestors)

    def svid_stores(self) -> list[Plugin]:
        return list(self._svid_stores)

    def telemetry_sinks(self) -> list[TelemetrySink]:
        return list(self._telemetry_sinks)
