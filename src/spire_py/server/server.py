"""spire-server run: wires plugins, CA, datastore and APIs, then serves until signalled."""

from __future__ import annotations

import asyncio
import os
import signal
import time
from typing import Any, Optional

from cryptography import x509
from grpclib.server import Server as GrpcServer

from ..common import health as health_http
from ..common import eventloop, gcsettle, log, sdnotify, telemetry, tls
from ..common.bundle import Bundle as SpiffeBundle
from ..common.health_service import HealthService
from ..common.keys import generate_key
from ..common.spiffeid import TrustDomain, server_id
from ..common.telemetry.names import (AGENTS_COUNT, CA_BUNDLE_PRUNE, CA_BUNDLE_PRUNED, CA_X509_CA_EXPIRATION,
                                      CA_X509_CA_TTL, ENTRY_CACHE_COUNT, ENTRY_CACHE_RELOAD, SERVER_SVID_ROTATE)
from ..common.telemetry.telemetry import Telemetry
from .api.agent import AgentService
from .api.bundle import BundleService
from .api.entry import EntryService
from .api.health import DebugService
from .api.localauthority import LocalAuthorityService
from .api.logger import LoggerService
from .api.middleware import Middleware
from .api.svid import SVIDService
from .api.trustdomain import TrustDomainService
from .bundle_publishing import BundlePublishing
from .ca.ca import ServerCA
from .ca.journal import DatastoreJournal
from .cache import EntryCache
from .catalog import ServerCatalog
from .core import ServerCore
from .datastore.models import Bundle, JWTKey
from .federation.endpoint import BundleEndpoint
from .federation.manager import FederationManager
from . import proxy_protocol
from .pruning import EntryPruner, NodePruner
from .upstream_taints import sync_upstream_authorities

_log = log.get("server")

SERVER_SVID_KEY = "ec-p256"
TICK = 5.0
JOIN_TOKEN_GRACE = 3600
EVENT_PRUNE_INTERVAL = 600.0
MIN_TICK = 0.5
# As SPIRE: expired authorities stay in the bundle a while, for relying parties with skewed clocks.
BUNDLE_PRUNE_SAFETY = 24 * 3600.0


def maintenance_tick(ca_ttl: float) -> float:
    """Every 5 s, or often enough that a short ca_ttl (tests, demos) still rotates on time."""
    return max(MIN_TICK, min(TICK, ca_ttl / 20))


def bundle_prune_safety(ca_ttl: float) -> float:
    """SPIRE's 24 h, or one ca_ttl when that is shorter, so expired roots do leave short-lived bundles."""
    return min(BUNDLE_PRUNE_SAFETY, ca_ttl)


