"""DataStore "sql": every entry read in batches for the entry cache's load (every backend)."""

from __future__ import annotations

import pytest

from spire_py.common.registration import Entry
from spire_py.server.datastore import InvalidArgumentError, SQLDataStore
from tests.unit.helpers.entries import AGENT, create_mixed_entries


def _all(store: SQLDataStore, batch_size: int) -> list[Entry]:
    return [e for batch in store.list_entries_in_batches(batch_size) for e in batch]


@pytest.mark.parametrize("batch_size", [1, 2, 3, 0])
def test_batches_hold_every_entry_whole_in_creation_order(store: SQLDataStore, batch_size: int) -> None:
    remaining = create_mixed_entries(store)
    listed, _ = store.list_entries()
    got = _all(store, batch_size)
    # The same entries as ListEntries reads them: every field, selectors / DNS names / trust
    # domains in the same order, across batch boundaries and the gaps deleted entries leave.
    assert got == listed
    assert {e.id for e in got} == {e.id for e in remaining}


def test_batches_are_bounded(store: SQLDataStore) -> None:
    create_mixed_entries(store)
    sizes = [len(b) for b in store.list_entries_in_batches(4)]
    assert sizes and max(sizes) == 4 and sum(sizes) == store.count_entries()


def test_values_have_the_types_of_entries_read_one_by_one(store: SQLDataStore) -> None:
    create_mixed_entries(store)
    for e in _all(store, 5):
        for name in ("admin", "downstream", "store_svid"):
            assert type(getattr(e, name)) is bool, (e.spiffe_id, name)
        for name in ("x509_svid_ttl", "jwt_svid_ttl", "expires_at", "created_at", "revision_number"):
            assert type(getattr(e, name)) is int, (e.spiffe_id, name)
        assert type(e.selectors) is list and type(e.dns_names) is list and type(e.federates_with) is list


def test_repeated_values_are_one_object(store: SQLDataStore) -> None:
    create_mixed_entries(store)
    mine = [e for e in _all(store, 2) if e.parent_id == AGENT]
    assert len(mine) > 2 and all(e.parent_id is mine[0].parent_id for e in mine)
    uid = [s for e in mine for s in e.selectors if str(s) == "unix:uid:1000"]
    assert len(uid) > 2 and all(s is uid[0] for s in uid)


def test_an_empty_store_has_no_batches(store: SQLDataStore) -> None:
    assert list(store.list_entries_in_batches()) == []


def test_a_negative_batch_size_is_refused(store: SQLDataStore) -> None:
    with pytest.raises(InvalidArgumentError):
        next(store.list_entries_in_batches(-1))
