"""spire-server entry create | update | delete | show | count."""

from __future__ import annotations

import json
import sys
from typing import Any, Callable, Optional, cast

from google.protobuf import wrappers_pb2

from ...common.cli import CommandError, Context, FlagSet
from ...common.cliprinter import eprint, go_code, go_quote, go_time, is_json, pluralize, print_proto_json, unix_time
from ...common.registration import MATCH_NUMBERS as MATCH
from ...proto.spire.api.server.entry.v1 import entry_grpc, entry_pb2
from ...proto.spire.api.types import entry_pb2 as types_entry_pb2
from ...proto.spire.api.types import federateswith_pb2, selector_pb2, spiffeid_pb2
from .arguments import check_int32, id_string, parse_selector, spiffe_id_proto, trust_domain_name
from .client import AdminClient, call, socket_flags

Entry = types_entry_pb2.Entry
SERVER_ID_PATH = "/spire/server"
LIST_PAGE_SIZE = 500


# ---------------------------------------------------------------- printing


def print_entry(e: Entry, write: Callable[[str], Any]) -> None:
    """SPIRE's printEntry: fixed-width labels, optional lines only when set."""
    lines = [
        f"Entry ID                : {e.id or '(none)'}",
        f"SPIFFE ID               : {id_string(e.spiffe_id if e.HasField('spiffe_id') else None)}",
        f"Parent ID               : {id_string(e.parent_id if e.HasField('parent_id') else None)}",
        f"Revision                : {e.revision_number}",
    ]
    if e.downstream:
        lines.append("Downstream              : true")
    lines.append(f"X509-SVID TTL           : {e.x509_svid_ttl or 'default'}")
    lines.append(f"JWT-SVID TTL            : {e.jwt_svid_ttl or 'default'}")
    if e.expires_at:
        lines.append(f"Expiration time         : {go_time(unix_time(e.expires_at))}")
    lines += [f"Selector                : {s.type}:{s.value}" for s in e.selectors]
    lines += [f"FederatesWith           : {td}" for td in e.federates_with]
    lines += [f"DNS name                : {d}" for d in e.dns_names]
    if e.admin:
        lines.append("Admin                   : true")
    if e.store_svid:
        lines.append("StoreSvid               : true")
    if e.hint:
        lines.append(f"Hint                    : {e.hint}")
    if e.HasField("additional_attributes"):
        if e.additional_attributes.disable_x509_svid_prefetch:
            lines.append("DisableX509SvidPrefetch : true")
        if e.additional_attributes.jwt_svid_include_jti:
            lines.append("JwtSvidIncludeJti       : true")
    write("\n".join(lines) + "\n\n")


def sort_entries(entries: list[Entry]) -> list[Entry]:
    """util.SortTypesEntries: by SPIFFE ID, parent ID, TTLs, then selectors."""
    for e in entries:
        sels = sorted(e.selectors, key=lambda s: (s.type, s.value))
        copies = [selector_pb2.Selector(type=s.type, value=s.value) for s in sels]
        del e.selectors[:]
        e.selectors.extend(copies)

    def key(e: Entry) -> tuple[Any, ...]:
        return (e.spiffe_id.trust_domain, e.spiffe_id.path, e.parent_id.trust_domain, e.parent_id.path,
                e.x509_svid_ttl, e.jwt_svid_ttl, len(e.selectors), [(s.type, s.value) for s in e.selectors])

    return sorted(entries, key=key)


# ---------------------------------------------------------------- -data files


def _read_input(path: str) -> str:
    if path == "-":
        return sys.stdin.read()
    try:
        with open(path, encoding="utf-8") as f:
            return f.read()
    except OSError as exc:
        reason = (exc.strerror or str(exc))
        raise CommandError(f"open {path}: {reason[:1].lower() + reason[1:]}") from None


def _load_json(text: str) -> Any:
    try:
        return json.loads(text)
    except json.JSONDecodeError as exc:
        raise CommandError(f"invalid JSON: {exc}") from None


def _field(obj: dict[str, Any], name: str) -> Any:
    """encoding/json matches keys case-insensitively."""
    if name in obj:
        return obj[name]
    for k, v in obj.items():
        if k.lower() == name.lower():
            return v
    return None


def _typed(obj: dict[str, Any], name: str, kind: type, where: str) -> Any:
    value = _field(obj, name)
    if value is None:
        return None
    ok = isinstance(value, kind) and not (kind is int and isinstance(value, bool))
    if kind is int and isinstance(value, float) and value.is_integer():
        value, ok = int(value), True
    if not ok:
        got = {str: "string", bool: "bool", list: "array", dict: "object"}.get(type(value), "number")
        raise CommandError(f"json: cannot unmarshal {got} into Go struct field {where}.{name}")
    return value