class SpireServer:
    def __init__(self, config: Any) -> None:
        self.config = config
        self.trust_domain = TrustDomain(config.trust_domain)
        self.started = time.time()
        self.ready = False
        self.core: Optional[ServerCore] = None
        self._servers: list[GrpcServer] = []
        self._health: Optional[health_http.HealthListener] = None
        self._tls: Optional[tls.RotatingServerContext] = None
        self._svid_chain: list[x509.Certificate] = []
        self._identity: Optional[tuple[list[x509.Certificate], Any]] = None  # the server SVID and its key
        self._roots: list[x509.Certificate] = []
        self._stop = asyncio.Event()
        self._tasks: list[asyncio.Task[None]] = []
        self.catalog = ServerCatalog(config)
        self.telemetry: Optional[Telemetry] = None
        self.federation: Optional[FederationManager] = None
        self.bundle_endpoint: Optional[BundleEndpoint] = None

    # --- plugins -------------------------------------------------------------------
    def check_plugins(self) -> None:
        """Check every plugin's configuration without starting anything (``validate``)."""
        self.catalog.check()

    def load_plugins(self) -> ServerCatalog:
        self.catalog.load()
        return self.catalog

    # --- start-up ------------------------------------------------------------------
    async def start(self) -> None:
        cfg = self.config
        self.check_plugins()  # every plugin's config is checked before anything touches disk
        os.makedirs(cfg.data_dir, mode=0o700, exist_ok=True)
        catalog = await asyncio.to_thread(self.load_plugins)
        # Telemetry first: the CA's start-up and every RPC server built below record into it.
        self.telemetry = Telemetry(cfg.telemetry, "spire_server", self.trust_domain.name, catalog.telemetry_sinks())
        self.telemetry.serve_with(lambda: self._identity, lambda: self._roots)  # Prometheus tls use_spire_svid
        await self.telemetry.start()
        datastore = catalog.data_store()

        ca = ServerCA(
            trust_domain=self.trust_domain,
            key_manager=catalog.key_manager(),
            upstream=catalog.upstream_authority(),
            ca_key_type=cfg.ca_key_type,
            jwt_key_type=cfg.jwt_key_type,
            ca_ttl=cfg.ca_ttl,
            ca_subject=cfg.ca_subject,
            x509_svid_ttl=cfg.default_x509_svid_ttl,
            jwt_svid_ttl=cfg.default_jwt_svid_ttl,
            jwt_issuer=cfg.jwt_issuer or None,
            journal_store=DatastoreJournal(datastore),
        )
        core = ServerCore(
            config=cfg,
            trust_domain=self.trust_domain,
            datastore=datastore,
            ca=ca,
            cache=EntryCache(datastore, self.trust_domain),
            node_attestors=catalog.node_attestors(),
            admin_ids=set(cfg.admin_ids or []),
        )
        core.agent_ttl = cfg.agent_ttl or None
        self.core = core
        await core.sign(ca.start)
        await self._publish_bundle()
        bundles = BundlePublishing(core, catalog.notifiers() + catalog.bundle_publishers())
        if bundles.active:
            await bundles.start()  # notifiers hear "bundle loaded" (fatal on failure, as SPIRE)
            self._tasks.append(asyncio.create_task(bundles.run(self._stop), name="bundle-publishing"))
        await core.refresh_cache()
        self._start_federation(core)
        self._rotate_server_svid()

        services = [
            AgentService(core), EntryService(core), BundleService(core), SVIDService(core),
            DebugService(core, self.started, lambda: self._svid_chain), HealthService(lambda: self.ready),
            TrustDomainService(core, self.federation),  # type: ignore[arg-type]
            LoggerService(), LocalAuthorityService(core),
        ]
        middleware = Middleware(core)  # one set of rate limiters and policy for both listeners
        await self._listen_admin(middleware.server(services))
        await self._listen_tcp(middleware.server(services))
        if self.bundle_endpoint is not None:
            await self.bundle_endpoint.start()
        assert self.federation is not None
        self._tasks.append(asyncio.create_task(self.federation.run(), name="federation"))
        hc = cfg.health_checks
        if hc.listener_enabled:
            self._health = health_http.HealthListener(
                hc.bind_address, hc.bind_port, hc.live_path, hc.ready_path, lambda: True, lambda: self.ready)
            await self._health.start()
        self._tasks.append(asyncio.create_task(self._maintain(), name="maintain"))
        gcsettle.settle()  # start-up objects stay out of full collections, which become rare
        self.ready = True
        sdnotify.ready("serving")
        _log.info("Starting Server APIs", extra=log.fields(
            address=f"{cfg.bind_address}:{cfg.bind_port}", socket_path=cfg.socket_path,
            event_loop=eventloop.current_name()))

    async def _listen_admin(self, server: GrpcServer) -> None:
        path = self.config.socket_path
        d = os.path.dirname(path) or "."
        os.makedirs(d, mode=0o770, exist_ok=True)
        if os.path.exists(path):
            os.unlink(path)
        old = os.umask(0o077)
        try:
            await server.start(path=path)
        finally:
            os.umask(old)
        os.chmod(path, 0o770)
        self._servers.append(server)

    async def _listen_tcp(self, server: GrpcServer) -> None:
        assert self._tls is not None
        tls.small_tls_read_buffers()  # one buffer per connected agent: thousands of them
        if self.config.proxy_protocol_trusted_cidrs:
            await proxy_protocol.start_server(server, self.config.bind_address, self.config.bind_port,
                                              self._tls.listener, self.config.proxy_protocol_trusted_cidrs)
        else:
            await server.start(self.config.bind_address, self.config.bind_port, ssl=self._tls.listener,
                               reuse_address=True)
        self._servers.append(server)

    # --- federation ----------------------------------------------------------------------
    def _start_federation(self, core: ServerCore) -> None:
        fed = self.config.federation
        self.federation = FederationManager(core.datastore, core.db, fed.federates_with, core.bundle_changed.set)
        if fed.bundle_endpoint is not None:
            self.bundle_endpoint = BundleEndpoint(fed.bundle_endpoint, self._own_bundle)

    async def _own_bundle(self) -> SpiffeBundle:
        assert self.core is not None
        b = await self.core.db(self.core.datastore.fetch_bundle, self.trust_domain.id_string())
        if b is None:
            raise LookupError("bundle not found")
        return SpiffeBundle.from_record(b)

    # --- bundle and server SVID ------------------------------------------------------
    async def _publish_bundle(self) -> None:
        """Store the CA's current bundle (roots and JWT keys) as the trust domain bundle."""
        assert self.core is not None
        b = self.core.ca.bundle()
        record = b.to_record()
        bundle = Bundle(
            trust_domain_id=self.trust_domain.id_string(),
            x509_authorities=list(record["x509_authorities"]),
            jwt_authorities=[JWTKey(key_id=k, public_key=pk, expires_at=exp) for k, pk, exp in record["jwt_authorities"]],
            refresh_hint=record.get("refresh_hint", 0),
        )
        current = await self.core.db(self.core.datastore.fetch_bundle, bundle.trust_domain_id)
        if current is None and bundle.jwt_authorities:
            # As SPIRE: the X.509 CA creates the bundle, the JWT key's append bumps its sequence to 1.
            await self.core.db(self.core.datastore.append_bundle, Bundle(
                trust_domain_id=bundle.trust_domain_id, x509_authorities=list(bundle.x509_authorities)))
        merged = await self.core.db(self.core.datastore.append_bundle, bundle)
        if current is None or (merged.x509_authorities, merged.jwt_authorities) != (current.x509_authorities, current.jwt_authorities):
            self.core.bundle_changed.set()
        self._roots = [x509.load_der_x509_certificate(der) for der in merged.x509_authorities]

    async def _prune_bundle(self) -> bool:
        """Drop authorities that expired more than the safety margin ago; True when any went."""
        assert self.core is not None
        expires_before = int(time.time() - bundle_prune_safety(self.core.ca.ca_ttl))
        try:
            with telemetry.current().call(CA_BUNDLE_PRUNE):
                pruned = bool(await self.core.db(self.core.datastore.prune_bundle, self.trust_domain.id_string(),
                                                 expires_before))
        except Exception as exc:  # e.g. it would empty the bundle: keep it, retry next tick
            _log.warning("Unable to prune bundle", extra=log.fields(error=str(exc)))
            return False
        if pruned:
            telemetry.current().incr_counter(CA_BUNDLE_PRUNED)
            self.core.bundle_changed.set()
            _log.info("Expired authorities pruned from the bundle", extra=log.fields(expires_before=expires_before))
        return pruned

    @telemetry.calls(SERVER_SVID_ROTATE)
    def _rotate_server_svid(self) -> None:
        assert self.core is not None
        key = generate_key(SERVER_SVID_KEY)
        chain = self.core.ca.sign_x509_svid(key.public_key(), server_id(self.trust_domain), None)
        ctx = tls.server_context(chain, key, self._roots)
        self._svid_chain = chain
        self._identity = (chain, key)
        if self.bundle_endpoint is not None:
            self.bundle_endpoint.set_svid(chain, key)
        if self._tls is None:
            self._tls = tls.RotatingServerContext(ctx)
        else:
            self._tls.update(ctx)
        _log.debug("Server SVID rotated", extra=log.fields(expiration=chain[0].not_valid_after_utc.isoformat()))

    def _svid_due(self) -> bool:
        leaf = self._svid_chain[0]
        if self.core is not None and leaf.issuer != self.core.ca.x509_ca.subject:
            return True  # signed by a CA that no longer signs (activated by hand, then tainted or revoked)
        start, end = leaf.not_valid_before_utc.timestamp(), leaf.not_valid_after_utc.timestamp()
        return time.time() >= start + (end - start) / 2

    async def _maintain(self) -> None:
        """Periodic work: CA rotation, bundle publishing, server SVID rotation, pruning."""
        assert self.core is not None
        core = self.core
        tick = maintenance_tick(core.ca.ca_ttl)
        next_event_prune = time.monotonic()  # first tick prunes, then every EVENT_PRUNE_INTERVAL
        node_pruner = NodePruner.from_config(core, self.config)  # None unless prune_attested_nodes_expired_for
        entry_pruner = EntryPruner(core)  # expired registration entries, every 5 minutes (SPIRE's)
        while not self._stop.is_set():
            try:
                await asyncio.wait_for(self._stop.wait(), tick)
                return
            except asyncio.TimeoutError:
                pass
            try:
                changed = await core.sign(core.ca.rotate_if_needed, time.time())
                changed = await self._prune_bundle() or changed
                await self._publish_bundle()
                changed = await sync_upstream_authorities(core) or changed
                if changed or self._svid_due():
                    await core.sign(self._rotate_server_svid)
                # Expired tokens linger an hour so a late agent is told "expired", not "unknown".
                await core.db(core.datastore.prune_join_tokens, int(time.time()) - JOIN_TOKEN_GRACE)
                if node_pruner is not None:
                    await node_pruner.tick()
                await entry_pruner.tick()
                if time.monotonic() >= next_event_prune:
                    # Events older than prune_events_older_than (SPIRE: 12 h) are no longer needed by any cache.
                    keep = int(getattr(self.config, "prune_events_older_than", 0) or 12 * 3600)
                    await core.db(core.datastore.prune_entry_events, keep)
                    await core.db(core.datastore.prune_node_events, keep)
                    # A journal nobody wrote for two CA lifetimes only holds expired CAs (a server
                    # that restarted with a memory KeyManager, or was removed from the HA set).
                    await core.db(core.datastore.prune_ca_journals, int(time.time() - 2 * core.ca.ca_ttl),
                                  core.ca.manager.journal_id)
                    next_event_prune = time.monotonic() + EVENT_PRUNE_INTERVAL
                with telemetry.current().call(ENTRY_CACHE_RELOAD):
                    await core.refresh_cache()
                await self._record_gauges()
            except Exception as exc:  # keep serving; the next tick retries
                _log.error("Maintenance failed", extra=log.fields(error=str(exc)), exc_info=True)

    async def _record_gauges(self) -> None:
        """Each maintenance tick: entries cached, agents attested, the X.509 CA's expiry and TTL."""
        metrics = telemetry.current()
        if not metrics.enabled:
            return
        assert self.core is not None
        core = self.core
        metrics.set_gauge(ENTRY_CACHE_COUNT, len(core.cache.entries))
        metrics.set_gauge(AGENTS_COUNT, await core.db(core.datastore.count_attested_nodes))
        slot = core.ca.manager.current_x509
        if slot.cert is not None:
            td = (("trust_domain_id", self.trust_domain.name),)
            metrics.set_gauge(CA_X509_CA_EXPIRATION, slot.not_after, td)
            metrics.set_gauge(CA_X509_CA_TTL, max(0.0, slot.not_after - time.time()), td)

    # --- run / stop -------------------------------------------------------------------
    def _sigusr1(self) -> None:
        """SPIRE dumps its in-memory telemetry on SIGUSR1; without it, say so. Never fatal."""
        try:
            if self.telemetry is None or not self.telemetry.dump():
                _log.info("Received SIGUSR1; in-memory telemetry is not enabled")
        except Exception as exc:
            _log.warning("Unable to dump in-memory telemetry", extra=log.fields(error=str(exc)))

    async def run(self) -> None:
        loop = asyncio.get_running_loop()
        loop.add_signal_handler(signal.SIGUSR1, self._sigusr1)
        await self.start()
        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.add_signal_handler(sig, self._stop.set)
        await self._stop.wait()
        await self.stop()

    def request_stop(self) -> None:
        self._stop.set()

    async def stop(self) -> None:
        sdnotify.stopping()
        self.ready = False
        self._stop.set()
        for t in self._tasks:
            t.cancel()
        if self.core is not None and self.core.signing_pool is not None:
            self.core.signing_pool.close()  # its worker processes hold the CA key
        for s in self._servers:
            s.close()
        for s in self._servers:
            await s.wait_closed()
        if self._health:
            await self._health.close()
        if self.bundle_endpoint is not None:
            await self.bundle_endpoint.close()
        if self.telemetry is not None:
            await self.telemetry.close()
        await self.catalog.close()
        if os.path.exists(self.config.socket_path):
            os.unlink(self.config.socket_path)
        _log.info("Server stopped gracefully")
