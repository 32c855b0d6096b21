"""spire.api.server.entry.v1.Entry: registration entries, and what agents may sync."""

from __future__ import annotations

from typing import Any, Optional

from grpclib.const import Status
from grpclib.exceptions import GRPCError

from ...common import log
from ...common.registration import ENTRY_MASK_FIELDS, Entry
from ...common.registration_proto import entry_from_proto, entry_to_proto
from ...proto.spire.api.server.entry.v1 import entry_grpc, entry_pb2
from ...proto.spire.api.types import entry_pb2 as types_entry_pb2
from ..cache import Authorized
from ..core import ServerCore
from . import convert
from .auth import caller_of
from .status import OK, error_status, status

_log = log.get("entry_api")

SYNC_PAGE_SIZE = 500
# Agents (with more than SYNC_PAGE_SIZE entries) whose revision pages are kept between changes.
REVISION_MEMO_AGENTS = 32


def _list_filters(core: ServerCore, flt: Any) -> dict[str, Any]:
    kw: dict[str, Any] = {}
    if flt is None:
        return kw
    try:
        if flt.HasField("by_parent_id"):
            kw["by_parent_id"] = str(convert.id_from_proto(flt.by_parent_id, "parent ID filter", core.trust_domain))
        if flt.HasField("by_spiffe_id"):
            kw["by_spiffe_id"] = str(convert.id_from_proto(flt.by_spiffe_id, "SPIFFE ID filter", core.trust_domain))
        if flt.HasField("by_selectors"):
            sels, match = convert.selector_match_from_proto(flt.by_selectors)
            if not sels:
                raise convert.InvalidInput("malformed selectors filter: empty selector set")
            kw["by_selectors"] = (sels, match)
        if flt.HasField("by_hint"):
            kw["by_hint"] = flt.by_hint.value
        if flt.HasField("by_downstream"):
            kw["by_downstream"] = flt.by_downstream.value
        if flt.HasField("by_federates_with"):
            kw["by_federates_with"] = convert.federates_with_match_from_proto(flt.by_federates_with)
    except convert.InvalidInput as exc:
        raise GRPCError(Status.INVALID_ARGUMENT, str(exc)) from None
    return kw


