"""Envoy SDS v3 (``envoy.service.secret.v3.SecretDiscoveryService``) on the Workload API socket.

As SPIRE serves it (pkg/agent/endpoints/sdsv3): the caller is attested like a Workload API
caller (no security header: Envoy sends none) and asks for secrets by name. A TLS
certificate secret is named by its SPIFFE ID, or ``default_svid_name`` for the first
identity; a validation context by trust domain ID, or ``default_bundle_name`` for the
agent's own; ``default_all_bundles_name`` is every bundle as one SPIFFE validator config.
Envoy 1.18 and later get SPIFFE validator configs instead of ``trusted_ca`` unless
``disable_spiffe_cert_validation`` is set (in the agent config or the node's metadata).
An empty name list means everything. A name the caller may not have ends the stream with
InvalidArgument. Streams are versioned: every change of what the caller sees is a new
version, pushed with a new nonce; a request carrying another nonce is stale and ignored;
an ACK or NACK with the same names sends nothing (a NACK is logged, never answered by
resending the version Envoy just rejected); new names are answered at once.
"""

from __future__ import annotations

import asyncio
import collections
import logging
import secrets
from dataclasses import dataclass, field
from typing import Any, Optional, Sequence

from cryptography import x509
from cryptography.hazmat.primitives.serialization import Encoding
from envoy.config.core.v3 import base_pb2, extension_pb2
from envoy.extensions.transport_sockets.tls.v3 import common_pb2, secret_pb2, tls_spiffe_validator_config_pb2
from envoy.service.discovery.v3 import discovery_pb2
from google.protobuf import any_pb2
from grpclib.const import Status
from grpclib.exceptions import GRPCError

from ...common import log
from ...common.keys import private_key_to_pem
from ...common.registration import Entry, Selector
from ...common.x509util import certs_to_pem
from .handler import WorkloadAPIService, _Call
from .sds_grpc import SecretDiscoveryServiceBase

_log = log.get("sds")

SECRET_TYPE_URL = "type.googleapis.com/envoy.extensions.transport_sockets.tls.v3.Secret"
SPIFFE_VALIDATOR = "envoy.tls.cert_validator.spiffe"
DISABLE_VALIDATION_KEY = "disable_spiffe_cert_validation"


@dataclass(frozen=True)
class SDSNames:
    """The agent's ``sds { ... }`` block (SPIRE's defaults)."""

    default_svid_name: str = "default"
    default_bundle_name: str = "ROOTCA"
    default_all_bundles_name: str = "ALL"
    disable_spiffe_cert_validation: bool = False


@dataclass(frozen=True)
class Identity:
    spiffe_id: str
    chain: Sequence[x509.Certificate]
    key: Any  # the SVID's private key (cryptography)


@dataclass(frozen=True)
class WorkloadUpdate:
    """What one caller sees: the agent's bundle (by trust domain ID), the federated bundles its
    entries name, its identities (the first is the default one)."""

    trust_domain_id: str
    bundle: Optional[Sequence[x509.Certificate]]
    federated: dict[str, Sequence[x509.Certificate]] = field(default_factory=dict)
    identities: Sequence[Identity] = ()


# --- resources ---------------------------------------------------------------------------
def _pack(secret: secret_pb2.Secret) -> any_pb2.Any:
    out = any_pb2.Any()
    out.Pack(secret)
    return out


def _inline(data: bytes) -> base_pb2.DataSource:
    return base_pb2.DataSource(inline_bytes=data)


def tls_certificate(name: str, identity: Identity) -> secret_pb2.Secret:
    """Chain PEM (leaf first) and the PKCS#8 key PEM, inline."""
    return secret_pb2.Secret(name=name, tls_certificate=common_pb2.TlsCertificate(
        certificate_chain=_inline(certs_to_pem(identity.chain)), private_key=_inline(private_key_to_pem(identity.key))))


def _td_name(td_id: str) -> str:
    return td_id.removeprefix("spiffe://")


def trusted_ca(name: str, roots: Sequence[x509.Certificate]) -> secret_pb2.Secret:
    return secret_pb2.Secret(name=name, validation_context=common_pb2.CertificateValidationContext(
        trusted_ca=_inline(certs_to_pem(roots))))


