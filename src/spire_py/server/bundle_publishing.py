"""Hands the trust bundle to the Notifier and BundlePublisher plugins, as SPIRE's notifier and
bundle publishing managers.

At start every notifier is told the bundle was loaded (a failure stops the start, as SPIRE's
NotifyAndAdviseBundleLoaded) and every publisher publishes it. Then the bundle is read from the
datastore whenever ``core.bundle_changed`` is set (CA rotation, pruning, AppendBundle: this
manager is what waits on that event) and at least every ``REFRESH_INTERVAL`` (30 s, SPIRE's: it
also sees bundles other HA servers changed, and retries failed publications). Notifiers hear of
a bundle that differs from the last one they were told; publishers get every bundle and skip
those they published already.
"""

from __future__ import annotations

import asyncio
from typing import Optional, Sequence

from ..common import log
from ..common.bundle import Bundle
from ..common.plugin import Plugin
from .core import ServerCore
from .plugins.bundlepublisher.base import BundlePublisher
from .plugins.notifier.base import Notifier

_log = log.get("server.bundle_publishing")

REFRESH_INTERVAL = 30.0


class BundlePublishing:
    def __init__(self, core: ServerCore, plugins: Sequence[Plugin], refresh_interval: float = REFRESH_INTERVAL) -> None:
        self.core = core
        self.notifiers = [p for p in plugins if isinstance(p, Notifier)]
        self.publishers = [p for p in plugins if isinstance(p, BundlePublisher)]
        self.refresh_interval = refresh_interval
        self._notified: Optional[bytes] = None

    @property
    def active(self) -> bool:
        return bool(self.notifiers or self.publishers)

    async def _bundle(self) -> Optional[Bundle]:
        record = await self.core.db(self.core.datastore.fetch_bundle, self.core.trust_domain.id_string())
        return Bundle.from_record(record) if record is not None else None

    async def start(self) -> None:
        """Bundle loaded: notifiers first (fatal on failure), then a first publication."""
        bundle = await self._bundle()
        if bundle is None:
            return
        for n in self.notifiers:
            try:
                await n.bundle_loaded(bundle)
            except Exception as exc:
                raise RuntimeError(f'notifier "{n.NAME}" failed on bundle loaded: {exc}') from exc
        self._notified = bundle.to_json()
        await self._publish(bundle)

    async def _publish(self, bundle: Bundle) -> None:
        for p in self.publishers:
            try:
                await p.publish_bundle(bundle)
            except Exception as exc:  # the next change or refresh retries
                _log.error("Failed to publish bundle", extra=log.fields(plugin_name=p.NAME, error=str(exc)))

    async def tick(self) -> None:
        bundle = await self._bundle()
        if bundle is None:
            return
        key = bundle.to_json()
        if key != self._notified:
            failed = False
            for n in self.notifiers:
                try:
                    await n.bundle_updated(bundle)
                except Exception as exc:  # told again on the next change or refresh
                    failed = True
                    _log.error("Notifier failed to handle bundle update",
                               extra=log.fields(plugin_name=n.NAME, error=str(exc)))
            if not failed:
                self._notified = key
        await self._publish(bundle)

    async def run(self, stop: asyncio.Event) -> None:
        changed = self.core.bundle_changed
        while not stop.is_set():
            try:
                await asyncio.wait_for(changed.wait(), self.refresh_interval)
            except asyncio.TimeoutError:
                pass
            changed.clear()
            if stop.is_set():
                return
            try:
                await self.tick()
            except Exception as exc:  # e.g. the datastore is unreachable: keep going
                _log.error("Bundle publishing failed", extra=log.fields(error=str(exc)))
