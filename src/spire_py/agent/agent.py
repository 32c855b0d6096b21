"""spire-agent run: attest, keep entries and SVIDs fresh, serve the Workload API."""

from __future__ import annotations

import asyncio
import gc
import signal
import time
from typing import Any, Optional

from cryptography import x509
from cryptography.hazmat.primitives import serialization
from grpclib.const import Status
from grpclib.exceptions import GRPCError

from ..common import health as health_http
from ..common import eventloop, log, sdnotify, telemetry
from ..common.bundle import Bundle as SpiffeBundle
from ..common.errors import SpireError
from ..common.spiffeid import TrustDomain
from ..common.telemetry.names import (AGENT_NODE_ATTEST, AGENT_SVID_ROTATE, CACHE_RECORDS, CACHE_SVIDS,
                                      SVID_TYPE_X509, SYNC_ENTRIES, SYNC_SVIDS)
from ..common.telemetry.telemetry import Telemetry
from ..common.tls import spiffe_id_of
from ..proto.spire.api.server.agent.v1 import agent_pb2
from ..proto.spire.api.server.bundle.v1 import bundle_pb2
from ..proto.spire.api.server.svid.v1 import svid_pb2
from .attestor import AttestationFailed, attest, chain_from_proto, make_csr
from .cache import CachedJWT, WorkloadCache
from .catalog import AgentCatalog
from .client import RPC_TIMEOUT, ServerClient
from .jwt_cache import DEFAULT_MAX_SIZE, JWTSVIDCache
from .plugins.keymanager.base import AgentKeyManager
from .plugins.nodeattestor.base import AgentNodeAttestor
from .plugins.workloadattestor.base import WorkloadAttestor
from .rebootstrap import Rebootstrap, unknown_authority
from .rotation import RotationStrategy
from .storage import AgentState, AgentStorage
from .sync import (count_entry_changes, count_tainted_x509, drop_tainted_jwts, fetch_entries, fetch_federated_bundles,
                   get_authorized_entries, mint_svids, set_sync_stats)
from .trust_bundle import load_bootstrap_roots

_log = log.get("agent")

DEFAULT_SYNC_INTERVAL = 5.0
KEY_IDS = ("agent-svid-A", "agent-svid-B")


def _server_silent(exc: BaseException) -> bool:
    """A request that ran out of time: the server is there but does not answer."""
    if isinstance(exc, (asyncio.TimeoutError, TimeoutError)):
        return True
    return isinstance(exc, GRPCError) and exc.status == Status.DEADLINE_EXCEEDED


class AgentRefused(SpireError):
    """The server no longer accepts this agent (evicted or banned) and it cannot re-attest."""


def _public_der(key: Any) -> bytes:
    return key.public_key().public_bytes(serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo)


