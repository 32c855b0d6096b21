"""The agent's half of SyncAuthorizedEntries (agent.sync.fetch_entries) against a scripted server
stream: what it keeps of the entries it holds, what it rebuilds, what it asks for."""

from __future__ import annotations

import dataclasses
from typing import Any, Optional

from spire_py.agent.sync import fetch_entries
from spire_py.common.registration import Entry, Selector
from spire_py.common.registration_proto import entry_to_proto
from spire_py.proto.spire.api.server.entry.v1 import entry_pb2

AGENT = "spiffe://example.org/spire/agent/x"


def _entry(eid: str, revision: int, created: int = 7, ttl: int = 60) -> Entry:
    return Entry(id=eid, spiffe_id=f"spiffe://example.org/{eid}", parent_id=AGENT, selectors=[Selector("unix", "uid:1")],
                 x509_svid_ttl=ttl, created_at=created, revision_number=revision)


class _Stream:
    def __init__(self, answers: list[entry_pb2.SyncAuthorizedEntriesResponse]) -> None:
        self.answers = answers
        self.asked: list[list[str]] = []

    async def __aenter__(self) -> "_Stream":
        return self

    async def __aexit__(self, *exc: Any) -> None:
        return None

    async def send_message(self, req: entry_pb2.SyncAuthorizedEntriesRequest) -> None:
        self.asked.append(list(req.ids))

    async def recv_message(self) -> Optional[entry_pb2.SyncAuthorizedEntriesResponse]:
        return self.answers.pop(0) if self.answers else None

    async def end(self) -> None:
        return None


class _Client:
    """What fetch_entries uses of a ServerClient: client.entry.SyncAuthorizedEntries.open()."""

    def __init__(self, stream: _Stream) -> None:
        self.entry = self
        self.SyncAuthorizedEntries = self
        self.stream = stream

    def open(self, timeout: float) -> _Stream:
        return self.stream


async def _fetch(known: dict[str, Entry], *answers: entry_pb2.SyncAuthorizedEntriesResponse) -> tuple[dict[str, Entry], _Stream]:
    stream = _Stream(list(answers))
    got = await fetch_entries(_Client(stream), known)  # type: ignore[arg-type]
    return got, stream


def _full(*entries: Entry) -> entry_pb2.SyncAuthorizedEntriesResponse:
    return entry_pb2.SyncAuthorizedEntriesResponse(entries=[entry_to_proto(e) for e in entries])


async def test_entries_sent_in_full_are_kept_when_unchanged_and_rebuilt_when_not() -> None:
    a, b, c = _entry("a", 1), _entry("b", 1), _entry("c", 1)
    first, _ = await _fetch({}, _full(a, b, c))
    assert first == {"a": a, "b": b, "c": c}
    changed = dataclasses.replace(a, revision_number=2, x509_svid_ttl=90)  # updated on the server
    again = dataclasses.replace(c, created_at=8)  # deleted and made again under its ID
    second, _ = await _fetch(first, _full(changed, b, again))
    assert second["b"] is first["b"]  # the same revision: not decoded again
    assert second["a"] == changed and second["a"] is not first["a"]
    assert second["c"] == again and second["c"] is not first["c"]
    third, _ = await _fetch(second, _full(b))  # the others were deleted
    assert third == {"b": b}


async def test_paged_revisions_ask_only_for_what_changed() -> None:
    a, b = _entry("a", 1), _entry("b", 1)
    held = {"a": a, "b": b}
    revisions = entry_pb2.SyncAuthorizedEntriesResponse(entry_revisions=[
        entry_pb2.EntryRevision(id="a", revision_number=1, created_at=7),
        entry_pb2.EntryRevision(id="b", revision_number=2, created_at=7),
        entry_pb2.EntryRevision(id="n", revision_number=1, created_at=7)])
    b2, n = _entry("b", 2, ttl=90), _entry("n", 1)
    got, stream = await _fetch(held, revisions, _full(b2, n))
    assert stream.asked == [[], ["b", "n"]]
    assert got["a"] is a and got["b"] == b2 and got["n"] == n