def entries_from_json(text: str) -> list[Entry]:
    """A RegistrationEntries JSON document (SPIRE's -data format) as API entries."""
    doc = _load_json(text)
    if not isinstance(doc, dict):
        raise CommandError("json: cannot unmarshal into Go value of type common.RegistrationEntries")
    raw = _typed(doc, "entries", list, "RegistrationEntries") or []
    where = "RegistrationEntry.entries"
    out = []
    for item in raw:
        if item is None:
            raise CommandError("missing registration entry")
        if not isinstance(item, dict):
            raise CommandError(f"json: cannot unmarshal into Go struct field RegistrationEntries.entries of type common.RegistrationEntry")
        e = Entry(id=_typed(item, "entry_id", str, where) or "")
        try:
            e.spiffe_id.CopyFrom(spiffe_id_proto(_typed(item, "spiffe_id", str, where) or ""))
        except CommandError as exc:
            raise CommandError(f"invalid SPIFFE ID: {exc}") from None
        try:
            e.parent_id.CopyFrom(spiffe_id_proto(_typed(item, "parent_id", str, where) or ""))
        except CommandError as exc:
            raise CommandError(f"invalid parent ID: {exc}") from None
        for sel in _typed(item, "selectors", list, where) or []:
            if isinstance(sel, dict):
                e.selectors.add(type=_typed(sel, "type", str, "Selector") or "", value=_typed(sel, "value", str, "Selector") or "")
        e.x509_svid_ttl = _typed(item, "x509_svid_ttl", int, where) or 0
        e.jwt_svid_ttl = _typed(item, "jwt_svid_ttl", int, where) or 0
        for td in _typed(item, "federates_with", list, where) or []:
            try:
                e.federates_with.append(trust_domain_name(str(td)))
            except CommandError as exc:
                raise CommandError(f"invalid federated trust domain: {exc}") from None
        e.admin = bool(_typed(item, "admin", bool, where))
        e.downstream = bool(_typed(item, "downstream", bool, where))
        e.expires_at = _typed(item, "entryExpiry", int, where) or 0
        e.dns_names.extend(str(d) for d in _typed(item, "dns_names", list, where) or [])
        e.revision_number = _typed(item, "revision_number", int, where) or 0
        e.store_svid = bool(_typed(item, "store_svid", bool, where))
        e.hint = _typed(item, "hint", str, where) or ""
        e.created_at = _typed(item, "created_at", int, where) or 0
        attrs = _typed(item, "additional_attributes", dict, where)
        if attrs is not None:
            e.additional_attributes.disable_x509_svid_prefetch = bool(_typed(attrs, "disable_x509_svid_prefetch", bool, "AdditionalAttributes"))
            e.additional_attributes.jwt_svid_include_jti = bool(_typed(attrs, "jwt_svid_include_jti", bool, "AdditionalAttributes"))
        out.append(e)
    return out


# ---------------------------------------------------------------- create / update


def _entry_flags(fs: FlagSet, update: bool) -> None:
    socket_flags(fs)
    if update:
        fs.string("entryID", "", "The Registration Entry ID of the record to update")
    else:
        fs.string("entryID", "", "A custom ID for this registration entry (optional). If not set, a new entry ID will be generated")
    fs.string("parentID", "", "The SPIFFE ID of this record's parent")
    fs.string("spiffeID", "", "The SPIFFE ID that this record represents")
    fs.int("x509SVIDTTL", 0, "The lifetime, in seconds, for x509-SVIDs issued based on this registration entry.")
    fs.int("jwtSVIDTTL", 0, "The lifetime, in seconds, for JWT-SVIDs issued based on this registration entry.")
    fs.string("data", "", "Path to a file containing registration JSON (optional). If set to '-', read the JSON from stdin.")
    fs.list("selector", "A colon-delimited type:value selector. Can be used more than once")
    fs.list("federatesWith", "SPIFFE ID of a trust domain to federate with. Can be used more than once")
    if not update:
        fs.bool("node", False, "If set, this entry will be applied to matching nodes rather than workloads")
    fs.bool("admin", False, "If set, the SPIFFE ID in this entry will be granted access to the SPIRE Server's management APIs")
    fs.bool("storeSVID", False, "A boolean value that, when set, indicates that the resulting issued SVID from this entry must be stored through an SVIDStore plugin")
    fs.bool("downstream", False, "A boolean value that, when set, indicates that the entry describes a downstream SPIRE server")
    fs.int("entryExpiry", 0, "An expiry, from epoch in seconds, for the resulting registration entry to be pruned")
    fs.list("dns", "A DNS name that will be included in SVIDs issued based on this entry, where appropriate. Can be used more than once")
    fs.string("hint", "", "The entry hint, used to disambiguate entries with the same SPIFFE ID")
    fs.bool("disableX509SVIDPrefetch", False, "A boolean value that, when set, disables prefetching X509 SVID for this entry")
    fs.bool("jwtSVIDIncludeJTI", False, "A boolean value that, when set, includes a unique 'jti' claim in JWT-SVIDs issued for this entry and bypasses the agent JWT-SVID cache")


