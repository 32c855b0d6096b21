"""spire.api.server.entry.v1.Entry over real gRPC against an in-process server: each RPC's
main path, and every entry validation of server/api/convert.py answered per item as
InvalidArgument "failed to convert entry: <what convert says>"."""

from __future__ import annotations

import pytest
from grpclib.const import Status
from grpclib.exceptions import GRPCError

from spire_py.proto.spire.api.server.entry.v1 import entry_grpc, entry_pb2
from spire_py.proto.spire.api.types import entry_pb2 as types_pb2
from spire_py.proto.spire.api.types import selector_pb2
from tests.unit.helpers.inprocess_server import TD, Handle, spiffe_id

AGENT_PATH = "/agent"


def entry(path: str = "/w", parent: str = AGENT_PATH, selectors: tuple[tuple[str, str], ...] = (("unix", "uid:1000"),),
          **kw: object) -> types_pb2.Entry:
    return types_pb2.Entry(spiffe_id=spiffe_id(path), parent_id=spiffe_id(parent),
                           selectors=[selector_pb2.Selector(type=t, value=v) for t, v in selectors], **kw)


def api(server: Handle) -> entry_grpc.EntryStub:
    return server.admin_stub(entry_grpc.EntryStub)


async def create(server: Handle, *entries: types_pb2.Entry) -> list[entry_pb2.BatchCreateEntryResponse.Result]:
    resp = await api(server).BatchCreateEntry(entry_pb2.BatchCreateEntryRequest(entries=list(entries)))
    return list(resp.results)


# --- convert.entry_from_proto: one refusal per validation, each item with its own status ---------

def _without(field: str, **kw: object) -> types_pb2.Entry:
    e = entry(**kw)  # type: ignore[arg-type]
    e.ClearField(field)
    return e


INVALID_ENTRIES = [
    (_without("parent_id"), "invalid parent ID: request must specify SPIFFE ID"),
    (_without("spiffe_id"), "invalid spiffe ID: request must specify SPIFFE ID"),
    (entry(path="w"), 'invalid spiffe ID: SPIFFE ID path "w": path must start with "/"'),
    (entry(parent="/a//b"), 'invalid parent ID: SPIFFE ID path "/a//b": path cannot contain empty segments'),
    (types_pb2.Entry(spiffe_id=spiffe_id("/w", "other.org"), parent_id=spiffe_id(AGENT_PATH),
                     selectors=[selector_pb2.Selector(type="unix", value="uid:1")]),
     'invalid spiffe ID: "spiffe://other.org/w" is not a member of trust domain "example.org"'),
    (entry(path=""), "invalid spiffe ID: path is empty"),
    (entry(path="/spire/server"), f'invalid spiffe ID: "spiffe://{TD}/spire/server" is a reserved ID'),
    (entry(selectors=()), "invalid selectors: selector list is empty"),
    (entry(selectors=(("", "uid:1"),)), "invalid selectors: missing selector type"),
    (entry(selectors=(("unix:uid", "1"),)), 'invalid selectors: selector type contains ":"'),
    (entry(selectors=(("unix", ""),)), "invalid selectors: missing selector value"),
    (entry(x509_svid_ttl=-1), "invalid x509_svid_ttl: value cannot be negative"),
    (entry(jwt_svid_ttl=-1), "invalid jwt_svid_ttl: value cannot be negative"),
    (entry(dns_names=["-bad.example"]), 'invalid DNS name "-bad.example"'),
    (entry(dns_names=["a" * 64 + ".example"]), 'invalid DNS name "' + "a" * 64 + '.example"'),
    (entry(federates_with=["spiffe://"]), 'invalid federates_with: "spiffe://": trust domain is missing'),
]


async def test_batch_create_refuses_each_invalid_entry_with_convert_s_message_and_keeps_the_valid_one(
        server: Handle) -> None:
    results = await create(server, *[e for e, _ in INVALID_ENTRIES], entry("/ok"))
    for (_, message), r in zip(INVALID_ENTRIES, results):
        assert (r.status.code, r.status.message) == (Status.INVALID_ARGUMENT.value, f"failed to convert entry: {message}")
        assert not r.entry.id
    assert results[-1].status.code == 0 and results[-1].entry.id
    count = await api(server).CountEntries(entry_pb2.CountEntriesRequest())
    assert count.count == 1


