"""The server's plugins, as SPIRE's catalog: configured from the config in one place, in an
order that lets later plugins use earlier ones, handed out by typed getters, closed on stop.

    catalog = ServerCatalog(config)
    catalog.check()            # validate: every plugin_data checked, nothing opened
    catalog.load()             # run: configure them all (blocking; run it in a thread)
    catalog.data_store(); catalog.key_manager(); catalog.node_attestor_named("x509pop")
    await catalog.close()
"""

from __future__ import annotations

from typing import Optional, cast

from ..common.catalog import CatalogError, close_in_reverse
from ..common.daemon_config import check_plugins, configure_plugin
from ..common.plugin import Plugin
from . import plugins as _builtin_plugins  # noqa: F401  (registers the built-in plugins)
from .config import ServerConfig
from ..common.telemetry.telemetry import Sink as TelemetrySink, sinks_from_config
from .datastore.api import DataStore
from .datastore.telemetry import instrument
from .plugins.context import ServerPluginContext
from .plugins.keymanager.base import KeyManager
from .plugins.keymanager.telemetry import instrument as instrument_key_manager
from .plugins.nodeattestor.base import NodeAttestor
from .plugins.upstreamauthority.base import UpstreamAuthority


# DataStore first: attestors read bundles and take join tokens through it. Other types follow
# in file order.
LOAD_ORDER = ("DataStore", "KeyManager", "UpstreamAuthority", "NodeAttestor")



class ServerCatalog:
    def __init__(self, config: ServerConfig) -> None:
        self.config = config
        self._datastore: Optional[DataStore] = None
        self._key_manager: Optional[KeyManager] = None
        self._upstream: Optional[UpstreamAuthority] = None
        self._node_attestors: dict[str, NodeAttestor] = {}
        # Types SPIRE has and we have no plugin for yet: their lists stay empty.
        self._notifiers: list[Plugin] = []
        self._bundle_publishers: list[Plugin] = []
        self._telemetry_sinks: list[TelemetrySink] = []
        self._loaded: list[Plugin] = []  # in load order; closed in reverse

    def _context(self) -> ServerPluginContext:
        return ServerPluginContext(trust_domain=self.config.trust_domain, data_dir=self.config.data_dir,
                                   side="server", datastore=self._datastore)

    # --- building -------------------------------------------------------------------
    def check(self) -> None:
        """Check every plugin's configuration without opening anything (``validate``);
        ConfigError naming file, line and key."""
        check_plugins("server", self.config.plugins, self._context(), self.config)

    def load(self) -> None:
        """Configure every plugin; blocking (a database opens, files are read)."""
        specs = sorted(self.config.plugins,
                       key=lambda s: LOAD_ORDER.index(s.type) if s.type in LOAD_ORDER else len(LOAD_ORDER))
        for spec in specs:
            plugin = configure_plugin("server", spec, self._context(), self.config)
            self._loaded.append(plugin)
            if spec.type == "DataStore":
                # the registry maps each type to its base class; every call is counted (telemetry)
                self._datastore = instrument(cast(DataStore, plugin))
            elif spec.type == "KeyManager":
                self._key_manager = instrument_key_manager(cast(KeyManager, plugin))  # counted, as SPIRE's
            elif spec.type == "UpstreamAuthority":
                self._upstream = cast(UpstreamAuthority, plugin)
            elif spec.type == "NodeAttestor":
                self._node_attestors[spec.name] = cast(NodeAttestor, plugin)
            elif spec.type == "Notifier":
                self._notifiers.append(plugin)
            elif spec.type == "BundlePublisher":
                self._bundle_publishers.append(plugin)
        # The telemetry block's sinks, not started: the server starts them with its metrics.
        self._telemetry_sinks = sinks_from_config(self.config.telemetry, "spire_server")

    async def close(self) -> None:
        """Close every loaded plugin, the last loaded first (the datastore last)."""
        await close_in_reverse(self._loaded)

    # --- typed getters ----------------------------------------------------------------
    def data_store(self) -> DataStore:
        if self._datastore is None:
            raise CatalogError("no DataStore loaded")
        return self._datastore

    def key_manager(self) -> KeyManager:
        if self._key_manager is None:
            raise CatalogError("no KeyManager loaded")
        return self._key_manager

    def upstream_authority(self) -> Optional[UpstreamAuthority]:
        """None without one: the server's CA is then self-signed."""
        return self._upstream

    def node_attestors(self) -> dict[str, NodeAttestor]:
        return dict(self._node_attestors)

    def node_attestor_named(self, name: str) -> Optional[NodeAttestor]:
        return self._node_attestors.get(name)

    def notifiers(self) -> list[Plugin]:
        return list(self._notifiers)

    def bundle_publishers(self) -> list[Plugin]:
        return list(self._bundle_publishers)

    def telemetry_sinks(self) -> list[TelemetrySink]:
        return list(self._telemetry_sinks)