def spiffe_validator(name: str, bundles: dict[str, Sequence[x509.Certificate]]) -> secret_pb2.Secret:
    """A SPIFFE validator config with one trust domain per bundle, ordered by name."""
    cfg = tls_spiffe_validator_config_pb2.SPIFFECertValidatorConfig()
    for td_name, roots in sorted((_td_name(td), roots) for td, roots in bundles.items()):
        cfg.trust_domains.add(name=td_name, trust_bundle=_inline(certs_to_pem(roots)))
    typed = any_pb2.Any()
    typed.Pack(cfg)
    return secret_pb2.Secret(name=name, validation_context=common_pb2.CertificateValidationContext(
        custom_validator_config=extension_pb2.TypedExtensionConfig(name=SPIFFE_VALIDATOR, typed_config=typed)))


def supports_spiffe_validator(req: discovery_pb2.DiscoveryRequest) -> bool:
    """Envoy 1.18 and later (told by the node's user_agent_build_version)."""
    if not req.node.HasField("user_agent_build_version"):
        return False
    v = req.node.user_agent_build_version.version
    return (v.major_number == 1 and v.minor_number > 17) or v.major_number > 1


def _parse_bool(value: Any) -> Optional[bool]:
    kind = value.WhichOneof("kind")
    if kind == "bool_value":
        return bool(value.bool_value)
    if kind == "string_value":  # Go's strconv.ParseBool spellings
        return {"1": True, "t": True, "T": True, "TRUE": True, "true": True, "True": True, "0": False,
                "f": False, "F": False, "FALSE": False, "false": False, "False": False}.get(value.string_value)
    return None


def spiffe_validation_disabled(req: discovery_pb2.DiscoveryRequest, configured: bool) -> bool:
    """The agent's setting, overridden by a parsable ``disable_spiffe_cert_validation`` in the
    node's metadata (an unparsable value is ignored, as SPIRE does)."""
    fields = req.node.metadata.fields
    if DISABLE_VALIDATION_KEY in fields:
        override = _parse_bool(fields[DISABLE_VALIDATION_KEY])
        if override is not None:
            return override
    return configured


def _quoted(names: Sequence[str]) -> str:
    return "[" + " ".join('"' + n.replace("\\", "\\\\").replace('"', '\\"') + '"' for n in names) + "]"


def build_response(names_cfg: SDSNames, version_info: str, req: discovery_pb2.DiscoveryRequest,
                   upd: WorkloadUpdate) -> discovery_pb2.DiscoveryResponse:
    """SPIRE's buildResponse: the secrets ``req`` names (all of them when it names none).
    A streaming response (``version_info`` set) gets a fresh nonce."""
    resp = discovery_pb2.DiscoveryResponse(type_url=req.type_url, version_info=version_info)
    if version_info:
        resp.nonce = secrets.token_hex(4)
    names = {n for n in req.resource_names if n}
    everything = not names
    bundles: dict[str, Sequence[x509.Certificate]] = {}
    if upd.bundle is not None:
        bundles[upd.trust_domain_id] = upd.bundle
    bundles.update(upd.federated)
    spiffe = supports_spiffe_validator(req) and not spiffe_validation_disabled(
        req, names_cfg.disable_spiffe_cert_validation)

    def one(name: str, td_id: str) -> secret_pb2.Secret:
        if td_id not in bundles:
            raise GRPCError(Status.NOT_FOUND if spiffe else Status.INTERNAL,
                            f'no bundle found for trust domain: "{td_id}"')
        return spiffe_validator(name, {td_id: bundles[td_id]}) if spiffe else trusted_ca(name, bundles[td_id])

    out: list[secret_pb2.Secret] = []
    td = upd.trust_domain_id
    if upd.bundle is not None:
        if everything or td in names:
            out.append(one(td, td))
            names.discard(td)
        elif names_cfg.default_bundle_name in names:
            out.append(one(names_cfg.default_bundle_name, td))
            names.discard(names_cfg.default_bundle_name)
        elif names_cfg.default_all_bundles_name in names:
            if not spiffe:
                raise GRPCError(Status.INTERNAL, 'unable to use "SPIFFE validator" on Envoy below 1.17')
            out.append(spiffe_validator(names_cfg.default_all_bundles_name, bundles))
            names.discard(names_cfg.default_all_bundles_name)
    for fed in upd.federated:
        if everything or fed in names:
            out.append(one(fed, fed))
            names.discard(fed)
    for i, ident in enumerate(upd.identities):
        if everything or ident.spiffe_id in names:
            out.append(tls_certificate(ident.spiffe_id, ident))
            names.discard(ident.spiffe_id)
        elif i == 0 and names_cfg.default_svid_name in names:
            out.append(tls_certificate(names_cfg.default_svid_name, ident))
            names.discard(names_cfg.default_svid_name)
    if names:
        raise GRPCError(Status.INVALID_ARGUMENT,
                        f"workload is not authorized for the requested identities {_quoted(sorted(names))}")
    resp.resources.extend(_pack(s) for s in out)
    return resp


