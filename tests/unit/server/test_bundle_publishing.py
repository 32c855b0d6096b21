"""The server hands its bundle to notifiers and publishers: at start, on bundle_changed, not twice."""

from __future__ import annotations

import asyncio
from typing import Any, Optional

import pytest

from spire_py.common.bundle import Bundle
from spire_py.common.spiffeid import TrustDomain
from spire_py.server.bundle_publishing import BundlePublishing
from spire_py.server.plugins.bundlepublisher.base import BundlePublisher
from spire_py.server.plugins.notifier.base import Notifier
from tests.integration.helpers.pki import make_ca


class Store:
    def __init__(self) -> None:
        self.bundle = Bundle("example.org")
        self.bundle.add_x509_authority(make_ca("Root A").cert)

    def fetch_bundle(self, td: str) -> Any:
        from spire_py.server.datastore.models import Bundle as Record

        r = self.bundle.to_record()
        return Record(r["trust_domain_id"], r["x509_authorities"], [])


class Core:
    def __init__(self) -> None:
        self.datastore = Store()
        self.trust_domain = TrustDomain("example.org")
        self.bundle_changed = asyncio.Event()

    async def db(self, fn: Any, *args: Any) -> Any:
        return fn(*args)


class Recorder(Notifier, BundlePublisher):  # type: ignore[misc]
    NAME = "recorder"

    def __init__(self, fail: Optional[str] = None) -> None:
        self.calls: list[tuple[str, int]] = []
        self.fail = fail

    async def bundle_updated(self, bundle: Bundle) -> None:
        if self.fail == "updated":
            raise RuntimeError("boom")
        self.calls.append(("updated", len(bundle.x509_authorities)))

    async def bundle_loaded(self, bundle: Bundle) -> None:
        if self.fail == "loaded":
            raise RuntimeError("boom")
        self.calls.append(("loaded", len(bundle.x509_authorities)))

    async def publish_bundle(self, bundle: Bundle) -> None:
        self.calls.append(("publish", len(bundle.x509_authorities)))


async def test_loaded_at_start_then_updated_on_change_only() -> None:
    core, rec = Core(), Recorder()
    bp = BundlePublishing(core, [rec], refresh_interval=60)  # type: ignore[arg-type]
    await bp.start()
    assert rec.calls == [("loaded", 1), ("publish", 1)]
    await bp.tick()  # nothing changed: publishers are asked (they skip), notifiers are not
    assert rec.calls[-1] == ("publish", 1) and ("updated", 1) not in rec.calls
    core.datastore.bundle.add_x509_authority(make_ca("Root B").cert)
    stop = asyncio.Event()
    task = asyncio.create_task(bp.run(stop))
    core.bundle_changed.set()
    for _ in range(200):
        if ("updated", 2) in rec.calls:
            break
        await asyncio.sleep(0.01)
    stop.set()
    task.cancel()
    assert ("updated", 2) in rec.calls and ("publish", 2) in rec.calls


async def test_failed_bundle_loaded_stops_the_start() -> None:
    bp = BundlePublishing(Core(), [Recorder(fail="loaded")])  # type: ignore[arg-type]
    with pytest.raises(RuntimeError, match='notifier "recorder" failed on bundle loaded: boom'):
        await bp.start()
