"""Keep the bundles of federated trust domains fresh (SPIRE's bundle client manager).

Relationships come from the config's ``federates_with`` and from the datastore
(created through the TrustDomain API); the config wins for a trust domain in both.
They are re-read every ``CONFIG_REFRESH`` seconds; each trust domain has one task
that fetches its endpoint's bundle, stores it when it differs from ours, and sleeps
for SPIRE's interval: a quarter of the bundle's refresh hint (at least a minute),
five minutes when the bundle has none, a minute when there is no bundle at all.
"""

from __future__ import annotations

import asyncio
import time
from dataclasses import dataclass
from typing import Any, Callable, Optional

from cryptography import x509

from ...common import log, telemetry
from ...common.bundle import Bundle as SpiffeBundle
from ...common.config.federation import FederatesWithConfig
from ...common.spiffeid import SpiffeId, TrustDomain
from ...common.telemetry.names import BUNDLE_MANAGER_FETCH, BUNDLE_MANAGER_UPDATE
from ..datastore.api import DataStore
from ..datastore.models import Bundle, JWTKey
from .client import FetchError, SpiffeAuth, fetch_bundle

_log = log.get("bundle_client")

CONFIG_REFRESH = 10.0
DEFAULT_REFRESH_INTERVAL = 300.0
MINIMUM_REFRESH_HINT = 60.0
ATTEMPTS_PER_REFRESH_HINT = 4
REFRESH_HINT_LEEWAY = 10


@dataclass(frozen=True)
class Relationship:
    bundle_endpoint_url: str
    profile: str
    endpoint_spiffe_id: str = ""


def next_refresh(b: Optional[Bundle]) -> float:
    """Seconds until the next fetch, from the bundle we hold after this one (SPIRE's rule)."""
    if b is None:
        return MINIMUM_REFRESH_HINT
    if b.refresh_hint <= 0:
        return DEFAULT_REFRESH_INTERVAL
    return max(float(b.refresh_hint), MINIMUM_REFRESH_HINT) / ATTEMPTS_PER_REFRESH_HINT


def to_record(b: SpiffeBundle) -> Bundle:
    rec = b.to_record()
    return Bundle(
        trust_domain_id=rec["trust_domain_id"], x509_authorities=list(rec["x509_authorities"]),
        jwt_authorities=[JWTKey(kid, der, exp) for kid, der, exp in rec["jwt_authorities"]],
        refresh_hint=rec["refresh_hint"], sequence_number=rec["sequence_number"],
    )


def _same(a: Bundle, b: Bundle) -> bool:
    def key(x: Bundle) -> Any:
        return (x.x509_authorities, [(k.key_id, k.public_key) for k in x.jwt_authorities], x.refresh_hint,
                x.sequence_number)
    return bool(key(a) == key(b))