def _validate(f: dict[str, Any], update: bool) -> None:
    if f["data"]:
        return
    if update and not f["entryID"]:
        raise CommandError("entry ID is required")
    if not f["selector"]:
        raise CommandError("at least one selector is required")
    if not update and f["node"] and f["federatesWith"]:
        raise CommandError("node entries can not federate")
    if update and not f["parentID"]:
        raise CommandError("a parent ID is required")
    if not update and not f["parentID"] and not f["node"]:
        raise CommandError("a parent ID is required if the node flag is not set")
    if not f["spiffeID"]:
        raise CommandError("a SPIFFE ID is required")
    if f["x509SVIDTTL"] < 0:
        raise CommandError("a positive x509-SVID TTL is required")
    if f["jwtSVIDTTL"] < 0:
        raise CommandError("a positive JWT-SVID TTL is required")


def _entry_from_flags(ctx: Context, update: bool) -> Entry:
    f = ctx.flags
    if update:
        parent = spiffe_id_proto(f["parentID"])
        spiffe = spiffe_id_proto(f["spiffeID"])
    else:
        spiffe = spiffe_id_proto(f["spiffeID"])
        if f["node"]:
            parent = spiffeid_pb2.SPIFFEID(trust_domain=spiffe.trust_domain, path=SERVER_ID_PATH)
        else:
            parent = spiffe_id_proto(f["parentID"])
    e = Entry(
        id=f["entryID"], parent_id=parent, spiffe_id=spiffe, downstream=f["downstream"],
        expires_at=f["entryExpiry"], dns_names=f["dns"], store_svid=f["storeSVID"],
        x509_svid_ttl=check_int32(f["x509SVIDTTL"], "X509 SVID TTL"),
        jwt_svid_ttl=check_int32(f["jwtSVIDTTL"], "JWT SVID TTL"), hint=f["hint"],
    )
    e.selectors.extend(parse_selector(s) for s in f["selector"])
    # create sets the attributes when a flag is true; update when a flag is given at all
    # (SPIRE's update flags are "set means true").
    prefetch = "disableX509SVIDPrefetch" in ctx.set_flags if update else f["disableX509SVIDPrefetch"]
    jti = "jwtSVIDIncludeJTI" in ctx.set_flags if update else f["jwtSVIDIncludeJTI"]
    if prefetch or jti:
        e.additional_attributes.disable_x509_svid_prefetch = bool(prefetch)
        e.additional_attributes.jwt_svid_include_jti = bool(jti)
    e.federates_with.extend(f["federatesWith"])
    e.admin = f["admin"]
    return e


def _print_batch(ctx: Context, results: Any, verb: str) -> int:
    ok = [r for r in results if r.status.code == 0]
    failed = [r for r in results if r.status.code != 0]
    for r in ok:
        print_entry(r.entry, ctx.stdout.write)
    for r in failed:
        eprint(ctx, f"Failed to {verb} the following entry (code: {go_code(r.status.code)}, msg: {go_quote(r.status.message)}):\n")
        print_entry(r.entry, ctx.stderr.write)
    if failed:
        raise CommandError(f"failed to {verb} one or more entries")
    return 0


