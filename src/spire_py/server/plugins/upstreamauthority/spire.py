"""UpstreamAuthority "spire": a nested SPIRE server, whose intermediate CA an upstream SPIRE server signs.

As SPIRE's plugin: the downstream server is a workload of an agent of the upstream server.
It takes its X509-SVID (the one of its ``downstream = true`` entry) and the upstream trust
bundle from that agent's Workload API at ``workload_api_socket``, and calls the upstream
server at ``server_address:server_port`` over mTLS, requiring the peer to be
``spiffe://<td>/spire/server``:

- ``SVID/NewDownstreamX509CA`` signs the CSR of each new intermediate (preferred TTL: the
  CA TTL); the upstream roots come from ``Bundle/GetBundle``;
- ``Bundle/PublishJWTAuthority`` publishes each new JWT key upstream, so JWT-SVIDs of the
  nested server verify with the upstream bundle; the upstream's JWT keys come back;
- the upstream bundle is polled every 5 s (SPIRE's upstreamPollFreq) and the CA manager
  merges what is new into the local bundle, so upstream rotations reach downstream workloads.

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
import time
from dataclasses import dataclass, field
from typing import Any, Coroutine, Optional, TypeVar, Union

from cryptography import x509
from grpclib.client import Channel
from grpclib.exceptions import GRPCError

from ....common import log, tls
from ....common.config.schema import RAW
from ....common.keys import PrivateKey, PublicKey, load_private_key, load_public_key_der, public_key_der
from ....common.plugin import Field, Plugin, PluginConfigError, PluginContext, Schema, STR, register
from ....common.spiffeid import TrustDomain, server_id
from ....common.x509util import split_der_chain
from ....proto.spire.api.server.bundle.v1 import bundle_grpc, bundle_pb2
from ....proto.spire.api.server.svid.v1 import svid_grpc, svid_pb2
from ....proto.spire.api.types import bundle_pb2 as types_bundle_pb2
from ....proto.workload import workload_grpc, workload_pb2
from .disk import UpstreamAuthorityError

_log = log.get("upstreamauthority.spire")

T = TypeVar("T")

UPSTREAM_POLL_INTERVAL = 5.0  # SPIRE's upstreamPollFreq
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

    def due(self, now: float) -> bool:
        """Refetch at half the SVID's life, as the agent rotates it then."""
        leaf = self.chain[0]
        start, end = leaf.not_valid_before_utc.timestamp(), leaf.not_valid_after_utc.timestamp()
        return now >= start + (end - start) / 2


JWTKeyTuple = tuple[str, PublicKey, int]


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
                 workload_api_socket: str, poll_interval: float = UPSTREAM_POLL_INTERVAL) -> None:
        self.trust_domain = trust_domain if isinstance(trust_domain, TrustDomain) else TrustDomain.parse(trust_domain)
        self.server_address = server_address
        self.server_port = server_port
        self.workload_api_socket = workload_api_socket
        self.poll_interval = poll_interval
        self._svid: Optional[_SVID] = None
        self._channel: Optional[tls.SpiffeChannel] = None
        self._bundle_lock = threading.Lock()
        self._upstream: Optional[tuple[list[x509.Certificate], list[JWTKeyTuple]]] = None
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
        while True:
            try:
                await self._fetch_bundle()
            except asyncio.CancelledError:
                raise
            except Exception as exc:  # the upstream may be away for a while; the next poll retries
                _log.warning("Failed to fetch bundle while polling", extra=log.fields(error=str(exc)))
            await asyncio.sleep(self.poll_interval)

    # --- Workload API: our SVID and the upstream trust bundle -----------------------------------
    async def _fetch_svid(self) -> _SVID:
        ch = Channel(path=self.workload_api_socket)
        try:
            stub = workload_grpc.SpiffeWorkloadAPIStub(ch)
            async with stub.FetchX509SVID.open(timeout=CALL_TIMEOUT, metadata=WORKLOAD_HEADER) as stream:
                await stream.send_message(workload_pb2.X509SVIDRequest(), end=True)
                msg = await stream.recv_message()
                await stream.cancel()
        except (GRPCError, OSError, asyncio.TimeoutError) as exc:
            raise UpstreamAuthorityError(f"unable to fetch X509-SVID from the Workload API at "
                                         f"{self.workload_api_socket}: {exc}") from None
        finally:
            ch.close()
        if msg is None or not msg.svids:
            raise UpstreamAuthorityError("the Workload API returned no X509-SVID")
        first = msg.svids[0]
        try:
            chain = [x509.load_der_x509_certificate(d) for d in split_der_chain(first.x509_svid)]
            bundle = [x509.load_der_x509_certificate(d) for d in split_der_chain(first.bundle)]
            key = load_private_key(first.x509_svid_key)
        except Exception as exc:
            raise UpstreamAuthorityError(f"the Workload API returned an unreadable X509-SVID: {exc}") from None
        _log.debug("X509-SVID fetched from the Workload API", extra=log.fields(spiffe_id=first.spiffe_id))
        return _SVID(chain, key, bundle)

    async def _server(self) -> tls.SpiffeChannel:
        """The mTLS channel to the upstream server, rebuilt when our SVID is due for renewal."""
        if self._svid is None or self._channel is None or self._svid.due(time.time()):
            svid = await self._fetch_svid()
            ctx = tls.client_context(svid.bundle, svid.chain, svid.key)
            old = self._channel
            self._svid = svid
            self._channel = tls.SpiffeChannel(self.server_address, self.server_port, ssl_context=ctx,
                                              expected=server_id(self.trust_domain))
            if old is not None:
                old.close()
        return self._channel

    async def _call(self, what: str, fn: Any) -> Any:
        ch = await self._server()
        try:
            return await fn(ch)
        except GRPCError as exc:
            raise UpstreamAuthorityError(f"{what}: rpc error: code = {exc.status.name} desc = {exc.message}") from None
        except (OSError, asyncio.TimeoutError, tls.PeerAuthError) as exc:
            # A broken connection: drop it so the next call dials again with a fresh SVID.
            self._svid = None
            raise UpstreamAuthorityError(f"{what}: {exc or type(exc).__name__}") from None

    async def _fetch_bundle(self) -> types_bundle_pb2.Bundle:
        resp: types_bundle_pb2.Bundle = await self._call("failed to get bundle", lambda ch: bundle_grpc.BundleStub(
            ch).GetBundle(bundle_pb2.GetBundleRequest(), timeout=CALL_TIMEOUT))
        roots = _certs([a.asn1 for a in resp.x509_authorities], "upstream X.509 authorities")
        with self._bundle_lock:
            self._upstream = (roots, _jwt_keys(resp.jwt_authorities))
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

    def upstream_bundle(self) -> Optional[tuple[list[x509.Certificate], list[JWTKeyTuple]]]:
        """The upstream bundle's X.509 roots and JWT keys as last seen (None before the first poll)."""
        with self._bundle_lock:
            return None if self._upstream is None else (list(self._upstream[0]), list(self._upstream[1]))

    async def close(self) -> None:
        async def shutdown() -> None:
            if self._poller is not None:
                self._poller.cancel()
                await asyncio.gather(self._poller, return_exceptions=True)
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
