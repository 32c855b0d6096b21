"""UpstreamAuthority "spire": a nested SPIRE server, whose intermediate CA an upstream SPIRE server signs.

As SPIRE's plugin: the downstream server is a workload of an agent of the upstream server.
It streams its X509-SVID (the one of its ``downstream = true`` entry) and the upstream trust
bundle from that agent's Workload API at ``workload_api_socket`` (FetchX509SVID, reconnecting
with backoff, as go-spiffe's X509Source: a rotated SVID is used for the next connection at once),
and calls the upstream server at ``server_address:server_port`` over mTLS, requiring the peer
to be ``spiffe://<td>/spire/server``:

- ``SVID/NewDownstreamX509CA`` signs the CSR of each new intermediate (preferred TTL: the
  CA TTL); the upstream roots come from ``Bundle/GetBundle``;
- ``Bundle/PublishJWTAuthority`` publishes each new JWT key upstream, so JWT-SVIDs of the
  nested server verify with the upstream bundle; the upstream's JWT keys come back;
- the upstream bundle is polled every 5 s (SPIRE's upstreamPollFreq), and at once when the
  Workload API brings a new trust bundle (FetchX509SVID) or JWT bundle (FetchJWTBundles); the CA manager merges what is new into the
  local bundle, and the upstream's taints (``tainted`` on an X.509 authority or JWT key) are
  kept so the nested server taints them too (SPIRE's bundleUpdater.SyncX509Roots).

The gRPC calls run on the plugin's own event loop thread: the CA manager calls the
UpstreamAuthority from worker threads. ``experimental.workload_api_named_pipe_name`` is
refused as on SPIRE's Unix builds; ``experimental.require_pq_kem = true`` is refused (the
TLS stack here cannot require a post-quantum key exchange, and a security setting that
cannot be honoured is not accepted).
"""

from __future__ import annotations

import asyncio
import os
import threading
from dataclasses import dataclass, field
from typing import Any, Coroutine, Optional, TypeVar, Union

from cryptography import x509
from grpclib.client import Channel
from grpclib.const import Status
from grpclib.exceptions import GRPCError

from ....common import log, tls
from ....common.config.schema import RAW
from ....common.keys import PrivateKey, PublicKey, load_private_key, load_public_key_der, public_key_der
from ....common.plugin import Field, Plugin, PluginConfigError, PluginContext, Schema, STR, register
from ....common.spiffeid import TrustDomain, server_id
from ....common.x509util import authority_id, split_der_chain
from ....proto.spire.api.server.bundle.v1 import bundle_grpc, bundle_pb2
from ....proto.spire.api.server.svid.v1 import svid_grpc, svid_pb2
from ....proto.spire.api.types import bundle_pb2 as types_bundle_pb2
from ....proto.workload import workload_grpc, workload_pb2
from .disk import UpstreamAuthorityError

_log = log.get("upstreamauthority.spire")

T = TypeVar("T")

UPSTREAM_POLL_INTERVAL = 5.0  # SPIRE's upstreamPollFreq
WATCH_BACKOFF_INITIAL = 1.0  # Workload API stream reconnection, doubling up to WATCH_BACKOFF_MAX
WATCH_BACKOFF_MAX = 30.0
CALL_TIMEOUT = 30.0
WORKLOAD_HEADER = {"workload.spiffe.io": "true"}
EXPERIMENTAL_KEYS = ("workload_api_named_pipe_name", "require_pq_kem")


def _check_experimental(value: Any) -> Optional[str]:
    if not isinstance(value, dict):
        return "expected a block { ... }"
    for key, v in value.items():
        if key == "workload_api_named_pipe_name":
            return ("configuration: workload_api_named_pipe_name is not supported on this platform; "
                    "please use workload_api_socket instead")
        if key == "require_pq_kem":
            if not isinstance(v, bool):
                return "require_pq_kem: expected true or false"
            if v:
                return ("require_pq_kem is not supported by spire_py: the TLS stack cannot require a "
                        "post-quantum key exchange; remove it or set it to false")
            continue
        return f'unknown configuration key "{key}"; known keys: {", ".join(EXPERIMENTAL_KEYS)}'
    return None