async def _create_or_update(ctx: Context, update: bool) -> int:
    as_json = is_json(ctx)
    f = ctx.flags
    _validate(f, update)
    entries = entries_from_json(_read_input(f["data"])) if f["data"] else [_entry_from_flags(ctx, update)]
    async with AdminClient(f["socketPath"]) as c:
        stub = c.stub(entry_grpc.EntryStub)
        if update:
            if not f["data"] and ({"disableX509SVIDPrefetch", "jwtSVIDIncludeJTI"} & ctx.set_flags):
                existing = await call(stub.GetEntry(entry_pb2.GetEntryRequest(id=f["entryID"])),
                                      "failed to fetch existing entry to merge additional attributes: ")
                _merge_attributes(entries[0], existing, ctx.set_flags)
            resp = await call(stub.BatchUpdateEntry(entry_pb2.BatchUpdateEntryRequest(entries=entries)))
        else:
            resp = await call(stub.BatchCreateEntry(entry_pb2.BatchCreateEntryRequest(entries=entries)))
    # The API leaves failed entries out of its results: show what was sent.
    for i, r in enumerate(resp.results):
        if r.status.code != 0 and i < len(entries):
            r.entry.CopyFrom(entries[i])
    if as_json:
        print_proto_json(ctx, resp)
        return 0
    return _print_batch(ctx, resp.results, "update" if update else "create")


def _merge_attributes(e: Entry, existing: Entry, set_flags: set[str]) -> None:
    """Keep the attributes of the stored entry that the command line did not name."""
    requested = types_entry_pb2.Entry.AdditionalAttributes()
    requested.CopyFrom(e.additional_attributes)
    e.additional_attributes.CopyFrom(existing.additional_attributes)
    if "disableX509SVIDPrefetch" in set_flags:
        e.additional_attributes.disable_x509_svid_prefetch = requested.disable_x509_svid_prefetch
    if "jwtSVIDIncludeJTI" in set_flags:
        e.additional_attributes.jwt_svid_include_jti = requested.jwt_svid_include_jti


def create_flags(fs: FlagSet) -> None:
    _entry_flags(fs, update=False)


def update_flags(fs: FlagSet) -> None:
    _entry_flags(fs, update=True)


async def create(ctx: Context) -> int:
    return await _create_or_update(ctx, update=False)


async def update(ctx: Context) -> int:
    return await _create_or_update(ctx, update=True)


# ---------------------------------------------------------------- delete


def delete_flags(fs: FlagSet) -> None:
    socket_flags(fs)
    fs.string("entryID", "", "The Registration Entry ID of the record to delete.")
    fs.string("file", "", "Path to a file containing a JSON structure for batch deletion (optional). If set to '-', read from stdin.")


async def delete(ctx: Context) -> int:
    as_json = is_json(ctx)
    f = ctx.flags
    if not f["file"] and not f["entryID"]:
        raise CommandError("an entry ID is required")
    if f["file"]:
        doc = _load_json(_read_input(f["file"]))
        ids = _typed(doc, "ids", list, "BatchDeleteEntryRequest") if isinstance(doc, dict) else None
        ids = [str(i) for i in ids or []]
    else:
        ids = [f["entryID"]]
    async with AdminClient(f["socketPath"]) as c:
        resp = await call(c.stub(entry_grpc.EntryStub).BatchDeleteEntry(entry_pb2.BatchDeleteEntryRequest(ids=ids)))
    if as_json:
        print_proto_json(ctx, resp)
        return 0
    ok = [r for r in resp.results if r.status.code == 0]
    failed = [r for r in resp.results if r.status.code != 0]
    out = ctx.stdout.write
    for r in ok:
        out(f"Deleted entry with ID: {r.id}\n")
    if ok:
        out("\n\n")
    for r in failed:
        eprint(ctx, f"Failed to delete entry with ID {r.id} (code: {go_code(r.status.code)}, msg: {go_quote(r.status.message)})\n")
    if failed:
        out("\n\n")
        if ok:
            out(f"Deleted {len(ok)} entries successfully, but failed to delete {len(failed)} entries")
        else:
            out(f"Failed to delete {len(failed)} entries")
        ctx.stdout.flush()
        raise CommandError("failed to delete one or more entries")
    out(f"Deleted {len(ok)} entries successfully")
    return 0


# ---------------------------------------------------------------- show / count


def _filter_flags(fs: FlagSet, verb: str, with_entry_id: bool) -> None:
    socket_flags(fs)
    if with_entry_id:
        fs.string("entryID", "", f"The Entry ID of the records to {verb}")
    fs.string("parentID", "", f"The Parent ID of the records to {verb}")
    fs.string("spiffeID", "", f"The SPIFFE ID of the records to {verb}")
    fs.bool("downstream", False, "A boolean value that, when set, indicates that the entry describes a downstream SPIRE server")
    fs.list("selector", "A colon-delimited type:value selector. Can be used more than once")
    fs.list("federatesWith", "SPIFFE ID of a trust domain an entry is federate with. Can be used more than once")
    fs.string("matchFederatesWithOn", "superset", "The match mode used when filtering by federates with. Options: exact, any, superset and subset")
    fs.string("matchSelectorsOn", "superset", "The match mode used when filtering by selectors. Options: exact, any, superset and subset")
    fs.string("hint", "", f"The Hint of the records to {verb} (optional)")