class SpireAgent:
    def __init__(self, config: Any) -> None:
        self.config = config
        self.td = TrustDomain(config.trust_domain)
        self.storage = AgentStorage(config.data_dir)
        self.catalog = AgentCatalog(config)
        self.telemetry: Optional[Telemetry] = None
        # 0 (or unset) means SPIRE's default size for both SVID caches.
        self.cache = WorkloadCache(
            self.td, jwt_svids=JWTSVIDCache(int(getattr(config, "jwt_svid_cache_max_size", 0) or 0)),
            x509_svid_max_size=int(getattr(config, "x509_svid_cache_max_size", 0) or 0) or DEFAULT_MAX_SIZE,
            jwt_cache_hit_timeout=getattr(config, "jwt_svid_cache_hit_timeout", None))
        self.ready = False
        self.roots: list[x509.Certificate] = []
        # Roots whose SVIDs are kept: the bundle's minus those tainted (LocalAuthority API), whose
        # SVIDs are re-signed at the next sync as SPIRE's agent does.
        self.signing_roots: list[x509.Certificate] = []
        # Tainted authorities already processed (telemetry counts each taint once, as SPIRE).
        self._tainted_x509: set[x509.Certificate] = set()
        self._tainted_jwt: set[str] = set()
        self.state: Optional[AgentState] = None
        self.client: Optional[ServerClient] = None
        self._identity: Optional[tuple[list[x509.Certificate], Any]] = None  # the agent SVID and its key
        self._revisions: dict[str, int] = {}
        self._stop = asyncio.Event()
        self._tasks: list[asyncio.Task[None]] = []
        self._workload_server: Any = None
        self._workload_service: Any = None
        self._admin_server: Any = None
        self.started = time.time()
        self.last_sync_success = 0.0
        self._apis = ""
        self._health: Optional[health_http.HealthListener] = None
        self.error: Optional[str] = None
        self.sync_interval = float(getattr(config, "sync_interval", None) or DEFAULT_SYNC_INTERVAL)
        self.key_type = getattr(config, "workload_x509_svid_key_type", "") or "ec-p256"
        self.rotation = RotationStrategy(getattr(config, "availability_target", None))
        self.rebootstrap = Rebootstrap(getattr(config, "rebootstrap_mode", "never"),
                                       getattr(config, "rebootstrap_delay", 600))
        # experimental.use_sync_authorized_entries = false: the older GetAuthorizedEntries, all entries each sync
        self.use_sync_authorized_entries = bool(getattr(config, "use_sync_authorized_entries", True))

    # --- plugins -------------------------------------------------------------------
    def check_plugins(self) -> None:
        """Check every plugin's configuration without creating anything (``validate``)."""
        self.catalog.check()

    def load_plugins(self) -> None:
        self.catalog.load()

    @property
    def node_attestor(self) -> AgentNodeAttestor:
        return self.catalog.node_attestor()

    @property
    def key_manager(self) -> AgentKeyManager:
        return self.catalog.key_manager()

    @property
    def workload_attestors(self) -> list[WorkloadAttestor]:
        return self.catalog.workload_attestors()

    # --- identity ------------------------------------------------------------------
    @property
    def agent_id(self) -> str:
        assert self.state is not None
        return str(spiffe_id_of(self.state.svid[0]))

    def _usable(self, state: Optional[AgentState]) -> bool:
        if state is None:
            return False
        key = self.key_manager.get_key(state.key_id)
        leaf = state.svid[0]
        if key is None or _public_der(key) != leaf.public_key().public_bytes(
                serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo):
            return False
        return leaf.not_valid_after_utc.timestamp() > time.time() + 5

    def _next_key_id(self) -> str:
        cur = self.state.key_id if self.state else KEY_IDS[1]
        return KEY_IDS[0] if cur == KEY_IDS[1] else KEY_IDS[1]

    def _connect(self) -> ServerClient:
        if self.client is not None:
            self.client.close()
        key = self.key_manager.get_key(self.state.key_id) if self.state else None
        self._identity = (self.state.svid, key) if self.state and key is not None else None
        self.client = ServerClient(self.config.server_address, int(self.config.server_port), self.td, self.roots,
                                   self.state.svid if self.state else None, key)
        return self.client

    async def _attest(self) -> None:
        # Only insecure_bootstrap may skip authenticating the server; a missing bundle never does.
        insecure = not self.roots and bool(getattr(self.config, "insecure_bootstrap", False))
        if not self.roots and not insecure:
            raise AttestationFailed("no trust bundle to authenticate the server with")
        key_id = self._next_key_id()
        key = await asyncio.to_thread(self.key_manager.generate_key, key_id, "ec-p256")
        client = ServerClient(self.config.server_address, int(self.config.server_port), self.td, self.roots,
                              insecure=insecure)
        try:
            with telemetry.current().call(AGENT_NODE_ATTEST, (("attestor", self.node_attestor.NAME),)):
                chain, reattestable = await attest(client, self.node_attestor, key, self.td)
            if insecure:
                # insecure_bootstrap: take the bundle from the server, then check our SVID chains to it.
                b = await client.bundle.GetBundle(bundle_pb2.GetBundleRequest(), timeout=RPC_TIMEOUT)
                self.roots = [x509.load_der_x509_certificate(a.asn1) for a in b.x509_authorities]
                self.storage.store_bundle(self.roots)
        finally:
            client.close()
        self.state = AgentState(chain, key_id, reattestable)
        self.storage.store_state(self.state)
        self.cache.agent_id = self.agent_id
        self._connect()
        self.rebootstrap.check_reattestable(reattestable)

    async def _renew(self) -> None:
        assert self.client is not None and self.state is not None
        with telemetry.current().call(AGENT_SVID_ROTATE):
            key_id = self._next_key_id()
            key = await asyncio.to_thread(self.key_manager.generate_key, key_id, "ec-p256")
            resp = await self.client.agent.RenewAgent(agent_pb2.RenewAgentRequest(
                params=agent_pb2.AgentX509SVIDParams(csr=make_csr(key))), timeout=RPC_TIMEOUT)
        self.state = AgentState(chain_from_proto(resp.svid.cert_chain), key_id, self.state.reattestable)
        self.storage.store_state(self.state)
        self._connect()
        _log.info("Agent SVID renewed", extra=log.fields(spiffe_id=self.agent_id,
                  expiration=self.state.svid[0].not_valid_after_utc.isoformat()))

    def _signed_by_tainted(self, tainted: list[x509.Certificate]) -> bool:
        assert self.state is not None
        top = self.state.svid[-1]
        return any(top.issuer == t.subject for t in tainted)

    def _renew_due(self) -> bool:
        assert self.state is not None
        return self.rotation.should_rotate_cert(time.time(), self.state.svid[0])

    # --- sync ----------------------------------------------------------------------
    async def _jwt_minter(self, entry: Any, audience: list[str]) -> CachedJWT:
        if self.client is None:
            raise GRPCError(Status.UNAVAILABLE, "agent is not connected to the server")
        resp = await self.client.svid.NewJWTSVID(svid_pb2.NewJWTSVIDRequest(entry_id=entry.id, audience=audience),
                                                 timeout=RPC_TIMEOUT)
        return CachedJWT(resp.svid.token, entry.spiffe_id, resp.svid.expires_at, resp.svid.issued_at, entry.hint)

    async def sync_once(self) -> None:
        assert self.client is not None
        if self._renew_due():
            await self._renew()
        client = self.client
        b = await client.bundle.GetBundle(bundle_pb2.GetBundleRequest(), timeout=RPC_TIMEOUT)
        roots = [x509.load_der_x509_certificate(a.asn1) for a in b.x509_authorities]
        tainted = [r for r, a in zip(roots, b.x509_authorities) if a.tainted]
        self.signing_roots = [r for r in roots if r not in tainted]
        if not self._tainted_x509.issuperset(tainted):
            count_tainted_x509(self.cache, tainted)
        self._tainted_x509 = set(tainted)
        if tainted and self._signed_by_tainted(tainted):
            _log.info("Agent SVID is signed by a tainted authority; renewing", extra=log.fields(
                spiffe_id=self.agent_id))
            await self._renew()
            client = self.client
        tainted_kids = {k.key_id for k in b.jwt_authorities if k.tainted}
        if drop_tainted_jwts(self.cache, tainted_kids, not self._tainted_jwt.issuperset(tainted_kids)):
            _log.info("JWT-SVIDs signed by a tainted key dropped from the cache")
        self._tainted_jwt = tainted_kids
        changed = False
        bundle = SpiffeBundle.from_proto(self.td, b)
        if roots != self.roots:
            self.roots = roots
            self.storage.store_bundle(roots)
            client = self._connect()
        old = self.cache.own_bundle()
        if old is None or old.sequence_number != bundle.sequence_number or old.x509_authorities != bundle.x509_authorities \
                or old.jwt_authorities.keys() != bundle.jwt_authorities.keys():
            self.cache.bundles[self.td.id_string()] = bundle
            changed = True
        metrics = telemetry.current()
        with metrics.call(SYNC_ENTRIES):
            fetch = fetch_entries if self.use_sync_authorized_entries else get_authorized_entries
            entries = await fetch(client, self.cache.entries)
        changes = count_entry_changes(self.cache.entries, entries)
        if entries != self.cache.entries:
            self.cache.entries = entries
            changed = True
        if await fetch_federated_bundles(client, self.cache, entries):
            changed = True
        if self.use_sync_authorized_entries:  # SPIRE sets these with SyncAuthorizedEntries only
            set_sync_stats(changes, len(entries), len(self.cache.bundles))
        self.cache.jwt_svids.prune()
        with metrics.call(SYNC_SVIDS):
            if await mint_svids(client, self.cache, entries, self._revisions, self.signing_roots or self.roots,
                                self.key_type, self.rotation):
                changed = True
        if changed:
            await self.cache.publish()
        self.last_sync_success = time.time()
        metrics.set_gauge(CACHE_RECORDS, len(entries), SVID_TYPE_X509)
        metrics.set_gauge(CACHE_SVIDS, len(self.cache.svids), SVID_TYPE_X509)

    async def _wait_for_sync(self) -> None:
        """Sleep until the next sync; meanwhile sign SVIDs a new subscriber lacks (evicted by the
        cache bound) at once rather than at the next tick."""
        deadline = time.monotonic() + self.sync_interval
        wanted = self.cache.svids_wanted()
        while not self._stop.is_set():
            waits = [asyncio.ensure_future(self._stop.wait()), asyncio.ensure_future(wanted.wait())]
            try:
                await asyncio.wait(waits, timeout=max(0.0, deadline - time.monotonic()),
                                   return_when=asyncio.FIRST_COMPLETED)
            finally:
                for w in waits:
                    w.cancel()
            if self._stop.is_set() or not wanted.is_set():
                return
            wanted.clear()
            if self.client is not None:
                try:
                    if await mint_svids(self.client, self.cache, self.cache.entries, self._revisions,
                                        self.signing_roots or self.roots,
                                        self.key_type, self.rotation):
                        await self.cache.publish()
                except Exception as exc:  # the next sync retries
                    _log.warning("Failed to sign SVIDs on demand",
                                 extra=log.fields(error=f"{type(exc).__name__}: {exc}"))

    async def _sync_loop(self) -> None:
        while not self._stop.is_set():
            await self._wait_for_sync()
            if self._stop.is_set():
                return
            try:
                await self._sync_or_recover()
            except AgentRefused as exc:
                self.error = str(exc)
                _log.error("Agent refused by the server; stopping", extra=log.fields(error=str(exc)))
                self._stop.set()
                return
            except Exception as exc:  # keep serving cached SVIDs; retry next tick
                _log.warning("Synchronization failed", extra=log.fields(error=f"{type(exc).__name__}: {exc}"))
                if _server_silent(exc) and self.client is not None:
                    gone = self.client.channel.abandon()
                    if gone is not None:
                        _log.warning("Server did not answer in time; trying another address next",
                                     extra=log.fields(address=f"{gone[0]}:{gone[1]}"))

    async def _reattest(self) -> None:
        try:
            await self._attest()
        except AttestationFailed as exc:
            # Unreachable: retry next tick. Refused (banned, credentials no longer trusted): stop, as SPIRE.
            if exc.status in (Status.PERMISSION_DENIED, Status.UNAUTHENTICATED):
                self.storage.clear_state()
                raise AgentRefused(f"re-attestation refused: {exc}") from None
            raise

    async def _rebootstrap(self) -> None:
        """Forget the bundle and SVID, take the bootstrap bundle again and re-attest with it."""
        self.storage.clear_state()
        self.storage.store_bundle([])
        self.state = None
        roots = await load_bootstrap_roots(self.config, self.td)
        if not roots:
            raise AttestationFailed("rebootstrap: no bootstrap trust bundle")
        self.roots, self.signing_roots = roots, []
        await self._attest()
        self.storage.store_bundle(self.roots)
        _log.info("Rebootstrapped: attested again with the bootstrap trust bundle",
                  extra=log.fields(spiffe_id=self.agent_id))

    def _rebootstrap_due(self, exc: BaseException) -> bool:
        """The server failed verification against our bundle for ``rebootstrap_delay`` now."""
        return self.rebootstrap.enabled and unknown_authority(exc) and self.rebootstrap.disagreed()

    async def _sync_or_rebootstrap(self) -> None:
        try:
            await self.sync_once()
        except Exception as exc:
            if not self._rebootstrap_due(exc):
                raise
            await self._rebootstrap()
            await self.sync_once()
        self.rebootstrap.agreed()

    async def _sync_or_recover(self) -> None:
        if self.state is None and self.rebootstrap.enabled:
            # A rebootstrap whose attestation failed: again, re-reading the bootstrap bundle (as SPIRE's loop)
            await self._rebootstrap()
        if self.state is not None and not self._usable(self.state):
            if not self.state.reattestable:
                raise AgentRefused("agent SVID expired and the node attestor cannot re-attest")
            try:
                await self._reattest()
            except Exception as exc:  # the server re-attesting us is no longer the one our bundle trusts
                if not self._rebootstrap_due(exc):
                    raise
                await self._rebootstrap()
        try:
            await self._sync_or_rebootstrap()
        except GRPCError as exc:
            if exc.status not in (Status.PERMISSION_DENIED, Status.UNAUTHENTICATED):
                raise
            if self.state is not None and self.state.reattestable:
                _log.warning("Agent refused; re-attesting", extra=log.fields(error=exc.message))
                await self._reattest()
                await self.sync_once()
                return
            self.storage.clear_state()
            raise AgentRefused(f"the server refused this agent ({exc.message}); it must be attested again") from None

    # --- run / stop ------------------------------------------------------------------
    async def start(self) -> None:
        from .workloadapi.server import serve_workload_api
        from .workloadapi.handler import WorkloadAPIService

        await asyncio.to_thread(self.load_plugins)
        # Telemetry first: attestation, the first sync and the Workload API record into it.
        self.telemetry = Telemetry(self.config.telemetry, "spire_agent", self.td.name, self.catalog.telemetry_sinks())
        self.telemetry.serve_with(lambda: self._identity, lambda: self.roots)  # Prometheus tls use_spire_svid
        await self.telemetry.start()
        self.roots = self.storage.load_bundle() or await load_bootstrap_roots(self.config, self.td) or []
        state = self.storage.load_state()
        if self._usable(state):
            self.state = state
            self.cache.agent_id = self.agent_id
            self._connect()
            _log.info("Resuming with stored agent SVID", extra=log.fields(spiffe_id=self.agent_id))
            self.rebootstrap.check_reattestable(bool(state and state.reattestable))
        else:
            await self._attest()
        self.cache.jwt_minter = self._jwt_minter
        try:
            await self._sync_or_recover()
        except AttestationFailed:
            raise
        except AgentRefused:
            raise
        except Exception as exc:
            _log.warning("Initial synchronization failed; retrying", extra=log.fields(error=str(exc)))
        disable_workload = bool(getattr(self.config, "disable_workload_api", False))
        disable_sds = bool(getattr(self.config, "disable_sds_api", False))
        apis = [name for name, off in (("Workload API", disable_workload), ("SDS API", disable_sds)) if not off]
        # The admin socket's Delegated Identity API attests and matches through it too.
        service = self._workload_service = WorkloadAPIService(
            self.cache, self.workload_attestors,
            allow_unauthenticated_verifiers=bool(getattr(self.config, "allow_unauthenticated_verifiers", False)),
            allowed_foreign_jwt_claims=tuple(getattr(self.config, "allowed_foreign_jwt_claims", ()) or ()),
            log_selectors=tuple(getattr(self.config, "log_selectors", ()) or ()),
            rate_limits=dict(getattr(self.config, "workload_api_ratelimit", {}) or {}),
        )
        if not apis:
            _log.info("Skipping agent APIs because public endpoint is disabled",
                      extra=log.fields(apis="Workload API,SDS API"))
        else:
            extra: list[Any] = [self._health_service()]
            if not disable_sds:
                extra.append(self._sds_service(service))
            self._workload_server = await serve_workload_api(self.config.socket_path, service, extra_services=extra,
                                                             serve_workload_api=not disable_workload)
            self._apis = ",".join(apis)
        if getattr(self.config, "admin_socket_path", ""):
            self._admin_server = await self._serve_admin(service)
        hc = self.config.health_checks
        if hc.listener_enabled:
            self._health = health_http.HealthListener(hc.bind_address, hc.bind_port, hc.live_path, hc.ready_path,
                                                      lambda: not self._stop.is_set(), lambda: self.ready)
            await self._health.start()
        self._tasks.append(asyncio.create_task(self._sync_loop(), name="sync"))
        # What start-up made (modules, plugins, the first cache) lives as long as the agent: keep it
        # out of the collector's full passes, which otherwise stall Workload API calls. The young
        # generation keeps CPython's pace here, unlike the server's (common/gcsettle.py): measured
        # on the Workload API, a slower pace cut the one-client X.509 p99 tail but doubled
        # FetchJWTSVID's p99 at 50 clients (benchmarks/README.md).
        gc.freeze()
        self.ready = True
        sdnotify.ready("serving")
        if self._workload_server is not None:
            _log.info("Starting agent APIs", extra=log.fields(address=self.config.socket_path, network="unix",
                                                             apis=self._apis, event_loop=eventloop.current_name()))

    async def _serve_admin(self, workload: Any) -> Any:
        from .adminapi.debug import AgentInfo, DebugService
        from .adminapi.delegatedidentity import DelegatedIdentityService
        from .adminapi.logger import LoggerService
        from .adminapi.server import serve_admin_api
        from .workloadapi.caller import CallerRegistry

        def info() -> AgentInfo:
            return AgentInfo(svid=list(self.state.svid) if self.state else [], roots=list(self.roots),
                             cached_x509_svids=len(self.cache.svids), cached_jwt_svids=len(self.cache.jwt_svids),
                             last_sync_success=self.last_sync_success)

        callers = CallerRegistry()
        services = [DebugService(info, self.started), LoggerService(),
                    DelegatedIdentityService(workload, callers, getattr(self.config, "authorized_delegates", ()) or ())]
        return await serve_admin_api(self.config.admin_socket_path, services, callers)

    def _sds_service(self, workload: Any) -> Any:
        from .workloadapi.sds import SDSNames, SecretDiscoveryService

        sds = getattr(self.config, "sds", None)
        names = SDSNames() if sds is None else SDSNames(
            sds.default_svid_name, sds.default_bundle_name, sds.default_all_bundles_name,
            sds.disable_spiffe_cert_validation)
        return SecretDiscoveryService(workload, names)

    def _health_service(self) -> Any:
        from ..common.health_service import HealthService

        return HealthService(lambda: self.ready)

    def _sigusr1(self) -> None:
        """SPIRE dumps its in-memory telemetry on SIGUSR1; without it, say so. Never fatal."""
        try:
            if self.telemetry is None or not self.telemetry.dump():
                _log.info("Received SIGUSR1; in-memory telemetry is not enabled")
        except Exception as exc:
            _log.warning("Unable to dump in-memory telemetry", extra=log.fields(error=str(exc)))

    async def run(self) -> int:
        loop = asyncio.get_running_loop()
        loop.add_signal_handler(signal.SIGUSR1, self._sigusr1)
        await self.start()
        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.add_signal_handler(sig, self._stop.set)
        await self._stop.wait()
        await self.stop()
        return 1 if self.error else 0

    async def stop(self) -> None:
        from .workloadapi.server import close_workload_api

        sdnotify.stopping()
        self.ready = False
        self._stop.set()
        for t in self._tasks:
            t.cancel()
        if self._workload_server is not None:
            await close_workload_api(self._workload_server, self.config.socket_path)
        if self._admin_server is not None:
            if self._workload_service is not None:
                await self._workload_service.shutdown()  # ends Delegated Identity streams too
            await close_workload_api(self._admin_server, self.config.admin_socket_path)
        if self._health:
            await self._health.close()
        if self.client is not None:
            self.client.close()
        if self.telemetry is not None:
            await self.telemetry.close()
        await self.catalog.close()
        _log.info("Agent stopped", extra=log.fields(error=self.error) if self.error else None)