async def test_batch_update_validates_the_merged_entry_as_create_does(server: Handle) -> None:
    [created] = await create(server, entry())
    bad = types_pb2.Entry(id=created.entry.id, x509_svid_ttl=-5)
    resp = await api(server).BatchUpdateEntry(entry_pb2.BatchUpdateEntryRequest(
        entries=[bad, types_pb2.Entry()], input_mask=types_pb2.EntryMask(x509_svid_ttl=True)))
    assert [(r.status.code, r.status.message) for r in resp.results] == [
        (Status.INVALID_ARGUMENT.value, "failed to convert entry: invalid x509_svid_ttl: value cannot be negative"),
        (Status.INVALID_ARGUMENT.value, "failed to convert entry: missing ID"),
    ]


# --- list filters: convert.id_from_proto and selector_match_from_proto ---------------------------

@pytest.mark.parametrize("flt,message", [
    ({"by_parent_id": spiffe_id("/agent", "other.org")},
     'invalid parent ID filter: "spiffe://other.org/agent" is not a member of trust domain "example.org"'),
    ({"by_spiffe_id": spiffe_id("", td="")}, "invalid SPIFFE ID filter: request must specify SPIFFE ID"),
    ({"by_selectors": selector_pb2.SelectorMatch()}, "malformed selectors filter: empty selector set"),
    ({"by_selectors": selector_pb2.SelectorMatch(selectors=[selector_pb2.Selector(type="unix", value="")])},
     "invalid selectors filter: missing selector value"),
    ({"by_federates_with": {"trust_domains": ["bad td!"]}},
     'malformed federates with filter: trust domain "bad td!": characters are limited to lowercase letters, numbers, '
     "dots, dashes, and underscores"),
    ({"by_federates_with": {}}, "malformed federates with filter: empty trust domain set"),
], ids=["parent-other-td", "spiffe-id-empty", "selectors-empty", "selector-value-empty", "federates-with-bad-td",
        "federates-with-empty"])
async def test_list_and_count_refuse_an_invalid_filter(server: Handle, flt: dict[str, object], message: str) -> None:
    with pytest.raises(GRPCError) as exc:
        await api(server).ListEntries(entry_pb2.ListEntriesRequest(filter=entry_pb2.ListEntriesRequest.Filter(**flt)))
    assert (exc.value.status, exc.value.message) == (Status.INVALID_ARGUMENT, message)
    with pytest.raises(GRPCError) as exc:
        await api(server).CountEntries(entry_pb2.CountEntriesRequest(filter=entry_pb2.CountEntriesRequest.Filter(**flt)))
    assert (exc.value.status, exc.value.message) == (Status.INVALID_ARGUMENT, message)


async def test_list_refuses_a_negative_page_size(server: Handle) -> None:
    with pytest.raises(GRPCError) as exc:
        await api(server).ListEntries(entry_pb2.ListEntriesRequest(page_size=-1))
    assert (exc.value.status, exc.value.message) == (Status.INVALID_ARGUMENT, "page size must not be negative")


# --- the main path of each RPC ----------------------------------------------------------------

