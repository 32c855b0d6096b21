"""The SPIFFE Workload API served by the agent, with SPIRE's semantics.

Every call must carry ``workload.spiffe.io: true``; the caller is identified by
SO_PEERCRED on the Unix connection and attested by every WorkloadAttestor. The
streaming calls push a new message whenever what the caller sees changes and end
with PermissionDenied when the caller no longer has an identity, as SPIRE does.
"""

from __future__ import annotations

import asyncio
import json
import logging
import os
import time
from typing import Any, Iterable, Mapping, Optional, Sequence

from google.protobuf import json_format, struct_pb2
from grpclib.const import Status
from grpclib.exceptions import GRPCError

from ...common import log, telemetry
from ...common.jwtsvid import validate_jwt_svid
from ...common.registration import Entry, Selector
from ...common.spiffeid import SpiffeId, SpiffeIdError
from ...common.telemetry.names import DISCOVERED_SELECTORS, JWT_BUNDLES_UPDATE, WORKLOAD_ATTESTATION, WORKLOAD_ATTESTOR
from ...common.x509util import certs_to_der_chain
from ...proto.workload import workload_pb2 as pb
from ...proto.workload.workload_grpc import SpiffeWorkloadAPIBase
from ..cache import WorkloadCache
from ..plugins.workloadattestor.base import WorkloadAttestationError, WorkloadAttestor
from .caller import Caller, CallerGone, CallerRegistry
from .ratelimit import WorkloadRateLimiter
from .jwks import jwks_json

_log = log.get("workload_api")

HEADER = "workload.spiffe.io"
# Claims of a foreign JWT-SVID passed back to the caller unless configured otherwise (SPIRE's rule).
_ALWAYS_ALLOWED_CLAIMS = frozenset({"sub", "exp", "aud"})


def filter_hints(entries: Sequence[Entry]) -> list[Entry]:
    """At most one entry per non-empty hint: the oldest wins, then the lowest entry id."""
    keep: dict[str, Entry] = {}
    for e in entries:
        if not e.hint:
            continue
        cur = keep.get(e.hint)
        if cur is None or (e.created_at, e.id) < (cur.created_at, cur.id):
            keep[e.hint] = e
    return [e for e in entries if not e.hint or keep[e.hint] is e]


def loggable_selectors(selectors: Iterable[Selector], prefixes: Sequence[str]) -> str:
    """SPIRE's ``log_selectors``: the selectors whose rendered form ("k8s:ns:default") is a
    listed prefix or starts with one followed by ':', sorted and joined with ','; '' when none."""
    rendered = (f"{s.type}:{s.value}" if s.value else s.type for s in selectors)
    return ",".join(sorted(r for r in rendered if any(r == p or r.startswith(p + ":") for p in prefixes)))


def _status(code: Status, message: str) -> GRPCError:
    return GRPCError(code, message)


class _Call:
    """One call's context: method, caller and the fields logged once when it settles."""

    def __init__(self, method: str) -> None:
        self.method = method
        self.caller: Optional[Caller] = None
        self.start = time.monotonic()
        self.logged = False

    @property
    def quiet(self) -> bool:
        # The agent's own health checks use the API; don't fill the logs with them.
        return self.caller is not None and self.caller.pid == os.getpid()

    def log(self, level: int, msg: str, **fields: Any) -> None:
        """Successes are logged once per call (a stream's first message); failures always."""
        if (level < logging.WARNING and self.logged) or not _log.isEnabledFor(level) or self.quiet:
            return
        self.logged = True
        base: dict[str, Any] = {"method": self.method}
        if self.caller is not None:
            base.update(pid=self.caller.pid, uid=self.caller.uid, gid=self.caller.gid)
        base.update(fields)
        _log.log(level, msg, extra=log.fields(**base))


# How long one workload attestor may take: past it, the others' selectors are used without its
# own (an entry can only match fewer selectors, never more) and its failure is logged with the pid.
ATTESTOR_TIMEOUT = 10.0