class FederationManager:
    """``run()`` until cancelled; ``refresh_bundle_for(td)`` fetches now (RefreshBundle)."""

    def __init__(
        self,
        datastore: DataStore,
        db: Callable[..., Any],
        configured: dict[str, FederatesWithConfig],
        on_change: Callable[[], None],
    ) -> None:
        self.datastore = datastore
        self._db = db
        self._configured = {
            td: Relationship(c.bundle_endpoint_url, c.profile, c.endpoint_spiffe_id or "") for td, c in configured.items()
        }
        self._on_change = on_change
        self._relationships: dict[str, Relationship] = {}
        self._tasks: dict[str, asyncio.Task[None]] = {}
        self._kick: dict[str, asyncio.Event] = {}
        self._reload = asyncio.Lock()

    async def _load(self) -> dict[str, Relationship]:
        found: dict[str, Relationship] = {}
        token = ""
        while True:
            page, token = await self._db(self.datastore.list_federation_relationships, token, 500)
            for fr in page:
                found[fr.trust_domain] = Relationship(fr.bundle_endpoint_url, fr.bundle_endpoint_profile,
                                                      fr.endpoint_spiffe_id)
            if not token or not page:
                break
        found.update(self._configured)
        return found

    async def reload(self) -> None:
        async with self._reload:
            wanted = await self._load()
            for td in list(self._tasks):
                if td not in wanted:
                    _log.info("Trust domain no longer managed", extra=log.fields(trust_domain=td))
                    self._tasks.pop(td).cancel()
                    self._kick.pop(td, None)
            for td, rel in wanted.items():
                old = self._relationships.get(td)
                self._relationships[td] = rel
                if td not in self._tasks:
                    _log.info("Trust domain is now managed", extra=log.fields(
                        trust_domain=td, bundle_endpoint_url=rel.bundle_endpoint_url,
                        bundle_endpoint_profile=rel.profile))
                    self._kick[td] = asyncio.Event()
                    self._tasks[td] = asyncio.create_task(self._run_updater(td), name=f"federation-{td}")
                elif old != rel:
                    _log.info("Updated configuration for managed trust domain", extra=log.fields(
                        trust_domain=td, bundle_endpoint_url=rel.bundle_endpoint_url,
                        bundle_endpoint_profile=rel.profile))
            self._relationships = {td: r for td, r in self._relationships.items() if td in wanted}

    async def run(self) -> None:
        try:
            while True:
                try:
                    await self.reload()
                except Exception as exc:
                    _log.error("Failed to reload configs", extra=log.fields(error=str(exc)))
                await asyncio.sleep(CONFIG_REFRESH)
        finally:
            for t in self._tasks.values():
                t.cancel()

    async def refresh_bundle_for(self, trust_domain: str) -> bool:
        """Fetch now; False when the trust domain is not managed. Fetch errors propagate."""
        try:
            await self.reload()
        except Exception as exc:
            _log.error("Failed to reload configs", extra=log.fields(error=str(exc)))
        if trust_domain not in self._relationships:
            return False
        await self.update_bundle(trust_domain)
        return True

    async def update_bundle(self, td: str) -> tuple[Optional[Bundle], Optional[Bundle]]:
        """(local bundle, fetched bundle when it was new and stored)."""
        rel = self._relationships[td]
        trust_domain = TrustDomain.parse(td)
        local: Optional[Bundle] = await self._db(self.datastore.fetch_bundle, trust_domain.id_string())
        auth = None
        if rel.profile == "https_spiffe":
            endpoint_id = SpiffeId.parse(rel.endpoint_spiffe_id)
            holder = local if endpoint_id.trust_domain == trust_domain else await self._db(
                self.datastore.fetch_bundle, endpoint_id.trust_domain.id_string())
            if holder is None:
                raise FetchError("can't perform SPIFFE Authentication: local copy of bundle not found")
            auth = SpiffeAuth(endpoint_id, tuple(x509.load_der_x509_certificate(d) for d in holder.x509_authorities))
        try:
            fetched = to_record(await fetch_bundle(trust_domain, rel.bundle_endpoint_url, auth))
        except FetchError as exc:
            raise FetchError(f"failed to fetch federated bundle from endpoint: {exc}") from None
        if local is not None and _same(local, fetched):
            return local, None
        await self._db(self.datastore.set_bundle, fetched)
        self._on_change()
        return local, fetched

    async def _run_updater(self, td: str) -> None:
        kick = self._kick[td]
        while True:
            local: Optional[Bundle] = None
            fetched: Optional[Bundle] = None
            labels = (("trust_domain_id", td),)
            try:
                with telemetry.current().call(BUNDLE_MANAGER_FETCH, labels):
                    local, fetched = await self.update_bundle(td)
            except Exception as exc:
                _log.error("Error updating bundle", extra=log.fields(trust_domain=td, error=str(exc)))
                try:
                    local = await self._db(self.datastore.fetch_bundle, TrustDomain.parse(td).id_string())
                except Exception:
                    local = None
            if fetched is not None:
                telemetry.current().incr_counter(BUNDLE_MANAGER_UPDATE, labels=labels)
                _log.info("Bundle refreshed", extra=log.fields(trust_domain=td))
            wait = next_refresh(fetched or local)
            _log.debug("Scheduling next bundle refresh", extra=log.fields(
                trust_domain=td, at=time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(time.time() + wait))))
            try:
                await asyncio.wait_for(kick.wait(), wait)
            except asyncio.TimeoutError:
                pass
            kick.clear()
