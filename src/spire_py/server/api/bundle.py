"""spire.api.server.bundle.v1.Bundle: the trust domain's bundle and federated bundles."""

from __future__ import annotations

from typing import Any

from grpclib.const import Status
from grpclib.exceptions import GRPCError

from ...common import log
from ...common.spiffeid import SpiffeIdError, TrustDomain
from ...proto.spire.api.server.bundle.v1 import bundle_grpc, bundle_pb2
from ...proto.spire.api.types import bundle_pb2 as types_bundle_pb2
from ..core import ServerCore
from ..datastore.models import BUNDLE_MASK_FIELDS, Bundle
from . import convert
from .status import OK, status

_log = log.get("bundle_api")

DELETE_MODES = {0: "restrict", 1: "delete", 2: "dissociate"}


def _mask(req: Any, name: str = "output_mask") -> Any:
    return getattr(req, name) if req.HasField(name) else None


class BundleService(bundle_grpc.BundleBase):
    def __init__(self, core: ServerCore) -> None:
        self.core = core

    @property
    def own_td(self) -> str:
        return self.core.trust_domain.id_string()

    async def _own(self) -> Bundle:
        b = await self.core.db(self.core.datastore.fetch_bundle, self.own_td)
        if b is None:
            raise GRPCError(Status.NOT_FOUND, "bundle not found")
        return b

    def _federated_td(self, value: str) -> str:
        try:
            td = TrustDomain.parse(value)
        except SpiffeIdError as exc:
            raise GRPCError(Status.INVALID_ARGUMENT, f"trust domain argument is not valid: {exc}") from None
        if td == self.core.trust_domain:
            raise GRPCError(Status.INVALID_ARGUMENT, "getting a federated bundle for the server's own trust domain is not allowed")
        return td.id_string()

    async def GetBundle(self, stream: Any) -> None:
        req = await stream.recv_message()
        await stream.send_message(convert.bundle_to_proto(await self._own(), _mask(req)))

    async def AppendBundle(self, stream: Any) -> None:
        req = await stream.recv_message()
        try:
            b = convert.bundle_from_proto(types_bundle_pb2.Bundle(
                trust_domain=self.core.trust_domain.name,
                x509_authorities=req.x509_authorities, jwt_authorities=req.jwt_authorities))
        except convert.InvalidInput as exc:
            raise GRPCError(Status.INVALID_ARGUMENT, str(exc)) from None
        merged = await self.core.db(self.core.datastore.append_bundle, b)
        self.core.bundle_changed.set()
        await stream.send_message(convert.bundle_to_proto(merged, _mask(req)))

    async def PublishJWTAuthority(self, stream: Any) -> None:
        req = await stream.recv_message()
        if not req.HasField("jwt_authority"):
            raise GRPCError(Status.INVALID_ARGUMENT, "missing JWT authority")
        try:
            b = convert.bundle_from_proto(types_bundle_pb2.Bundle(
                trust_domain=self.core.trust_domain.name, jwt_authorities=[req.jwt_authority]))
        except convert.InvalidInput as exc:
            raise GRPCError(Status.INVALID_ARGUMENT, str(exc)) from None
        merged = await self.core.db(self.core.datastore.append_bundle, b)
        self.core.bundle_changed.set()
        await stream.send_message(bundle_pb2.PublishJWTAuthorityResponse(
            jwt_authorities=convert.bundle_to_proto(merged).jwt_authorities))

    async def PublishWITAuthority(self, stream: Any) -> None:
        await stream.recv_message()
        raise GRPCError(Status.UNIMPLEMENTED, "WIT-SVIDs are not supported")

    async def CountBundles(self, stream: Any) -> None:
        await stream.recv_message()
        n = await self.core.db(self.core.datastore.count_bundles)
        await stream.send_message(bundle_pb2.CountBundlesResponse(count=n))

    async def ListFederatedBundles(self, stream: Any) -> None:
        req = await stream.recv_message()
        if req.page_size < 0:
            raise GRPCError(Status.INVALID_ARGUMENT, "page size must not be negative")
        bundles, token = await self.core.db(self.core.datastore.list_bundles, page_token=req.page_token, page_size=req.page_size)
        await stream.send_message(bundle_pb2.ListFederatedBundlesResponse(
            bundles=[convert.bundle_to_proto(b, _mask(req)) for b in bundles if b.trust_domain_id != self.own_td],
            next_page_token=token))

    async def GetFederatedBundle(self, stream: Any) -> None:
        req = await stream.recv_message()
        td = self._federated_td(req.trust_domain)
        b = await self.core.db(self.core.datastore.fetch_bundle, td)
        if b is None:
            raise GRPCError(Status.NOT_FOUND, "bundle not found")
        await stream.send_message(convert.bundle_to_proto(b, _mask(req)))

    async def _batch(self, req: Any, op: str, Result: Any) -> list[Any]:
        results = []
        for pb in req.bundle:
            try:
                b = convert.bundle_from_proto(pb)
                if b.trust_domain_id == self.own_td:
                    raise convert.InvalidInput("creating a federated bundle for the server's own trust domain is not allowed")
            except convert.InvalidInput as exc:
                results.append(Result(status=status(Status.INVALID_ARGUMENT, f"failed to convert bundle: {exc}")))
                continue
            try:
                if op == "create":
                    stored = await self.core.db(self.core.datastore.create_bundle, b)
                elif op == "update":
                    mask = _mask(req, "input_mask")
                    fields = None if mask is None else {f for f in BUNDLE_MASK_FIELDS if getattr(mask, f)}
                    stored = await self.core.db(self.core.datastore.update_bundle, b, fields)
                else:
                    stored = await self.core.db(self.core.datastore.set_bundle, b)
            except GRPCError as exc:
                msg = "bundle already exists" if exc.status == Status.ALREADY_EXISTS else (
                    "bundle not found" if exc.status == Status.NOT_FOUND else f"failed to {op} bundle: {exc.message}")
                results.append(Result(status=status(exc.status, msg)))
                continue
            results.append(Result(status=OK, bundle=convert.bundle_to_proto(stored, _mask(req))))
        return results

    async def BatchCreateFederatedBundle(self, stream: Any) -> None:
        req = await stream.recv_message()
        Resp = bundle_pb2.BatchCreateFederatedBundleResponse
        await stream.send_message(Resp(results=await self._batch(req, "create", Resp.Result)))

    async def BatchUpdateFederatedBundle(self, stream: Any) -> None:
        req = await stream.recv_message()
        Resp = bundle_pb2.BatchUpdateFederatedBundleResponse
        await stream.send_message(Resp(results=await self._batch(req, "update", Resp.Result)))

    async def BatchSetFederatedBundle(self, stream: Any) -> None:
        req = await stream.recv_message()
        Resp = bundle_pb2.BatchSetFederatedBundleResponse
        await stream.send_message(Resp(results=await self._batch(req, "set", Resp.Result)))

    async def BatchDeleteFederatedBundle(self, stream: Any) -> None:
        req = await stream.recv_message()
        Resp = bundle_pb2.BatchDeleteFederatedBundleResponse
        mode = DELETE_MODES.get(req.mode, "restrict")
        results = []
        for value in req.trust_domains:
            try:
                td = self._federated_td(value)
                await self.core.db(self.core.datastore.delete_bundle, td, mode)
                results.append(Resp.Result(status=OK, trust_domain=value))
            except GRPCError as exc:
                msg = "bundle not found" if exc.status == Status.NOT_FOUND else exc.message
                results.append(Resp.Result(status=status(exc.status, msg or ""), trust_domain=value))
        await stream.send_message(Resp(results=results))