async def _bounded(attestor: WorkloadAttestor, pid: int, uid: int, gid: int, timeout: float) -> list[Selector]:
    try:
        async with asyncio.timeout(timeout):  # unlike wait_for, no task of its own per call
            return await attestor.attest(pid, uid, gid)
    except TimeoutError:
        raise WorkloadAttestationError(f"timed out after {timeout:g}s") from None


async def _timed(calls: telemetry.CallCounter, attest: Any) -> Any:
    started = time.monotonic()
    try:
        result = await attest
    except Exception:
        calls.done(started, Status.UNKNOWN)
        raise
    calls.done(started)
    return result


class WorkloadAPIService(SpiffeWorkloadAPIBase):
    def __init__(
        self,
        cache: WorkloadCache,
        attestors: Sequence[WorkloadAttestor],
        *,
        allow_unauthenticated_verifiers: bool = False,
        allowed_foreign_jwt_claims: Iterable[str] = (),
        log_selectors: Sequence[str] = (),
        rate_limits: Optional[Mapping[str, int]] = None,
    ) -> None:
        self.cache = cache
        self.log_selectors = tuple(log_selectors)
        self.rate_limiter = WorkloadRateLimiter(rate_limits or {})
        self.attestors = list(attestors)
        self.allow_unauthenticated_verifiers = allow_unauthenticated_verifiers
        self.allowed_foreign_jwt_claims = frozenset(allowed_foreign_jwt_claims) | _ALWAYS_ALLOWED_CLAIMS
        self.attestor_timeout = ATTESTOR_TIMEOUT
        # Filled by the server on accept (see server.py); without it callers are looked up per call.
        self.callers = CallerRegistry()
        # SPIRE's workload attestation metrics, found once (None with telemetry off).
        m = telemetry.current()
        self._attestation = m.call_counter(WORKLOAD_ATTESTATION) if m.enabled else None
        self._attestor_calls = [m.call_counter(WORKLOAD_ATTESTOR, (("attestor", a.NAME),)) for a in self.attestors]
        self._discovered = m.sample(DISCOVERED_SELECTORS)
        self._stopping: Optional[asyncio.Event] = None
        self._streams: set[asyncio.Task[Any]] = set()
        self._waiting: set[asyncio.Future[None]] = set()  # streams waiting in _next_change
        # The last X509SVIDResponse built and what it was built from (read-only once built).
        self._last_x509: Optional[tuple[tuple[Any, ...], pb.X509SVIDResponse]] = None

    # --- shutdown -----------------------------------------------------------------------
    def _stop_event(self) -> asyncio.Event:
        if self._stopping is None:
            self._stopping = asyncio.Event()
        return self._stopping

    async def shutdown(self, grace: float = 2.0) -> None:
        """End every open stream with UNAVAILABLE (what clients see when SPIRE stops) and
        wait up to ``grace`` seconds for their trailers to go out."""
        self._stop_event().set()
        for fut in list(self._waiting):  # streams between updates wake and end
            if not fut.done():
                fut.set_result(None)
        if self._streams:
            await asyncio.wait(set(self._streams), timeout=grace)

    async def _next_change(self, version: int) -> None:
        """Wait for a cache change; raise UNAVAILABLE when the API is shutting down. One bare
        future, no helper tasks: see ``WorkloadCache.change_waiter``."""
        stop = self._stop_event()
        if not stop.is_set() and self.cache.version == version:
            fut = self.cache.change_waiter()
            self._waiting.add(fut)
            try:
                await fut
            finally:
                fut.cancel()
                self._waiting.discard(fut)
        if stop.is_set():
            raise _status(Status.UNAVAILABLE, "workload API is shutting down")

    async def _tracked(self, coro: Any) -> None:
        task = asyncio.current_task()
        assert task is not None
        self._streams.add(task)
        try:
            await coro
        finally:
            self._streams.discard(task)

    # --- identity -----------------------------------------------------------------------
    @staticmethod
    def _check_header(stream: Any, call: _Call) -> None:
        values = stream.metadata.getall(HEADER, []) if stream.metadata is not None else []
        if values != ["true"]:
            call.log(logging.ERROR, "Security header missing from request")
            raise _status(Status.INVALID_ARGUMENT, "security header missing from request")

    async def _attest(self, stream: Any, call: _Call, callers: Optional[CallerRegistry] = None) -> list[Selector]:
        """The caller on ``stream``'s connection, attested (``callers``: the registry of the
        socket it came in on; the Workload API's by default)."""
        transport = stream.peer._transport
        caller = (callers or self.callers).lookup(transport)
        owned = caller is None
        if caller is None:
            try:
                caller = Caller.of_transport(transport)
            except OSError as exc:
                call.log(logging.ERROR, "Could not read caller credentials", error=str(exc))
                raise _status(Status.INTERNAL, "could not read caller credentials") from None
        call.caller = caller
        try:
            selectors = await self.attest_process(call, caller.pid, caller.uid, caller.gid)
            try:
                caller.is_alive()
            except CallerGone as exc:
                call.log(logging.WARNING, "Caller went away during attestation", error=str(exc))
                raise _status(
                    Status.UNAUTHENTICATED, f"could not verify existence of the original caller: {exc}"
                ) from None
            if self.rate_limiter and not call.quiet:  # experimental.ratelimit; never the agent itself
                self.rate_limiter.check(call.method, selectors)
            return selectors
        finally:
            if owned:
                caller.close()

    async def attest_process(self, call: _Call, pid: int, uid: int, gid: int) -> list[Selector]:
        """Every workload attestor on ``pid``, concurrently and each bounded; the union of their
        selectors. UNAVAILABLE "workload attestation failed" when all of them fail."""
        started = time.monotonic()
        attests = [_bounded(a, pid, uid, gid, self.attestor_timeout) for a in self.attestors]
        if self._attestation is not None:
            attests = [_timed(calls, a) for calls, a in zip(self._attestor_calls, attests)]
        results: list[Any]
        if len(attests) == 1:  # the common case (unix alone) runs inline, without a task
            try:
                results = [await attests[0]]
            except Exception as exc:
                results = [exc]
        else:
            results = await asyncio.gather(*attests, return_exceptions=True)
        selectors: set[Selector] = set()
        errors: list[str] = []
        for attestor, res in zip(self.attestors, results):
            if isinstance(res, asyncio.CancelledError):
                raise res
            if isinstance(res, BaseException):
                errors.append(f'workload attestor "{attestor.NAME}" failed: {res}')
            else:
                selectors.update(res)
        failed = bool(self.attestors) and len(errors) == len(self.attestors)
        if self._attestation is not None:
            self._attestation.done(started, Status.UNAVAILABLE if failed else Status.OK)
            self._discovered.add(len(selectors))
        if failed:
            call.log(logging.ERROR, "Workload attestation failed", error="; ".join(errors))
            raise _status(Status.UNAVAILABLE, "workload attestation failed")
        if errors and not call.quiet:
            _log.error("Failed to collect all selectors", extra=log.fields(pid=pid, error="; ".join(errors)))
        return sorted(selectors)

    def _no_identity(self, call: _Call, selectors: Sequence[Selector]) -> GRPCError:
        # Selectors stay out of the log but for the prefixes in log_selectors, as in SPIRE (values may be sensitive).
        fields: dict[str, Any] = {"registered": False, "selector_count": len(selectors)}
        if shown := loggable_selectors(selectors, self.log_selectors):
            fields["selectors"] = shown
        call.log(logging.ERROR, "No identity issued", **fields)
        return _status(Status.PERMISSION_DENIED, "no identity issued")

    def _entries(self, selectors: Sequence[Selector]) -> list[Entry]:
        return filter_hints(self.cache.entries_for(selectors))

    # --- FetchX509SVID ------------------------------------------------------------------
    def _x509_svid_response(self, entries: list[Entry]) -> Optional[pb.X509SVIDResponse]:
        """None while the bundle or an entry's SVID is not in the cache yet."""
        bundle = self.cache.own_bundle()
        if bundle is None:
            return None
        svids = []
        for e in entries:
            svid = self.cache.svids.get(e.id)
            if svid is None or svid.spiffe_id != e.spiffe_id:  # not (re)minted for this entry yet
                return None
            svids.append(svid)
        federated = self.cache.federated_bundles_for(entries)
        # What the response is made of; the same objects (and equal strings) make the same bytes.
        parts = (bundle, *svids, *federated.values(), *[e.hint for e in entries], *federated)
        if self._last_x509 is not None and len(parts) == len(self._last_x509[0]) and all(
                a is b or (isinstance(a, str) and a == b) for a, b in zip(parts, self._last_x509[0])):
            return self._last_x509[1]
        roots = certs_to_der_chain(bundle.x509_authorities)
        resp = pb.X509SVIDResponse()
        for e, s in zip(entries, svids):
            resp.svids.add(spiffe_id=e.spiffe_id, x509_svid=s.chain_der, x509_svid_key=s.key_der,
                           bundle=roots, hint=e.hint)
        for td, fb in federated.items():
            resp.federated_bundles[td] = certs_to_der_chain(fb.x509_authorities)
        self._last_x509 = (parts, resp)
        return resp

    async def FetchX509SVID(self, stream: Any) -> None:
        await self._tracked(self._fetch_x509_svid(stream))

    async def _fetch_x509_svid(self, stream: Any) -> None:
        call = _Call("FetchX509SVID")
        self._check_header(stream, call)
        await stream.recv_message()
        selectors = await self._attest(stream, call)
        # A subscriber: its entries keep their SVIDs in the bounded cache while the stream is open.
        with self.cache.subscribe(selectors):
            await self._x509_svid_updates(stream, call, selectors)

    async def _x509_svid_updates(self, stream: Any, call: _Call, selectors: list[Selector]) -> None:
        last: Optional[pb.X509SVIDResponse] = None
        while True:
            version = self.cache.version
            entries = self._entries(selectors)
            if not entries:
                raise self._no_identity(call, selectors)
            resp = self._x509_svid_response(entries)
            if resp is not None and resp is not last:
                changed = last is None or (resp.SerializeToString(deterministic=True)
                                           != last.SerializeToString(deterministic=True))
                last = resp
                if changed:
                    await stream.send_message(resp)
                    call.log(logging.DEBUG, "Fetched X.509 SVID", registered=True, count=len(resp.svids),
                             spiffe_id=",".join(s.spiffe_id for s in resp.svids))
            await self._next_change(version)

    # --- bundles -------------------------------------------------------------------------
    def _bundles(self, entries: list[Entry]) -> Optional[dict[str, Any]]:
        """Own bundle plus, for a caller with an identity, the federated ones its entries name."""
        own = self.cache.own_bundle()
        if own is None:
            return None
        out = {self.cache.trust_domain.id_string(): own}
        if entries:
            out.update(self.cache.federated_bundles_for(entries))
        return out

    async def _bundle_stream(self, stream: Any, call: _Call, make: Any, sent: Any = None) -> None:
        await self._tracked(self._bundle_loop(stream, call, make, sent))

    async def _bundle_loop(self, stream: Any, call: _Call, make: Any, sent: Any) -> None:
        """``sent``: a counter moved by each update sent (SPIRE's bundles_update.jwt)."""
        self._check_header(stream, call)
        await stream.recv_message()
        selectors = await self._attest(stream, call)
        last: Optional[bytes] = None
        while True:
            version = self.cache.version
            entries = self._entries(selectors)
            if not entries and not self.allow_unauthenticated_verifiers:
                raise self._no_identity(call, selectors)
            bundles = self._bundles(entries)
            if bundles is not None:
                resp = make(bundles)
                wire = resp.SerializeToString(deterministic=True)
                if wire != last:
                    await stream.send_message(resp)
                    last = wire
                    if sent is not None:
                        sent.incr()
                    call.log(logging.DEBUG, "Fetched bundles", registered=bool(entries),
                             trust_domains=",".join(sorted(bundles)))
            await self._next_change(version)

    async def FetchX509Bundles(self, stream: Any) -> None:
        def make(bundles: dict[str, Any]) -> pb.X509BundlesResponse:
            resp = pb.X509BundlesResponse()
            for td, b in bundles.items():
                resp.bundles[td] = certs_to_der_chain(b.x509_authorities)
            return resp

        await self._bundle_stream(stream, _Call("FetchX509Bundles"), make)

    async def FetchJWTBundles(self, stream: Any) -> None:
        def make(bundles: dict[str, Any]) -> pb.JWTBundlesResponse:
            resp = pb.JWTBundlesResponse()
            for td, b in bundles.items():
                resp.bundles[td] = jwks_json(b)
            return resp

        await self._bundle_stream(stream, _Call("FetchJWTBundles"), make,
                                  telemetry.current().counter(JWT_BUNDLES_UPDATE))

    # --- JWT-SVIDs ----------------------------------------------------------------------
    async def FetchJWTSVID(self, stream: Any) -> None:
        call = _Call("FetchJWTSVID")
        self._check_header(stream, call)
        req = await stream.recv_message()
        audience = list(req.audience)
        if not audience:
            call.log(logging.ERROR, "Missing required audience parameter")
            raise _status(Status.INVALID_ARGUMENT, "audience must be specified")
        if req.spiffe_id:
            try:
                SpiffeId.parse(req.spiffe_id)
            except SpiffeIdError as exc:
                call.log(logging.ERROR, "Invalid requested SPIFFE ID", spiffe_id=req.spiffe_id, error=str(exc))
                raise _status(Status.INVALID_ARGUMENT, f"invalid requested SPIFFE ID: {exc}") from None
        selectors = await self._attest(stream, call)
        resp = pb.JWTSVIDResponse()
        for e in self._entries(selectors):
            if req.spiffe_id and e.spiffe_id != req.spiffe_id:
                continue
            try:
                jwt = await self.cache.jwt_svid(e, audience)
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                reason = exc.message if isinstance(exc, GRPCError) else str(exc)
                call.log(logging.ERROR, "Could not fetch JWT-SVID", spiffe_id=e.spiffe_id, error=reason)
                raise _status(Status.UNAVAILABLE, f"could not fetch JWT-SVID: {reason}") from None
            resp.svids.add(spiffe_id=e.spiffe_id, svid=jwt.token, hint=e.hint)
        if not resp.svids:
            raise self._no_identity(call, selectors)
        call.log(logging.DEBUG, "Fetched JWT SVID", registered=True, audience=",".join(audience),
                 spiffe_id=",".join(s.spiffe_id for s in resp.svids))
        await stream.send_message(resp)

    async def ValidateJWTSVID(self, stream: Any) -> None:
        call = _Call("ValidateJWTSVID")
        self._check_header(stream, call)
        req = await stream.recv_message()
        if not req.audience:
            call.log(logging.ERROR, "Missing required audience parameter")
            raise _status(Status.INVALID_ARGUMENT, "audience must be specified")
        if not req.svid:
            call.log(logging.ERROR, "Missing required svid parameter")
            raise _status(Status.INVALID_ARGUMENT, "svid must be specified")
        # Any attested caller may validate; the keys are those of the bundles it can see.
        selectors = await self._attest(stream, call)
        bundles = self._bundles(self._entries(selectors)) or {}
        keys = {td: b.jwt_keys() for td, b in bundles.items()}
        try:
            spiffe_id, claims = validate_jwt_svid(req.svid, req.audience, keys)
        except ValueError as exc:  # JWTSVIDError: the token's fault, worded as go-spiffe does
            call.log(logging.WARNING, "Failed to validate JWT", audience=req.audience, error=str(exc))
            raise _status(Status.INVALID_ARGUMENT, str(exc)) from None
        sid = str(spiffe_id)
        claims = dict(claims)
        if SpiffeId.parse(sid).trust_domain != self.cache.trust_domain:
            claims = {k: v for k, v in claims.items() if k in self.allowed_foreign_jwt_claims}
        if isinstance(claims.get("aud"), str):
            claims["aud"] = [claims["aud"]]
        s = struct_pb2.Struct()
        json_format.Parse(json.dumps(claims, default=str), s)
        call.log(logging.DEBUG, "Successfully validated JWT", audience=req.audience, spiffe_id=sid)
        await stream.send_message(pb.ValidateJWTSVIDResponse(spiffe_id=sid, claims=s))