@dataclass
class SpireUpstreamConfig:
    server_address: str
    server_port: str
    workload_api_socket: str
    experimental: dict[str, Any] = field(default_factory=dict)


@dataclass
class _SVID:
    chain: list[x509.Certificate]
    key: PrivateKey
    bundle: list[x509.Certificate]


JWTKeyTuple = tuple[str, PublicKey, int]


@dataclass
class UpstreamTaints:
    """What the upstream bundle lists, by authority ID, and which of those it has tainted."""
    x509: set[str] = field(default_factory=set)  # subject key IDs (lowercase hex)
    jwt: set[str] = field(default_factory=set)  # key IDs
    tainted_x509: set[str] = field(default_factory=set)
    tainted_jwt: set[str] = field(default_factory=set)


def _jwt_keys(pbs: Any) -> list[JWTKeyTuple]:
    return [(k.key_id, load_public_key_der(k.public_key), int(k.expires_at)) for k in pbs]


def _certs(ders: Any, what: str) -> list[x509.Certificate]:
    try:
        return [x509.load_der_x509_certificate(bytes(d)) for d in ders]
    except ValueError as exc:
        raise UpstreamAuthorityError(f"unable to parse {what}: {exc}") from None


@register("server")
class SpireUpstreamAuthority(Plugin):
    TYPE = "UpstreamAuthority"
    NAME = "spire"
    CONFIG = Schema([
        Field("server_address", STR, default=""),
        Field("server_port", STR, default=""),
        Field("workload_api_socket", STR, default=""),
        Field("experimental", RAW, default={}, check=_check_experimental),
    ])
    CONFIG_TYPE = SpireUpstreamConfig

    def __init__(self, trust_domain: Union[TrustDomain, str], server_address: str, server_port: int,
                 workload_api_socket: str, poll_interval: float = UPSTREAM_POLL_INTERVAL,
                 backoff_initial: float = WATCH_BACKOFF_INITIAL) -> None:
        self.trust_domain = trust_domain if isinstance(trust_domain, TrustDomain) else TrustDomain.parse(trust_domain)
        self.server_address = server_address
        self.server_port = server_port
        self.workload_api_socket = workload_api_socket
        self.poll_interval = poll_interval
        self.backoff_initial = backoff_initial
        self._svid: Optional[_SVID] = None
        self._svid_error = ""
        self._svid_updates = 0  # SVIDs received on the stream (tests and logs)
        self._channel: Optional[tls.SpiffeChannel] = None
        self._bundle_lock = threading.Lock()
        self._upstream: Optional[tuple[list[x509.Certificate], list[JWTKeyTuple]]] = None
        self._taints: Optional[UpstreamTaints] = None
        self._watcher: Optional[asyncio.Task[None]] = None
        self._jwt_watcher: Optional[asyncio.Task[None]] = None
        self._jwt_bundles: Optional[dict[str, bytes]] = None
        self._svid_attempt: Optional[asyncio.Event] = None  # set after each stream attempt or update
        self._poke: Optional[asyncio.Event] = None  # poll the upstream bundle now
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._loop.run_forever, name="upstream-spire", daemon=True)
        self._thread.start()
        self._poller: Optional[asyncio.Task[None]] = None

    # --- configuration ---------------------------------------------------------------------
    @classmethod
    def validate(cls, config: SpireUpstreamConfig, ctx: PluginContext) -> None:
        # SPIRE's buildConfig, in its order and words.
        if not config.server_address:
            raise PluginConfigError("server_address is required", "server_address")
        if not config.server_port:
            raise PluginConfigError("server_port is required", "server_port")
        if not config.server_port.isdigit() or not 0 < int(config.server_port) < 65536:
            raise PluginConfigError(f'server_port "{config.server_port}" is not a valid port', "server_port")
        if not config.workload_api_socket:
            raise PluginConfigError("workload_api_socket is required", "workload_api_socket")

    @classmethod
    def from_config(cls, config: SpireUpstreamConfig, ctx: PluginContext) -> "SpireUpstreamAuthority":
        plugin = cls(ctx.trust_domain, config.server_address, int(config.server_port),
                     os.path.abspath(config.workload_api_socket))
        plugin.start_polling()
        return plugin

    # --- the plugin's loop -------------------------------------------------------------------
    def _run(self, coro: Coroutine[Any, Any, T], timeout: float = 2 * CALL_TIMEOUT) -> T:
        return asyncio.run_coroutine_threadsafe(coro, self._loop).result(timeout)

    def start_polling(self) -> None:
        async def start() -> None:
            self._poller = asyncio.get_running_loop().create_task(self._poll(), name="upstream-bundle-poll")
        self._run(start(), timeout=5)

    async def _poll(self) -> None:
        poke = self._poke_event()
        if self._jwt_watcher is None:
            self._jwt_watcher = asyncio.get_running_loop().create_task(self._watch_jwt_bundles(),
                                                                       name="upstream-jwt-bundles-watch")
        while True:
            poke.clear()
            try:
                await self._fetch_bundle()
            except asyncio.CancelledError:
                raise
            except Exception as exc:  # the upstream may be away for a while; the next poll retries
                _log.warning("Failed to fetch bundle while polling", extra=log.fields(error=str(exc)))
            try:
                await asyncio.wait_for(poke.wait(), self.poll_interval)
            except asyncio.TimeoutError:
                pass

    def _poke_event(self) -> asyncio.Event:
        if self._poke is None:
            self._poke = asyncio.Event()
        return self._poke

    # --- Workload API: our SVID and the upstream trust bundle, streamed -----------------------------
    def _ensure_watcher(self) -> asyncio.Event:
        if self._svid_attempt is None:
            self._svid_attempt = asyncio.Event()
        if self._watcher is None or self._watcher.done():
            self._watcher = asyncio.get_running_loop().create_task(self._watch_svid(), name="upstream-svid-watch")
        return self._svid_attempt

    async def _watch_svid(self) -> None:
        """Keep a FetchX509SVID stream open; each response replaces our SVID. A broken stream is
        opened again after a backoff (doubling up to WATCH_BACKOFF_MAX, reset by a response)."""
        backoff = self.backoff_initial
        while True:
            ch = Channel(path=self.workload_api_socket)
            try:
                stub = workload_grpc.SpiffeWorkloadAPIStub(ch)
                async with stub.FetchX509SVID.open(metadata=WORKLOAD_HEADER) as stream:
                    await stream.send_message(workload_pb2.X509SVIDRequest(), end=True)
                    while True:
                        msg = await stream.recv_message()
                        if msg is None:
                            raise UpstreamAuthorityError("the Workload API closed the X509-SVID stream")
                        self._set_svid(self._parse_svid(msg))
                        backoff = self.backoff_initial
            except asyncio.CancelledError:
                raise
            except (GRPCError, OSError, asyncio.TimeoutError, UpstreamAuthorityError) as exc:
                self._svid_error = str(exc) if isinstance(exc, UpstreamAuthorityError) else (
                    f"unable to fetch X509-SVID from the Workload API at {self.workload_api_socket}: {exc}")
                _log.warning("X509-SVID stream from the Workload API failed; retrying",
                             extra=log.fields(error=self._svid_error, retry_in=backoff))
            finally:
                ch.close()
            if self._svid_attempt is not None:
                self._svid_attempt.set()
            await asyncio.sleep(backoff)
            backoff = min(backoff * 2, WATCH_BACKOFF_MAX)

    async def _watch_jwt_bundles(self) -> None:
        """Keep a FetchJWTBundles stream open: a changed JWT bundle (the upstream added or dropped a
        key) polls the upstream bundle now. An agent without the method ends the watch."""
        backoff = self.backoff_initial
        while True:
            ch = Channel(path=self.workload_api_socket)
            try:
                stub = workload_grpc.SpiffeWorkloadAPIStub(ch)
                async with stub.FetchJWTBundles.open(metadata=WORKLOAD_HEADER) as stream:
                    await stream.send_message(workload_pb2.JWTBundlesRequest(), end=True)
                    while True:
                        msg = await stream.recv_message()
                        if msg is None:
                            break
                        bundles = dict(msg.bundles)
                        if self._jwt_bundles is not None and bundles != self._jwt_bundles:
                            self._poke_event().set()
                        self._jwt_bundles = bundles
                        backoff = self.backoff_initial
            except asyncio.CancelledError:
                raise
            except GRPCError as exc:
                if exc.status == Status.UNIMPLEMENTED:
                    return
                _log.debug("JWT bundles stream from the Workload API failed; retrying",
                           extra=log.fields(error=str(exc), retry_in=backoff))
            except (OSError, asyncio.TimeoutError) as exc:
                _log.debug("JWT bundles stream from the Workload API failed; retrying",
                           extra=log.fields(error=str(exc), retry_in=backoff))
            finally:
                ch.close()
            await asyncio.sleep(backoff)
            backoff = min(backoff * 2, WATCH_BACKOFF_MAX)

    @staticmethod
    def _parse_svid(msg: Any) -> tuple[str, _SVID]:
        if not msg.svids:
            raise UpstreamAuthorityError("the Workload API returned no X509-SVID")
        first = msg.svids[0]
        try:
            chain = [x509.load_der_x509_certificate(d) for d in split_der_chain(first.x509_svid)]
            bundle = [x509.load_der_x509_certificate(d) for d in split_der_chain(first.bundle)]
            key = load_private_key(first.x509_svid_key)
        except Exception as exc:
            raise UpstreamAuthorityError(f"the Workload API returned an unreadable X509-SVID: {exc}") from None
        return first.spiffe_id, _SVID(chain, key, bundle)

    def _set_svid(self, parsed: tuple[str, _SVID]) -> None:
        """A new SVID: the next call dials with it (calls under way finish on the old connection).
        A new trust bundle on the stream means the upstream changed: poll its bundle now."""
        spiffe_id, svid = parsed
        old, self._svid = self._svid, svid
        self._svid_error = ""
        self._svid_updates += 1
        if self._channel is not None:
            self._loop.call_later(CALL_TIMEOUT, self._channel.close)
            self._channel = None
        if old is not None and old.bundle != svid.bundle:
            self._poke_event().set()
        if self._svid_attempt is not None:
            self._svid_attempt.set()
        _log.debug("X509-SVID received from the Workload API", extra=log.fields(
            spiffe_id=spiffe_id, expiration=svid.chain[0].not_valid_after_utc.isoformat()))

    async def _server(self) -> tls.SpiffeChannel:
        """The mTLS channel to the upstream server with our newest SVID (waiting for the first one)."""
        attempt = self._ensure_watcher()
        if self._svid is None:
            attempt.clear()
            try:
                await asyncio.wait_for(attempt.wait(), CALL_TIMEOUT)
            except asyncio.TimeoutError:
                pass
        svid = self._svid
        if svid is None:
            raise UpstreamAuthorityError(self._svid_error or (
                f"unable to fetch X509-SVID from the Workload API at {self.workload_api_socket}: timed out"))
        if self._channel is None:
            ctx = tls.client_context(svid.bundle, svid.chain, svid.key)
            self._channel = tls.SpiffeChannel(self.server_address, self.server_port, ssl_context=ctx,
                                              expected=server_id(self.trust_domain))
        return self._channel

    async def _call(self, what: str, fn: Any) -> Any:
        ch = await self._server()
        try:
            return await fn(ch)
        except GRPCError as exc:
            raise UpstreamAuthorityError(f"{what}: rpc error: code = {exc.status.name} desc = {exc.message}") from None
        except (OSError, asyncio.TimeoutError, tls.PeerAuthError) as exc:
            # A broken connection: drop it so the next call dials again (with the newest SVID).
            if self._channel is ch:
                self._channel = None
                ch.close()
            raise UpstreamAuthorityError(f"{what}: {exc or type(exc).__name__}") from None

    async def _fetch_bundle(self) -> types_bundle_pb2.Bundle:
        resp: types_bundle_pb2.Bundle = await self._call("failed to get bundle", lambda ch: bundle_grpc.BundleStub(
            ch).GetBundle(bundle_pb2.GetBundleRequest(), timeout=CALL_TIMEOUT))
        roots = _certs([a.asn1 for a in resp.x509_authorities], "upstream X.509 authorities")
        ids = [authority_id(c) for c in roots]
        taints = UpstreamTaints(
            x509=set(ids), jwt={k.key_id for k in resp.jwt_authorities},
            tainted_x509={i for i, a in zip(ids, resp.x509_authorities) if a.tainted and i},
            tainted_jwt={k.key_id for k in resp.jwt_authorities if k.tainted})
        with self._bundle_lock:
            self._upstream = (roots, _jwt_keys(resp.jwt_authorities))
            self._taints = taints
        return resp

    # --- what the CA manager calls --------------------------------------------------------------
    def mint_x509_ca(
        self,
        csr_or_public_key: Any,
        trust_domain: Union[TrustDomain, str, None] = None,
        ttl: float = 0,
        now: Optional[float] = None,
    ) -> tuple[list[x509.Certificate], list[x509.Certificate]]:
        if not isinstance(csr_or_public_key, (bytes, bytearray)):
            raise UpstreamAuthorityError("the spire upstream authority signs DER certificate signing requests only")
        return self._run(self._mint(bytes(csr_or_public_key), int(ttl or 0)))

    async def _mint(self, csr: bytes, ttl: int) -> tuple[list[x509.Certificate], list[x509.Certificate]]:
        resp = await self._call("unable to request a new Downstream X509CA", lambda ch: svid_grpc.SVIDStub(
            ch).NewDownstreamX509CA(svid_pb2.NewDownstreamX509CARequest(csr=csr, preferred_ttl=ttl),
                                    timeout=CALL_TIMEOUT))
        chain = _certs(resp.ca_cert_chain, "CA cert chain")
        bundle = await self._fetch_bundle()  # as SPIRE: the roots come from GetBundle
        roots = _certs([a.asn1 for a in bundle.x509_authorities], "upstream X.509 authorities")
        _log.info("Downstream X509 CA signed by the upstream server", extra=log.fields(
            expiration=chain[0].not_valid_after_utc.isoformat() if chain else ""))
        return chain, roots

    def publish_jwt_key(self, key_id: str, public_key: PublicKey, expires_at: int) -> list[JWTKeyTuple]:
        """Publish our JWT key upstream; returns the upstream bundle's JWT keys."""
        return self._run(self._publish(key_id, public_key, expires_at))

    async def _publish(self, key_id: str, public_key: PublicKey, expires_at: int) -> list[JWTKeyTuple]:
        pb = types_bundle_pb2.JWTKey(public_key=public_key_der(public_key), key_id=key_id, expires_at=expires_at)
        resp = await self._call("failed to push JWT authority", lambda ch: bundle_grpc.BundleStub(
            ch).PublishJWTAuthority(bundle_pb2.PublishJWTAuthorityRequest(jwt_authority=pb), timeout=CALL_TIMEOUT))
        keys = _jwt_keys(resp.jwt_authorities)
        with self._bundle_lock:
            if self._upstream is not None:
                self._upstream = (self._upstream[0], keys)
        return keys

    def upstream_taints(self) -> Optional[UpstreamTaints]:
        """The upstream bundle's authority IDs and its tainted ones, as last fetched (None before)."""
        with self._bundle_lock:
            t = self._taints
            return None if t is None else UpstreamTaints(set(t.x509), set(t.jwt), set(t.tainted_x509),
                                                         set(t.tainted_jwt))

    def svid_updates(self) -> int:
        """How many X509-SVIDs the Workload API stream has delivered."""
        return self._svid_updates

    def upstream_bundle(self) -> Optional[tuple[list[x509.Certificate], list[JWTKeyTuple]]]:
        """The upstream bundle's X.509 roots and JWT keys as last seen (None before the first poll)."""
        with self._bundle_lock:
            return None if self._upstream is None else (list(self._upstream[0]), list(self._upstream[1]))

    async def close(self) -> None:
        async def shutdown() -> None:
            for task in (self._poller, self._watcher, self._jwt_watcher):
                if task is not None:
                    task.cancel()
                    await asyncio.gather(task, return_exceptions=True)
            if self._channel is not None:
                self._channel.close()
        try:
            await asyncio.wait_for(asyncio.wrap_future(asyncio.run_coroutine_threadsafe(shutdown(), self._loop)), 5)
        except Exception as exc:  # closing must not fail the server's stop
            _log.warning("Unable to stop the upstream bundle poll", extra=log.fields(error=str(exc)))
        self._loop.call_soon_threadsafe(self._loop.stop)
        await asyncio.to_thread(self._thread.join, 5)
        if not self._thread.is_alive():
            self._loop.close()
