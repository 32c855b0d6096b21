"""What the server hands its plugins at configure time, beyond the common context."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Optional

from ...common.plugin import PluginContext
from ..datastore.api import DataStore


@dataclass
class ServerPluginContext(PluginContext):
    # The DataStore, configured first, for attestors that read bundles or take join tokens.
    datastore: Optional[DataStore] = None


def datastore_of(ctx: PluginContext) -> Optional[DataStore]:
    """The datastore when the host gave one (tests may configure attestors without it)."""
    return ctx.datastore if isinstance(ctx, ServerPluginContext) else None