# --- the stream's version and nonce bookkeeping --------------------------------------------
class StreamState:
    """SPIRE's StreamSecrets state machine, without the I/O: ``on_request`` and ``on_update``
    say whether a response is due; ``sent`` records its nonce."""

    def __init__(self, call: Optional[_Call] = None) -> None:
        self.version = 0
        self.last_nonce = ""
        self.last_req: Optional[discovery_pb2.DiscoveryRequest] = None
        self.have_update = False
        self._call = call

    @property
    def version_info(self) -> str:
        return str(self.version)

    def _log(self, level: int, msg: str, **fields: Any) -> None:
        if self._call is not None:
            self._call.log(level, msg, **fields)
        else:
            _log.log(level, msg, extra=log.fields(**fields))

    def on_request(self, req: discovery_pb2.DiscoveryRequest) -> bool:
        names = ",".join(req.resource_names)
        if req.HasField("error_detail"):
            self._log(logging.ERROR, "Envoy reported errors applying secrets", resource_names=names,
                      error=req.error_detail.message)
        if self.last_nonce:
            if req.response_nonce != self.last_nonce:
                self._log(logging.WARNING, "Received unexpected nonce; ignoring request", nonce=req.response_nonce,
                          expect=self.last_nonce)
                return False
            if req.version_info != self.version_info:
                self._log(logging.ERROR, "Client rejected expected version and rolled back",
                          version_info=req.version_info, expect=self.version_info)
        changed = self.last_req is None or set(self.last_req.resource_names) != set(req.resource_names) or len(
            self.last_req.resource_names) != len(req.resource_names)
        self.last_req = req
        return changed and self.have_update

    def on_update(self) -> bool:
        self.version += 1
        self.have_update = True
        return self.last_req is not None

    def sent(self, resp: discovery_pb2.DiscoveryResponse) -> None:
        self.last_nonce = resp.nonce


