"""spire.api.server.trustdomain.v1.TrustDomain: federation relationships and bundle refresh.

Messages and codes follow SPIRE's ``pkg/server/api/trustdomain/v1``: batch calls answer
per item, a relationship for the server's own trust domain is refused, ``RefreshBundle``
is NotFound for a trust domain the federation manager does not manage.
"""

from __future__ import annotations

from typing import Any, Optional, Protocol
from urllib.parse import urlsplit

from google.protobuf import empty_pb2
from grpclib.const import Status
from grpclib.exceptions import GRPCError

from ...common import log
from ...common.spiffeid import SpiffeId, SpiffeIdError, TrustDomain
from ...proto.spire.api.server.trustdomain.v1 import trustdomain_grpc, trustdomain_pb2 as pb
from ...proto.spire.api.types import federationrelationship_pb2 as fr_pb2
from ..core import ServerCore
from ..datastore.models import FederationRelationship
from . import convert
from .status import OK, status

_log = log.get("trustdomain_api")

ALL_FIELDS = ("bundle_endpoint_url", "bundle_endpoint_profile", "trust_domain_bundle")


class BundleRefresher(Protocol):
    async def reload(self) -> None: ...
    async def refresh_bundle_for(self, trust_domain: str) -> bool: ...


def _parse_td(value: str) -> TrustDomain:
    try:
        return TrustDomain.parse(value)
    except SpiffeIdError as exc:
        raise convert.InvalidInput(f"failed to parse trust domain: {exc}") from None


def relationship_from_proto(f: fr_pb2.FederationRelationship, fields: frozenset[str] = frozenset(ALL_FIELDS)) -> FederationRelationship:
    """SPIRE's ProtoToFederationRelationshipWithMask: validate and convert (InvalidInput says why)."""
    td = _parse_td(f.trust_domain)
    url = ""
    if "bundle_endpoint_url" in fields:
        url = f.bundle_endpoint_url
        try:
            parts = urlsplit(url)
        except ValueError as exc:
            raise convert.InvalidInput(f"failed to parse bundle endpoint URL: {exc}") from None
        if parts.scheme != "https":
            raise convert.InvalidInput("bundle endpoint URL must use the https scheme")
        if not parts.netloc:
            raise convert.InvalidInput("bundle endpoint URL must specify the host")
        if "@" in parts.netloc:
            raise convert.InvalidInput("bundle endpoint URL must not contain user info")
    profile, endpoint_id = "", ""
    if "bundle_endpoint_profile" in fields:
        which = f.WhichOneof("bundle_endpoint_profile")
        if which == "https_spiffe":
            try:
                endpoint_id = str(SpiffeId.parse(f.https_spiffe.endpoint_spiffe_id))
            except SpiffeIdError as exc:
                raise convert.InvalidInput(f"failed to parse endpoint SPIFFE ID: {exc}") from None
            profile = "https_spiffe"
        elif which == "https_web":
            profile = "https_web"
        else:
            raise convert.InvalidInput("unsupported bundle endpoint profile type: <nil>")
    fr = FederationRelationship(td.name, url, profile, endpoint_id)
    if "trust_domain_bundle" in fields and f.HasField("trust_domain_bundle"):
        try:
            fr.trust_domain_bundle = convert.bundle_from_proto(f.trust_domain_bundle)
        except convert.InvalidInput as exc:
            raise convert.InvalidInput(f"failed to parse bundle: {exc}") from None
        if fr.trust_domain_bundle.trust_domain_id != td.id_string():
            raise convert.InvalidInput(
                f'trust domain bundle ("{f.trust_domain_bundle.trust_domain}") must match the trust domain of the '
                f'federation relationship ("{td.name}")')
    return fr


def relationship_to_proto(fr: FederationRelationship, mask: Optional[fr_pb2.FederationRelationshipMask] = None) -> fr_pb2.FederationRelationship:
    def want(name: str) -> bool:
        return mask is None or bool(getattr(mask, name))

    out = fr_pb2.FederationRelationship(trust_domain=fr.trust_domain)
    if want("bundle_endpoint_url"):
        out.bundle_endpoint_url = fr.bundle_endpoint_url
    if want("bundle_endpoint_profile"):
        if fr.bundle_endpoint_profile == "https_spiffe":
            out.https_spiffe.endpoint_spiffe_id = fr.endpoint_spiffe_id
        else:
            out.https_web.SetInParent()
    if want("trust_domain_bundle") and fr.trust_domain_bundle is not None:
        out.trust_domain_bundle.CopyFrom(convert.bundle_to_proto(fr.trust_domain_bundle))
    return out


def _mask(req: Any, name: str) -> Optional[fr_pb2.FederationRelationshipMask]:
    return getattr(req, name) if req.HasField(name) else None