async def test_create_get_list_count_update_delete(server: Handle) -> None:
    [a, b] = await create(server, entry("/a", dns_names=["a.example"]), entry("/b", selectors=(("unix", "uid:2"),)))
    assert a.status.message == "OK" and a.entry.spiffe_id.path == "/a" and list(a.entry.dns_names) == ["a.example"]
    [again] = await create(server, entry("/a", dns_names=["a.example"]))
    assert (again.status.code, again.status.message) == (Status.ALREADY_EXISTS.value, "similar entry already exists")
    assert again.entry.id == a.entry.id

    got = await api(server).GetEntry(entry_pb2.GetEntryRequest(id=b.entry.id))
    assert got.spiffe_id.path == "/b" and [(s.type, s.value) for s in got.selectors] == [("unix", "uid:2")]

    listed = await api(server).ListEntries(entry_pb2.ListEntriesRequest(filter=entry_pb2.ListEntriesRequest.Filter(
        by_selectors=selector_pb2.SelectorMatch(selectors=[selector_pb2.Selector(type="unix", value="uid:1000")]))))
    assert [e.id for e in listed.entries] == [a.entry.id]
    assert (await api(server).CountEntries(entry_pb2.CountEntriesRequest())).count == 2

    updated = await api(server).BatchUpdateEntry(entry_pb2.BatchUpdateEntryRequest(
        entries=[types_pb2.Entry(id=a.entry.id, x509_svid_ttl=600)], input_mask=types_pb2.EntryMask(x509_svid_ttl=True)))
    assert updated.results[0].status.code == 0 and updated.results[0].entry.x509_svid_ttl == 600
    assert updated.results[0].entry.spiffe_id.path == "/a"

    deleted = await api(server).BatchDeleteEntry(entry_pb2.BatchDeleteEntryRequest(ids=[a.entry.id, "nope", ""]))
    assert [(r.id, r.status.code, r.status.message) for r in deleted.results] == [
        (a.entry.id, 0, "OK"), ("nope", Status.NOT_FOUND.value, "entry not found"),
        ("", Status.INVALID_ARGUMENT.value, "missing entry ID")]
    with pytest.raises(GRPCError) as exc:
        await api(server).GetEntry(entry_pb2.GetEntryRequest(id=a.entry.id))
    assert (exc.value.status, exc.value.message) == (Status.NOT_FOUND, "entry not found")
    with pytest.raises(GRPCError) as exc:
        await api(server).GetEntry(entry_pb2.GetEntryRequest())
    assert (exc.value.status, exc.value.message) == (Status.INVALID_ARGUMENT, "missing ID")


async def test_an_attested_agent_gets_and_syncs_the_entries_it_is_authorized_for(server: Handle) -> None:
    agent_id, chain, key = await server.attest_agent("api-entry")
    agent_path = agent_id.removeprefix(f"spiffe://{TD}")
    [mine, _] = await create(server, entry("/mine", parent=agent_path), entry("/theirs", parent="/other-agent"))
    as_agent = server.tls_stub(entry_grpc.EntryStub, chain, key)

    got = await as_agent.GetAuthorizedEntries(entry_pb2.GetAuthorizedEntriesRequest())
    assert [e.id for e in got.entries] == [mine.entry.id]

    async with as_agent.SyncAuthorizedEntries.open() as stream:
        await stream.send_message(entry_pb2.SyncAuthorizedEntriesRequest(), end=True)
        synced = await stream.recv_message()
    assert synced is not None and [e.id for e in synced.entries] == [mine.entry.id] and not synced.more

    async with as_agent.SyncAuthorizedEntries.open() as stream:
        await stream.send_message(entry_pb2.SyncAuthorizedEntriesRequest(ids=["x"]), end=True)
        with pytest.raises(GRPCError) as exc:
            await stream.recv_message()
    assert (exc.value.status, exc.value.message) == (
        Status.INVALID_ARGUMENT, "specifying IDs on initial request is not supported")


async def test_an_anonymous_tls_caller_is_refused_the_admin_methods(server: Handle) -> None:
    with pytest.raises(GRPCError) as exc:
        await server.tls_stub(entry_grpc.EntryStub).CountEntries(entry_pb2.CountEntriesRequest())
    assert exc.value.status == Status.PERMISSION_DENIED


async def test_by_downstream_false_lists_and_counts_downstream_entries_too(server: Handle) -> None:
    # As SPIRE's sqlstore: only by_downstream=true filters; `entry show` sends false by default.
    from google.protobuf import wrappers_pb2

    await create(server, entry("/plain"), entry("/nested", downstream=True))
    stub = api(server)
    for flag, want in ((False, {"/plain", "/nested"}), (True, {"/nested"})):
        flt = entry_pb2.ListEntriesRequest.Filter(by_downstream=wrappers_pb2.BoolValue(value=flag))
        listed = await stub.ListEntries(entry_pb2.ListEntriesRequest(filter=flt))
        assert {e.spiffe_id.path for e in listed.entries} == want
        counted = await stub.CountEntries(entry_pb2.CountEntriesRequest(
            filter=entry_pb2.CountEntriesRequest.Filter(by_downstream=wrappers_pb2.BoolValue(value=flag))))
        assert counted.count == len(want)