# --- the service ---------------------------------------------------------------------------
class SecretDiscoveryService(SecretDiscoveryServiceBase):
    def __init__(self, workload: WorkloadAPIService, names: SDSNames = SDSNames()) -> None:
        self.workload = workload
        self.cache = workload.cache
        self.names = names

    def _update(self, entries: list[Entry], *, complete: bool) -> Optional[WorkloadUpdate]:
        """None while the bundle, or (``complete``) one of the entries' SVIDs, is not cached yet."""
        own = self.cache.own_bundle()
        if own is None:
            return None
        identities = []
        for e in entries:
            svid = self.cache.svids.get(e.id)
            if svid is None or svid.spiffe_id != e.spiffe_id:
                if complete:
                    return None
                continue
            identities.append(Identity(e.spiffe_id, svid.chain, svid.key))
        federated = {td: b.x509_authorities for td, b in self.cache.federated_bundles_for(entries).items()}
        return WorkloadUpdate(self.cache.trust_domain.id_string(), own.x509_authorities, federated, identities)

    @staticmethod
    def _fingerprint(upd: WorkloadUpdate) -> tuple[Any, ...]:
        def ders(certs: Sequence[x509.Certificate]) -> tuple[bytes, ...]:
            return tuple(c.public_bytes(Encoding.DER) for c in certs)

        return (ders(upd.bundle or ()), tuple((td, ders(r)) for td, r in sorted(upd.federated.items())),
                tuple((i.spiffe_id, ders(i.chain)) for i in upd.identities))

    async def _selectors(self, stream: Any, call: _Call) -> list[Selector]:
        try:
            return await self.workload._attest(stream, call)
        except GRPCError as exc:
            call.log(logging.ERROR, "Failed to attest the workload", error=exc.message)
            raise

    async def StreamSecrets(self, stream: Any) -> None:
        await self.workload._tracked(self._stream_secrets(stream))

    async def _stream_secrets(self, stream: Any) -> None:
        call = _Call("StreamSecrets")
        selectors = await self._selectors(stream, call)
        requests: collections.deque[Optional[discovery_pb2.DiscoveryRequest]] = collections.deque()
        arrived = asyncio.Event()

        async def read() -> None:
            while True:
                req = await stream.recv_message()
                requests.append(req)
                arrived.set()
                if req is None:
                    return

        reader = asyncio.ensure_future(read())
        state = StreamState(call)
        upd: Optional[WorkloadUpdate] = None
        seen: Optional[tuple[Any, ...]] = None
        try:
            with self.cache.subscribe(selectors):
                while True:
                    version = self.cache.version
                    current = self._update(self.workload._entries(selectors), complete=True)
                    due = False
                    if current is not None and self._fingerprint(current) != seen:
                        upd, seen = current, self._fingerprint(current)
                        due = state.on_update()
                    while not due and requests:
                        req = requests.popleft()
                        if req is None:
                            return
                        _log.debug("Received StreamSecrets request", extra=log.fields(
                            resource_names=",".join(req.resource_names), version_info=req.version_info,
                            nonce=req.response_nonce))
                        due = state.on_request(req)
                    if due:
                        assert upd is not None and state.last_req is not None
                        try:
                            resp = build_response(self.names, state.version_info, state.last_req, upd)
                        except GRPCError as exc:
                            call.log(logging.ERROR, "Error building stream secrets response", error=exc.message)
                            raise
                        _log.debug("Sending StreamSecrets response", extra=log.fields(
                            version_info=resp.version_info, nonce=resp.nonce, count=len(resp.resources)))
                        await stream.send_message(resp)
                        state.sent(resp)
                        continue
                    if reader.done() and not requests:
                        reader.result()  # the stream's error, if any
                        return
                    arrived.clear()
                    await self._next(version, arrived, reader)
        finally:
            reader.cancel()

    async def _next(self, version: int, arrived: asyncio.Event, reader: asyncio.Future[None]) -> None:
        """Wait for a cache change, a request, or the end of the request stream."""
        change = asyncio.ensure_future(self.workload._next_change(version))
        waiting = asyncio.ensure_future(arrived.wait())
        try:
            waits: set[asyncio.Future[Any]] = {change, waiting, reader}
            done, _ = await asyncio.wait(waits, return_when=asyncio.FIRST_COMPLETED)
            if change in done:
                change.result()  # UNAVAILABLE when the agent stops
        finally:
            change.cancel()
            waiting.cancel()

    async def DeltaSecrets(self, stream: Any) -> None:
        raise GRPCError(Status.UNIMPLEMENTED, "Method is not implemented")

    async def FetchSecrets(self, stream: Any) -> None:
        call = _Call("FetchSecrets")
        req = await stream.recv_message()
        selectors = await self._selectors(stream, call)
        upd = self._update(self.workload._entries(selectors), complete=False)
        if upd is None:
            raise GRPCError(Status.UNAVAILABLE, "bundle not available yet")
        try:
            resp = build_response(self.names, "", req, upd)
        except GRPCError as exc:
            call.log(logging.ERROR, "Error building fetch secrets response", error=exc.message)
            raise
        _log.debug("Sending FetchSecrets response", extra=log.fields(
            resource_names=",".join(req.resource_names), count=len(resp.resources)))
        await stream.send_message(resp)


