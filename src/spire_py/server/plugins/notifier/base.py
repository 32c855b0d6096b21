"""Notifier: told when the server's trust bundle is loaded at start and when it changes, as
SPIRE's plugin type (``server/bundle_publishing.py`` calls it). A failure of ``bundle_loaded``
stops the server's start, as SPIRE's NotifyAndAdvise; one of ``bundle_updated`` is logged."""

from __future__ import annotations

from ....common.bundle import Bundle
from ....common.errors import SpireError
from ....common.plugin import Plugin


class NotifyError(SpireError):
    """The notifier could not act on the bundle."""


class Notifier(Plugin):
    TYPE = "Notifier"

    async def bundle_loaded(self, bundle: Bundle) -> None:
        """At start; by default the same as an update."""
        await self.bundle_updated(bundle)

    async def bundle_updated(self, bundle: Bundle) -> None:
        raise NotImplementedError
