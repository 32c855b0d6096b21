"""DataStore "sql": registration entries, events and durability.

Every test takes the ``store`` fixture (conftest.py beside this file), which runs
on sqlite3 and, when SPIRE_PY_TEST_POSTGRES / SPIRE_PY_TEST_MYSQL name a scratch
database, on those too.
"""

from __future__ import annotations

import os
import stat

import pytest
from sqlalchemy import create_engine, inspect

from spire_py.common.registration import Entry
from spire_py.server.datastore import (
    AlreadyExistsError,
    Bundle,
    InvalidArgumentError,
    JoinToken,
    NotFoundError,
    SQLDataStore,
)
from tests.unit.helpers.datastore import FED, NOW, TD, entry, open_store, sel


# --- entries ----------------------------------------------------------------


def test_entry_create_assigns_id_and_round_trips(store: SQLDataStore) -> None:
    store.create_bundle(Bundle(FED))
    e = entry(
        x509_svid_ttl=3600, jwt_svid_ttl=300, dns_names=["a.example", "b.example"], admin=True,
        downstream=True, federates_with=[FED], expires_at=NOW + 99, hint="db", store_svid=False,
    )
    e.selectors = sel("unix:uid:1000", "unix:gid:0")
    got = store.create_entry(e)
    assert got.id and got.created_at > 0 and got.revision_number == 0
    for f in ("spiffe_id", "parent_id", "selectors", "x509_svid_ttl", "jwt_svid_ttl", "dns_names",
              "admin", "downstream", "federates_with", "expires_at", "hint"):
        assert getattr(got, f) == getattr(e, f), f
    assert store.fetch_entry(got.id) == got
    assert store.fetch_entries([got.id, "missing"]) == {got.id: got}


def test_entry_with_given_id_is_kept_and_unique(store: SQLDataStore) -> None:
    assert store.create_entry(entry(id="my-entry_1.x")).id == "my-entry_1.x"
    with pytest.raises(AlreadyExistsError):
        store.create_entry(entry(spiffe="/other", id="my-entry_1.x"))
    with pytest.raises(InvalidArgumentError):
        store.create_entry(entry(id="bad id!"))


def test_entry_duplicate_is_same_ids_and_same_selector_set(store: SQLDataStore) -> None:
    first = store.create_entry(entry(sels=("a:1", "b:2")))
    with pytest.raises(AlreadyExistsError) as info:
        store.create_entry(entry(sels=("b:2", "a:1")))  # same set, other order
    assert info.value.existing == first
    got, existed = store.create_entry_if_not_exists(entry(sels=("a:1", "b:2")))
    assert existed and got == first
    # Not duplicates: a subset, a superset, another parent.
    store.create_entry(entry(sels=("a:1",)))
    store.create_entry(entry(sels=("a:1", "b:2", "c:3")))
    store.create_entry(entry(parent="/other", sels=("a:1", "b:2")))
    assert store.count_entries() == 4


def test_entry_validation(store: SQLDataStore) -> None:
    with pytest.raises(InvalidArgumentError, match="selector"):
        store.create_entry(entry(sels=()))
    with pytest.raises(InvalidArgumentError, match="SPIFFE ID"):
        store.create_entry(Entry(parent_id=TD, selectors=sel("a:1")))
    with pytest.raises(InvalidArgumentError, match="duplicate"):
        store.create_entry(entry(sels=("a:1", "a:1")))
    with pytest.raises(InvalidArgumentError, match="store SVID"):
        store.create_entry(entry(sels=("a:1", "b:1"), store_svid=True))
    with pytest.raises(InvalidArgumentError, match="X509"):
        store.create_entry(entry(x509_svid_ttl=-1))
    with pytest.raises(InvalidArgumentError, match="longer"):
        store.create_entry(entry(sels=("a:" + "v" * 600,)))
    assert store.count_entries() == 0


def test_entry_federating_with_unknown_bundle_writes_nothing(store: SQLDataStore) -> None:
    with pytest.raises(InvalidArgumentError, match="federated bundle"):
        store.create_entry(entry(federates_with=[FED]))
    assert store.count_entries() == 0 and store.list_entry_events() == []


def test_entry_update_with_mask_bumps_revision(store: SQLDataStore) -> None:
    store.create_bundle(Bundle(FED))
    e = store.create_entry(entry(dns_names=["a"], hint="x"))
    upd = store.update_entry(
        Entry(id=e.id, spiffe_id=TD + "/new", selectors=sel("k8s:ns:a"), dns_names=["b", "c"], federates_with=[FED], hint="ignored"),
        {"spiffe_id", "selectors", "dns_names", "federates_with"},
    )
    assert upd.revision_number == 1 and upd.spiffe_id == TD + "/new"
    assert upd.selectors == sel("k8s:ns:a") and upd.dns_names == ["b", "c"] and upd.federates_with == [FED]
    assert upd.hint == "x" and upd.parent_id == e.parent_id and upd.created_at == e.created_at
    assert store.fetch_entry(e.id) == upd
    full = store.update_entry(entry(id=e.id, sels=("a:1",)))
    assert full.revision_number == 2 and full.federates_with == [] and full.dns_names == [] and full.hint == ""
    with pytest.raises(NotFoundError):
        store.update_entry(entry(id="missing"))
    with pytest.raises(InvalidArgumentError):
        store.update_entry(Entry(id=e.id), {"selectors"})  # empty selector list
    with pytest.raises(InvalidArgumentError):
        store.update_entry(Entry(id=e.id), {"revision_number"})


