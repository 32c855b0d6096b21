"""DataStore: creating a batch of registration entries in one transaction, each with its own outcome."""

from __future__ import annotations


from spire_py.common.registration import Entry
from spire_py.server.datastore import AlreadyExistsError, Bundle, InvalidArgumentError, SQLDataStore
from tests.unit.helpers.datastore import FED, TD, entry, sel


def test_batch_creates_every_entry_with_an_event_each(store: SQLDataStore) -> None:
    got = store.create_entries_if_not_exist([entry("/a"), entry("/b", dns_names=["b.example"])])
    assert [existed for _, existed in got] == [False, False]  # type: ignore[misc]
    created = [e for e, _ in got]  # type: ignore[misc]
    assert [e.spiffe_id for e in created] == [TD + "/a", TD + "/b"]
    assert all(e.id and e.created_at and e.revision_number == 0 for e in created)
    assert store.fetch_entry(created[1].id) == created[1]
    assert [entry_id for _, entry_id in store.list_entry_events()] == [e.id for e in created]


def test_batch_returns_the_existing_similar_entry(store: SQLDataStore) -> None:
    old = store.create_entry(entry("/a", sels=("a:1", "b:2")))
    (got, existed), = store.create_entries_if_not_exist([entry("/a", sels=("b:2", "a:1"))])  # type: ignore[misc]
    assert existed and got == old
    assert store.count_entries() == 1


def test_batch_entry_similar_to_an_earlier_one_in_the_batch_exists(store: SQLDataStore) -> None:
    (first, existed1), (second, existed2) = store.create_entries_if_not_exist(  # type: ignore[misc]
        [entry("/a"), entry("/a")])
    assert (existed1, existed2) == (False, True) and second == first
    assert store.count_entries() == 1 and len(store.list_entry_events()) == 1


def test_same_spiffe_id_other_parent_or_selectors_is_not_similar(store: SQLDataStore) -> None:
    store.create_entry(entry("/a", parent="/agent1"))
    got = store.create_entries_if_not_exist([entry("/a", parent="/agent2"),
                                              entry("/a", parent="/agent1", sels=("unix:uid:1", "unix:gid:2"))])
    assert [existed for _, existed in got] == [False, False]  # type: ignore[misc]


def test_one_bad_entry_fails_alone(store: SQLDataStore) -> None:
    store.create_entry(Entry(id="taken", spiffe_id=TD + "/t", parent_id=TD + "/agent", selectors=sel("a:1")))
    got = store.create_entries_if_not_exist([
        entry("/ok"),
        Entry(spiffe_id=TD + "/nosel", parent_id=TD + "/agent"),
        entry("/fed", federates_with=[FED]),
        Entry(id="taken", spiffe_id=TD + "/t2", parent_id=TD + "/agent", selectors=sel("a:1")),
        entry("/ok2"),
    ])
    assert isinstance(got[1], InvalidArgumentError) and "missing selector list" in str(got[1])
    assert isinstance(got[2], InvalidArgumentError) and f'unable to find federated bundle "{FED}"' in str(got[2])
    assert isinstance(got[3], AlreadyExistsError) and '"taken" already exists' in str(got[3])
    assert [o[0].spiffe_id for o in (got[0], got[4])] == [TD + "/ok", TD + "/ok2"]  # type: ignore[index]
    assert store.count_entries() == 3


def test_batch_keeps_federation_and_explicit_ids(store: SQLDataStore) -> None:
    store.append_bundle(Bundle(trust_domain_id=FED, x509_authorities=[]))
    (e, existed), = store.create_entries_if_not_exist(  # type: ignore[misc]
        [Entry(id="mine", spiffe_id=TD + "/f", parent_id=TD + "/agent", selectors=sel("a:1"), federates_with=[FED])])
    assert not existed and e.id == "mine" and e.federates_with == [FED]
    assert store.fetch_entry("mine") == e


def test_empty_batch_is_empty(store: SQLDataStore) -> None:
    assert store.create_entries_if_not_exist([]) == []