def _match(value: str) -> int:
    if value not in MATCH:
        raise CommandError(f"match behavior {go_quote(value)} unknown")
    return MATCH[value]


def _build_filter(f: dict[str, Any], filt: Any, downstream_last: bool) -> None:
    """Fill a List/CountEntriesRequest.Filter from the flags, in SPIRE's order of checks."""
    if f["parentID"]:
        try:
            filt.by_parent_id.CopyFrom(spiffe_id_proto(f["parentID"]))
        except CommandError as exc:
            raise CommandError(f"error parsing parent ID {go_quote(f['parentID'])}: {exc}") from None
    if f["spiffeID"]:
        try:
            filt.by_spiffe_id.CopyFrom(spiffe_id_proto(f["spiffeID"]))
        except CommandError as exc:
            raise CommandError(f"error parsing SPIFFE ID {go_quote(f['spiffeID'])}: {exc}") from None
    if f["selector"]:
        match = _match(f["matchSelectorsOn"])
        sels = []
        for s in f["selector"]:
            try:
                sels.append(parse_selector(s))
            except CommandError as exc:
                raise CommandError(f"error parsing selectors: {exc}") from None
        filt.by_selectors.CopyFrom(selector_pb2.SelectorMatch(
            selectors=sels, match=cast("selector_pb2.SelectorMatch.MatchBehavior", match)))
    if not downstream_last:
        filt.by_downstream.CopyFrom(wrappers_pb2.BoolValue(value=f["downstream"]))
    if f["federatesWith"]:
        match = _match(f["matchFederatesWithOn"])
        filt.by_federates_with.CopyFrom(federateswith_pb2.FederatesWithMatch(
            trust_domains=f["federatesWith"], match=cast("federateswith_pb2.FederatesWithMatch.MatchBehavior", match)))
    if f["hint"]:
        filt.by_hint.CopyFrom(wrappers_pb2.StringValue(value=f["hint"]))
    if downstream_last:
        filt.by_downstream.CopyFrom(wrappers_pb2.BoolValue(value=f["downstream"]))


def show_flags(fs: FlagSet) -> None:
    _filter_flags(fs, "show", True)


async def show(ctx: Context) -> int:
    as_json = is_json(ctx)
    f = ctx.flags
    if f["entryID"] and (f["parentID"] or f["spiffeID"] or f["selector"]):
        raise CommandError("the -entryID flag can't be combined with others")
    entries: list[Entry] = []
    req: Optional[entry_pb2.ListEntriesRequest] = None
    if not f["entryID"]:
        req = entry_pb2.ListEntriesRequest(page_size=LIST_PAGE_SIZE)
        _build_filter(f, req.filter, downstream_last=True)
    async with AdminClient(f["socketPath"]) as c:
        stub = c.stub(entry_grpc.EntryStub)
        if req is None:
            entries.append(await call(stub.GetEntry(entry_pb2.GetEntryRequest(id=f["entryID"])),
                                      f"error fetching entry ID {f['entryID']}: "))
        else:
            while True:
                page = await call(stub.ListEntries(req), "error fetching entries: ")
                entries.extend(page.entries)
                if not page.next_page_token:
                    break
                req.page_token = page.next_page_token
    resp = entry_pb2.ListEntriesResponse(entries=sort_entries(entries))
    if as_json:
        print_proto_json(ctx, resp)
        return 0
    ctx.out(pluralize(f"Found {len(resp.entries)} ", "entry", "entries", len(resp.entries)))
    for e in resp.entries:
        print_entry(e, ctx.stdout.write)
    return 0


def count_flags(fs: FlagSet) -> None:
    _filter_flags(fs, "count", False)


async def count(ctx: Context) -> int:
    as_json = is_json(ctx)
    req = entry_pb2.CountEntriesRequest()
    _build_filter(ctx.flags, req.filter, downstream_last=False)
    async with AdminClient(ctx.flags["socketPath"]) as c:
        resp = await call(c.stub(entry_grpc.EntryStub).CountEntries(req))
    if as_json:
        print_proto_json(ctx, resp)
        return 0
    ctx.out(pluralize(f"{resp.count} registration ", "entry", "entries", resp.count))
    return 0
