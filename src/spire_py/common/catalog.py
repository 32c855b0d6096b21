"""What both sides' catalogs (server/catalog.py, agent/catalog.py) share: their error and
closing every loaded plugin, the last loaded first, whatever one of them raises."""

from __future__ import annotations

import inspect
from . import log
from .errors import SpireError
from .plugin import Plugin

_log = log.get("catalog")


class CatalogError(SpireError, RuntimeError):
    """A getter asked for a plugin that was not loaded (load() not called, or not configured)."""


async def close_in_reverse(loaded: list[Plugin]) -> None:
    """Close and forget ``loaded``, last first; one plugin failing to close must not keep the others open."""
    while loaded:
        plugin = loaded.pop()
        try:
            result = plugin.close()
            if inspect.isawaitable(result):
                await result
        except Exception as exc:
            _log.warning("Failed to close plugin", extra=log.fields(plugin=type(plugin).__name__, error=str(exc)))


__all__ = ["CatalogError", "close_in_reverse"]