def test_entry_update_failing_midway_changes_nothing(store: SQLDataStore) -> None:
    e = store.create_entry(entry())
    with pytest.raises(InvalidArgumentError):
        store.update_entry(entry(id=e.id, sels=("z:9",), federates_with=[FED]))
    assert store.fetch_entry(e.id) == e
    assert len(store.list_entry_events()) == 1


def test_entry_delete(store: SQLDataStore) -> None:
    e = store.create_entry(entry())
    assert store.delete_entry(e.id) == e
    assert store.fetch_entry(e.id) is None
    with pytest.raises(NotFoundError):
        store.delete_entry(e.id)
    # Selectors went with it: an identical entry is no longer a duplicate.
    store.create_entry(entry())


def test_entry_prune_expired(store: SQLDataStore) -> None:
    keep = store.create_entry(entry(spiffe="/keep"))
    later = store.create_entry(entry(spiffe="/later", expires_at=NOW + 10))
    store.create_entry(entry(spiffe="/gone", expires_at=NOW - 10))
    assert store.prune_entries(NOW) == 1
    assert {e.id for e in store.list_entries()[0]} == {keep.id, later.id}


SELECTOR_CASES = [
    # (entry selectors, query, match, matches?)
    (("a:1", "b:2"), ("a:1", "b:2"), "exact", True),
    (("a:1", "b:2"), ("a:1",), "exact", False),
    (("a:1",), ("a:1", "b:2"), "exact", False),
    (("a:1",), ("a:1", "b:2"), "subset", True),
    (("a:1", "b:2"), ("a:1", "b:2"), "subset", True),
    (("a:1", "c:3"), ("a:1", "b:2"), "subset", False),
    (("c:3",), ("a:1", "b:2"), "subset", False),
    (("a:1", "b:2", "c:3"), ("a:1", "b:2"), "superset", True),
    (("a:1", "b:2"), ("a:1", "b:2"), "superset", True),
    (("a:1",), ("a:1", "b:2"), "superset", False),
    (("a:1", "c:3"), ("b:2", "c:3"), "any", True),
    (("a:1",), ("b:2",), "any", False),
]


@pytest.mark.parametrize("entry_sels,query,match,expected", SELECTOR_CASES)
def test_entry_selector_matching(store: SQLDataStore, entry_sels: tuple[str, ...], query: tuple[str, ...], match: str, expected: bool) -> None:
    e = store.create_entry(entry(sels=entry_sels))
    store.create_entry(entry(spiffe="/noise", sels=("z:9",)))
    found, _ = store.list_entries(by_selectors=(sel(*query), match))
    assert ([x.id for x in found] == [e.id]) is expected
    assert store.count_entries(by_selectors=(sel(*query), match)) == (1 if expected else 0)


def test_entry_selector_matching_with_many_entries(store: SQLDataStore) -> None:
    ids = {
        name: store.create_entry(entry(spiffe="/" + name, sels=sels)).id
        for name, sels in {
            "a": ("unix:uid:0",),
            "ab": ("unix:uid:0", "unix:gid:0"),
            "abc": ("unix:uid:0", "unix:gid:0", "unix:user:root"),
            "c": ("unix:user:root",),
            "d": ("docker:image:x",),
        }.items()
    }
    query = sel("unix:uid:0", "unix:gid:0")

    def names(match: str) -> set[str]:
        got = {e.id for e in store.list_entries(by_selectors=(query, match))[0]}
        return {n for n, i in ids.items() if i in got}

    assert names("exact") == {"ab"}
    assert names("subset") == {"a", "ab"}
    assert names("superset") == {"ab", "abc"}
    assert names("any") == {"a", "ab", "abc"}
    assert {e.spiffe_id for e in store.list_entries(by_selectors=query)[0]} == {TD + "/ab"}  # bare list = exact
    with pytest.raises(InvalidArgumentError):
        store.list_entries(by_selectors=(query, "most"))
    with pytest.raises(InvalidArgumentError):
        store.list_entries(by_selectors=([], "any"))


