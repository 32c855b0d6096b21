"""Registration entries shared by server and agent: the wire form, the match numbers, the agent's decoding."""

from __future__ import annotations

import dataclasses
from typing import Any

import pytest

from spire_py.agent.sync import entry_from_sync
from spire_py.common.registration import MATCH_BEHAVIOURS, MATCH_BY_NUMBER, MATCH_NUMBERS, Entry, Selector
from spire_py.common.registration_proto import entry_from_proto, entry_to_proto
from spire_py.proto.spire.api.types import entry_pb2, federateswith_pb2, selector_pb2

FULL = Entry(
    id="e1", spiffe_id="spiffe://example.org/w", parent_id="spiffe://example.org/spire/agent/x",
    selectors=[Selector("unix", "uid:1"), Selector("k8s", "ns:a")], x509_svid_ttl=60, jwt_svid_ttl=30,
    dns_names=["w.example.org"], admin=True, downstream=True, federates_with=["spiffe://fed.org"],
    expires_at=99, hint="h", store_svid=True, created_at=7, revision_number=3,
)


def test_entry_round_trips_through_the_wire() -> None:
    got = entry_from_proto(entry_pb2.Entry.FromString(entry_to_proto(FULL).SerializeToString()))
    assert got == dataclasses.replace(FULL, federates_with=["fed.org"])


def test_federated_trust_domains_go_on_the_wire_as_names_as_in_spire() -> None:
    assert list(entry_to_proto(FULL).federates_with) == ["fed.org"]


def test_entry_mask_sends_only_the_masked_fields_and_the_id() -> None:
    pb = entry_to_proto(FULL, entry_pb2.EntryMask(spiffe_id=True, hint=True))
    assert pb.id == "e1" and pb.hint == "h" and pb.spiffe_id.path == "/w"
    assert not pb.selectors and not pb.HasField("parent_id") and pb.revision_number == 0


def test_entry_to_proto_refuses_a_malformed_spiffe_id() -> None:
    with pytest.raises(ValueError):
        entry_to_proto(Entry(spiffe_id="not-an-id", parent_id=FULL.parent_id))


def test_agent_takes_federated_trust_domains_as_names_or_ids() -> None:
    pb = entry_to_proto(FULL)
    pb.federates_with[:] = ["fed.org", "spiffe://other.org"]
    assert entry_from_sync(pb).federates_with == ["spiffe://fed.org", "spiffe://other.org"]
    # The shared decoder keeps them as sent: the server validates them itself.
    assert entry_from_proto(pb).federates_with == ["fed.org", "spiffe://other.org"]


ENUMS = [selector_pb2.SelectorMatch.MatchBehavior, federateswith_pb2.FederatesWithMatch.MatchBehavior]


@pytest.mark.parametrize("enum", ENUMS)
def test_match_numbers_are_the_proto_enums(enum: Any) -> None:
    by_name = {name.removeprefix("MATCH_").lower(): number for name, number in enum.items()}
    assert by_name == MATCH_NUMBERS
    assert {n: m for m, n in by_name.items()} == MATCH_BY_NUMBER
    assert set(MATCH_NUMBERS) == set(MATCH_BEHAVIOURS)