class TrustDomainService(trustdomain_grpc.TrustDomainBase):
    def __init__(self, core: ServerCore, refresher: BundleRefresher) -> None:
        self.core = core
        self.refresher = refresher

    async def _reload(self) -> None:
        try:
            await self.refresher.reload()
        except Exception as exc:  # the manager reloads on its own every few seconds anyway
            _log.error("Failed to reload configs", extra=log.fields(error=str(exc)))

    async def _warn_missing_endpoint_bundle(self, fr: FederationRelationship) -> None:
        if fr.trust_domain_bundle is None and fr.bundle_endpoint_profile == "https_spiffe":
            td = SpiffeId.parse(fr.endpoint_spiffe_id).trust_domain
            if await self.core.db(self.core.datastore.fetch_bundle, td.id_string()) is None:
                _log.warning("bundle not found for the endpoint SPIFFE ID trust domain",
                             extra=log.fields(endpoint_spiffe_id=fr.endpoint_spiffe_id))

    async def ListFederationRelationships(self, stream: Any) -> None:
        req = await stream.recv_message()
        size = req.page_size if req.page_size > 0 else 0
        items, token = await self.core.db(self.core.datastore.list_federation_relationships,
                                          req.page_token if size else "", size)
        mask = _mask(req, "output_mask")
        await stream.send_message(pb.ListFederationRelationshipsResponse(
            federation_relationships=[relationship_to_proto(fr, mask) for fr in items], next_page_token=token))

    async def GetFederationRelationship(self, stream: Any) -> None:
        req = await stream.recv_message()
        try:
            td = _parse_td(req.trust_domain)
        except convert.InvalidInput as exc:
            raise GRPCError(Status.INVALID_ARGUMENT, str(exc)) from None
        fr = await self.core.db(self.core.datastore.fetch_federation_relationship, td.name)
        if fr is None:
            raise GRPCError(Status.NOT_FOUND, "federation relationship does not exist")
        await stream.send_message(relationship_to_proto(fr, _mask(req, "output_mask")))

    async def BatchCreateFederationRelationship(self, stream: Any) -> None:
        req = await stream.recv_message()
        Result = pb.BatchCreateFederationRelationshipResponse.Result
        results, changed = [], False
        mask = _mask(req, "output_mask")
        for item in req.federation_relationships:
            try:
                fr = relationship_from_proto(item)
            except convert.InvalidInput as exc:
                results.append(Result(status=status(Status.INVALID_ARGUMENT, f"failed to convert federation relationship: {exc}")))
                continue
            if fr.trust_domain == self.core.trust_domain.name:
                results.append(Result(status=status(Status.INVALID_ARGUMENT,
                                                    "unable to create federation relationship for server trust domain")))
                continue
            try:
                stored = await self.core.db(self.core.datastore.create_federation_relationship, fr)
            except GRPCError as exc:
                results.append(Result(status=status(Status.INTERNAL, f"failed to create federation relationship: {exc.message}")))
                continue
            await self._warn_missing_endpoint_bundle(stored)
            if fr.trust_domain_bundle is not None:
                self.core.bundle_changed.set()
            changed = True
            results.append(Result(status=OK, federation_relationship=relationship_to_proto(stored, mask)))
        if changed:
            await self._reload()
        await stream.send_message(pb.BatchCreateFederationRelationshipResponse(results=results))

    async def BatchUpdateFederationRelationship(self, stream: Any) -> None:
        req = await stream.recv_message()
        Result = pb.BatchUpdateFederationRelationshipResponse.Result
        in_mask = _mask(req, "input_mask")
        fields = frozenset(ALL_FIELDS) if in_mask is None else frozenset(f for f in ALL_FIELDS if getattr(in_mask, f))
        out_mask = _mask(req, "output_mask")
        results, changed = [], False
        for item in req.federation_relationships:
            try:
                fr = relationship_from_proto(item, fields)
            except convert.InvalidInput as exc:
                results.append(Result(status=status(Status.INVALID_ARGUMENT, f"failed to convert federation relationship: {exc}")))
                continue
            try:
                stored = await self.core.db(self.core.datastore.update_federation_relationship, fr, set(fields))
            except GRPCError as exc:
                results.append(Result(status=status(Status.INTERNAL, f"failed to update federation relationship: {exc.message}")))
                continue
            await self._warn_missing_endpoint_bundle(stored)
            if "trust_domain_bundle" in fields and fr.trust_domain_bundle is not None:
                self.core.bundle_changed.set()
            changed = True
            results.append(Result(status=OK, federation_relationship=relationship_to_proto(stored, out_mask)))
        if changed:
            await self._reload()
        await stream.send_message(pb.BatchUpdateFederationRelationshipResponse(results=results))

    async def BatchDeleteFederationRelationship(self, stream: Any) -> None:
        req = await stream.recv_message()
        Result = pb.BatchDeleteFederationRelationshipResponse.Result
        results, changed = [], False
        for value in req.trust_domains:
            if not value:
                results.append(Result(trust_domain=value, status=status(Status.INVALID_ARGUMENT, "missing trust domain")))
                continue
            try:
                td = _parse_td(value)
            except convert.InvalidInput as exc:
                results.append(Result(trust_domain=value, status=status(Status.INVALID_ARGUMENT, str(exc))))
                continue
            try:
                await self.core.db(self.core.datastore.delete_federation_relationship, td.name)
            except GRPCError as exc:
                if exc.status == Status.NOT_FOUND:
                    results.append(Result(trust_domain=td.name, status=status(Status.NOT_FOUND, "federation relationship not found")))
                else:
                    results.append(Result(trust_domain=td.name, status=status(
                        Status.INTERNAL, f"failed to delete federation relationship: {exc.message}")))
                continue
            changed = True
            results.append(Result(trust_domain=td.name, status=OK))
        if changed:
            await self._reload()
        await stream.send_message(pb.BatchDeleteFederationRelationshipResponse(results=results))

    async def RefreshBundle(self, stream: Any) -> None:
        req = await stream.recv_message()
        try:
            td = _parse_td(req.trust_domain)
        except convert.InvalidInput as exc:
            raise GRPCError(Status.INVALID_ARGUMENT, str(exc)) from None
        try:
            managed = await self.refresher.refresh_bundle_for(td.name)
        except Exception as exc:
            _log.error("Failed to refresh bundle", extra=log.fields(trust_domain_id=td.name, error=str(exc)))
            raise GRPCError(Status.INTERNAL, f"failed to refresh bundle: {exc}") from None
        if not managed:
            raise GRPCError(Status.NOT_FOUND, f'no relationship with trust domain "{td.name}"')
        _log.debug("Bundle refreshed", extra=log.fields(trust_domain_id=td.name))
        await stream.send_message(empty_pb2.Empty())