class EntryService(entry_grpc.EntryBase):
    def __init__(self, core: ServerCore) -> None:
        self.core = core
        # agent ID -> (answer version, SyncAuthorizedEntries revision pages); see _revision_pages.
        self._pages: dict[str, tuple[int, list[Any]]] = {}

    async def CountEntries(self, stream: Any) -> None:
        req = await stream.recv_message()
        kw = _list_filters(self.core, req.filter if req.HasField("filter") else None)
        n = await self.core.db(self.core.datastore.count_entries, **kw)
        await stream.send_message(entry_pb2.CountEntriesResponse(count=n))

    async def ListEntries(self, stream: Any) -> None:
        req = await stream.recv_message()
        if req.page_size < 0:
            raise GRPCError(Status.INVALID_ARGUMENT, "page size must not be negative")
        kw = _list_filters(self.core, req.filter if req.HasField("filter") else None)
        mask = req.output_mask if req.HasField("output_mask") else None
        try:
            entries, token = await self.core.db(
                self.core.datastore.list_entries, page_token=req.page_token, page_size=req.page_size, **kw
            )
        except GRPCError as exc:
            if exc.status == Status.INVALID_ARGUMENT:
                raise GRPCError(Status.INVALID_ARGUMENT, f"could not parse token: {exc.message}") from None
            raise
        await stream.send_message(
            entry_pb2.ListEntriesResponse(
                entries=[entry_to_proto(e, mask) for e in entries], next_page_token=token
            )
        )

    async def GetEntry(self, stream: Any) -> None:
        req = await stream.recv_message()
        if not req.id:
            raise GRPCError(Status.INVALID_ARGUMENT, "missing ID")
        e = await self.core.db(self.core.datastore.fetch_entry, req.id)
        if e is None:
            raise GRPCError(Status.NOT_FOUND, "entry not found")
        mask = req.output_mask if req.HasField("output_mask") else None
        await stream.send_message(entry_to_proto(e, mask))

    async def BatchCreateEntry(self, stream: Any) -> None:
        req = await stream.recv_message()
        caller = caller_of(stream)
        mask = req.output_mask if req.HasField("output_mask") else None
        Result = entry_pb2.BatchCreateEntryResponse.Result
        who = caller.describe()
        results: list[Any] = [None] * len(req.entries)
        todo: list[tuple[int, Entry]] = []
        for i, pb in enumerate(req.entries):
            try:
                todo.append((i, convert.entry_from_proto(pb, self.core.trust_domain)))
            except convert.InvalidInput as exc:
                results[i] = Result(status=status(Status.INVALID_ARGUMENT, f"failed to convert entry: {exc}"))
        # The whole batch is written in one transaction; each entry keeps its own outcome.
        try:
            outcomes: list[Any] = await self.core.db(
                self.core.datastore.create_entries_if_not_exist, [e for _, e in todo]) if todo else []
        except GRPCError as exc:
            outcomes = [exc] * len(todo)
        for (i, _), out in zip(todo, outcomes):
            if isinstance(out, Exception):
                code, message = error_status(out)
                results[i] = Result(status=status(code, f"failed to create entry: {message}"))
                continue
            stored, existed = out
            if existed:
                results[i] = Result(status=status(Status.ALREADY_EXISTS, "similar entry already exists"),
                                    entry=entry_to_proto(stored, mask))
                continue
            _log.info("Entry created", extra=log.fields(entry_id=stored.id, spiffe_id=stored.spiffe_id, caller=who))
            results[i] = Result(status=OK, entry=entry_to_proto(stored, mask))
        await self.core.refresh_cache()
        await stream.send_message(entry_pb2.BatchCreateEntryResponse(results=results))

    async def BatchUpdateEntry(self, stream: Any) -> None:
        req = await stream.recv_message()
        in_mask = req.input_mask if req.HasField("input_mask") else None
        out_mask = req.output_mask if req.HasField("output_mask") else None
        fields = None if in_mask is None else {f for f in ENTRY_MASK_FIELDS if getattr(in_mask, f, False)}
        Result = entry_pb2.BatchUpdateEntryResponse.Result
        results = []
        for pb in req.entries:
            if not pb.id:
                results.append(Result(status=status(Status.INVALID_ARGUMENT, "failed to convert entry: missing ID")))
                continue
            try:
                current = await self.core.db(self.core.datastore.fetch_entry, pb.id)
                if current is None:
                    results.append(Result(status=status(Status.NOT_FOUND, "entry not found")))
                    continue
                merged = _merge(current, pb, fields)
                e = convert.entry_from_proto(entry_to_proto(merged), self.core.trust_domain)
                e.id = pb.id
                stored = await self.core.db(self.core.datastore.update_entry, e, fields)
            except convert.InvalidInput as exc:
                results.append(Result(status=status(Status.INVALID_ARGUMENT, f"failed to convert entry: {exc}")))
                continue
            except GRPCError as exc:
                results.append(Result(status=status(exc.status, f"failed to update entry: {exc.message}")))
                continue
            results.append(Result(status=OK, entry=entry_to_proto(stored, out_mask)))
        await self.core.refresh_cache()
        await stream.send_message(entry_pb2.BatchUpdateEntryResponse(results=results))

    async def BatchDeleteEntry(self, stream: Any) -> None:
        req = await stream.recv_message()
        Result = entry_pb2.BatchDeleteEntryResponse.Result
        results = []
        for entry_id in req.ids:
            if not entry_id:
                results.append(Result(id=entry_id, status=status(Status.INVALID_ARGUMENT, "missing entry ID")))
                continue
            try:
                await self.core.db(self.core.datastore.delete_entry, entry_id)
                results.append(Result(id=entry_id, status=OK))
            except GRPCError as exc:
                msg = "entry not found" if exc.status == Status.NOT_FOUND else f"failed to delete entry: {exc.message}"
                results.append(Result(id=entry_id, status=status(exc.status, msg)))
        await self.core.refresh_cache()
        await stream.send_message(entry_pb2.BatchDeleteEntryResponse(results=results))

    async def _authorized(self, stream: Any) -> tuple[str, Authorized]:
        caller = caller_of(stream)
        agent = str(caller.spiffe_id)
        selectors = caller.agent_selectors if caller.is_agent else []  # read with its node by the middleware
        await self.core.refresh_cache()
        return agent, self.core.cache.authorized(agent, selectors)

    async def GetAuthorizedEntries(self, stream: Any) -> None:
        req = await stream.recv_message()
        _, authorized = await self._authorized(stream)
        mask = req.output_mask if req.HasField("output_mask") else None
        await stream.send_message(entry_pb2.GetAuthorizedEntriesResponse(
            entries=[self.core.cache.entry_proto(e, mask) for e in authorized.entries]))

    async def SyncAuthorizedEntries(self, stream: Any) -> None:
        req = await stream.recv_message()
        if req is None:
            return
        agent, authorized = await self._authorized(stream)
        entries = authorized.entries
        if req.ids:
            raise GRPCError(Status.INVALID_ARGUMENT, "specifying IDs on initial request is not supported")
        mask: Optional[types_entry_pb2.EntryMask] = req.output_mask if req.HasField("output_mask") else None
        if mask is not None and not mask.revision_number:
            raise GRPCError(Status.INVALID_ARGUMENT, "revision number cannot be masked")
        Resp = entry_pb2.SyncAuthorizedEntriesResponse
        if len(entries) <= SYNC_PAGE_SIZE:
            await stream.send_message(Resp(entries=[self.core.cache.entry_proto(e, mask) for e in entries]))
            return
        # Many entries: send revisions first; the agent asks for the ones it lacks.
        for page in self._revision_pages(agent, authorized):
            await stream.send_message(page)
        async for req in stream:
            out: list[Any] = []
            for entry_id in sorted(req.ids):
                e = authorized.by_id.get(entry_id)
                if e is None:
                    continue
                if len(out) == SYNC_PAGE_SIZE:
                    await stream.send_message(Resp(entries=out, more=True))
                    out = []
                out.append(self.core.cache.entry_proto(e, mask))
            await stream.send_message(Resp(entries=out, more=False))

    def _revision_pages(self, agent: str, authorized: Authorized) -> list[Any]:
        """The revision pages for an agent's entries, kept while its answer is unchanged: an
        agent re-syncing with nothing changed for it costs no message building."""
        hit = self._pages.get(agent)
        if hit is not None and hit[0] == authorized.version:
            return hit[1]
        Resp = entry_pb2.SyncAuthorizedEntriesResponse
        Rev = entry_pb2.EntryRevision
        entries = authorized.entries
        pages = [
            Resp(entry_revisions=[Rev(id=e.id, revision_number=e.revision_number, created_at=e.created_at)
                                  for e in entries[i:i + SYNC_PAGE_SIZE]],
                 more=i + SYNC_PAGE_SIZE < len(entries))
            for i in range(0, len(entries), SYNC_PAGE_SIZE)
        ]
        self._pages.pop(agent, None)
        while len(self._pages) >= REVISION_MEMO_AGENTS:
            self._pages.pop(next(iter(self._pages)))
        self._pages[agent] = (authorized.version, pages)
        return pages


def _merge(current: Entry, pb: Any, fields: Optional[set[str]]) -> Entry:
    """The entry as it will be after applying the masked fields of ``pb`` (all when no mask)."""
    new = entry_to_proto(current)
    for f in ENTRY_MASK_FIELDS if fields is None else fields:
        if f in ("spiffe_id", "parent_id"):
            getattr(new, f).CopyFrom(getattr(pb, f))
        elif f in ("selectors", "federates_with", "dns_names"):
            del getattr(new, f)[:]
            getattr(new, f).extend(getattr(pb, f))
        else:
            setattr(new, f, getattr(pb, f))
    return entry_from_proto(new)