def test_entry_filters_combine(store: SQLDataStore) -> None:
    store.create_bundle(Bundle(FED))
    store.create_bundle(Bundle("spiffe://other.example"))
    a = store.create_entry(entry(spiffe="/a", hint="h", federates_with=[FED]))
    b = store.create_entry(entry(spiffe="/b", parent="/p2", downstream=True, federates_with=[FED, "spiffe://other.example"]))
    c = store.create_entry(entry(spiffe="/c"))

    def ids(**kw: object) -> list[str]:
        return [e.id for e in store.list_entries(**kw)[0]]  # type: ignore[arg-type]

    assert ids(by_parent_id=TD + "/agent") == [a.id, c.id]
    assert ids(by_spiffe_id=TD + "/b") == [b.id]
    assert ids(by_hint="h") == [a.id]
    assert ids(by_downstream=True) == [b.id]
    assert ids(by_downstream=False) == [a.id, b.id, c.id]  # SPIRE: false does not filter
    assert ids(by_federates_with=([FED], "exact")) == [a.id]
    assert ids(by_federates_with=([FED], "superset")) == [a.id, b.id]
    assert ids(by_federates_with=([FED], "subset")) == [a.id]
    assert ids(by_federates_with=(["spiffe://other.example"], "any")) == [b.id]
    assert ids(by_parent_id=TD + "/agent", by_spiffe_id=TD + "/c") == [c.id]
    assert store.count_entries(by_parent_id=TD + "/agent", by_hint="h") == 1


def test_entry_paging_returns_every_entry_exactly_once(store: SQLDataStore) -> None:
    created = [store.create_entry(entry(spiffe=f"/w{i}")).id for i in range(250)]
    seen: list[str] = []
    pages, token = 0, ""
    while True:
        page, token = store.list_entries(page_token=token, page_size=100)
        if not token:
            assert page == []
            break
        pages += 1
        seen += [e.id for e in page]
    assert pages == 3 and seen == created
    # Filtered paging too, and deletions between pages do not skip entries.
    page1, token = store.list_entries(by_parent_id=TD + "/agent", page_size=100)
    store.delete_entry(page1[0].id)
    page2, _ = store.list_entries(by_parent_id=TD + "/agent", page_token=token, page_size=100)
    assert page2[0].id == created[100]
    with pytest.raises(InvalidArgumentError):
        store.list_entries(page_token="not-a-token", page_size=10)


def test_entry_events_written_in_the_same_transaction(store: SQLDataStore) -> None:
    e = store.create_entry(entry())
    store.create_entry_if_not_exists(entry())  # existed: no event
    store.update_entry(Entry(id=e.id, hint="h"), {"hint"})
    store.delete_entry(e.id)
    events = store.list_entry_events()
    assert [x[1] for x in events] == [e.id] * 3
    ids = [x[0] for x in events]
    assert ids == sorted(ids)
    assert store.list_entry_events(greater_than_id=ids[0]) == events[1:]
    assert store.list_entry_events(limit=1) == events[:1]
    assert store.prune_entry_events(3600) == 0
    assert store.prune_entry_events(-10) == 3
    assert store.list_entry_events() == []
    # Ids keep growing after everything was pruned (the cache relies on it).
    store.create_entry(entry(spiffe="/next"))
    assert store.list_entry_events()[0][0] > ids[-1]


# --- durability -------------------------------------------------------------


def test_reopen_keeps_data(backend: str, tmp_path: os.PathLike[str]) -> None:
    s = open_store(backend, tmp_path)
    e = s.create_entry(entry())
    s.create_join_token(JoinToken("t", NOW))
    s.close()
    s = open_store(backend, tmp_path)
    assert s.fetch_entry(e.id) == e
    assert s.fetch_join_token("t") == JoinToken("t", NOW)
    s.close()


def test_sqlite_files_are_private(tmp_path: os.PathLike[str]) -> None:
    path = os.path.join(tmp_path, "a", "b", "datastore.sqlite3")
    s = SQLDataStore("sqlite3", path)
    s.create_join_token(JoinToken("t", NOW))
    assert stat.S_IMODE(os.stat(path).st_mode) == 0o600
    for d in (os.path.dirname(path), os.path.dirname(os.path.dirname(path))):
        assert stat.S_IMODE(os.stat(d).st_mode) == 0o700
    for extra in ("-wal", "-shm"):
        if os.path.exists(path + extra):
            assert stat.S_IMODE(os.stat(path + extra).st_mode) == 0o600
    s.close()


def test_sqlite_raw_schema_has_foreign_keys_on(tmp_path: os.PathLike[str]) -> None:
    s = SQLDataStore("sqlite3", os.path.join(tmp_path, "ds.sqlite3"))
    with s.engine.connect() as c:
        assert c.exec_driver_sql("PRAGMA foreign_keys").scalar() == 1
        assert c.exec_driver_sql("PRAGMA journal_mode").scalar() == "wal"
    s.close()
    engine = create_engine(f"sqlite:///{os.path.join(tmp_path, 'ds.sqlite3')}")
    assert "registered_entries" in inspect(engine).get_table_names()
    engine.dispose()
