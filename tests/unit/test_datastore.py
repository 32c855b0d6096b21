"""DataStore "sql": behaviour shared by every database backend.

The ``store`` fixture runs each test on sqlite3; set SPIRE_PY_TEST_POSTGRES or
SPIRE_PY_TEST_MYSQL to a connection string (SPIRE syntax) of an empty scratch
database to run the same tests there too.
"""

from __future__ import annotations

import datetime
import os
import threading
from collections.abc import Iterator

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID
from sqlalchemy import create_engine, inspect, text

from spire_py.server.datastore import (
    AlreadyExistsError,
    AttestedNode,
    Bundle,
    ConflictError,
    Entry,
    InvalidArgumentError,
    JoinToken,
    JWTKey,
    NotFoundError,
    Selector,
    SQLDataStore,
)

TD = "spiffe://example.org"
FED = "spiffe://fed.example"
NOW = 1_700_000_000

BACKENDS = ["sqlite3"] + [
    name for name, var in (("postgres", "SPIRE_PY_TEST_POSTGRES"), ("mysql", "SPIRE_PY_TEST_MYSQL")) if os.environ.get(var)
]


def _reset_server_db(kind: str, conn: str) -> None:
    """Empty a scratch postgres/mysql database so each test starts from nothing."""
    from spire_py.server.datastore.dialects import PoolSettings, create_store_engine

    engine = create_store_engine(kind, conn, PoolSettings())
    with engine.begin() as c:
        names = inspect(c).get_table_names()
        if kind == "mysql":
            c.execute(text("SET FOREIGN_KEY_CHECKS=0"))
        for name in names:
            c.execute(text(f"DROP TABLE IF EXISTS {name}" + (" CASCADE" if kind == "postgres" else "")))
    engine.dispose()


def open_store(kind: str, tmp_path: os.PathLike[str], **kw: object) -> SQLDataStore:
    if kind == "sqlite3":
        return SQLDataStore("sqlite3", os.path.join(tmp_path, "data", "datastore.sqlite3"), **kw)  # type: ignore[arg-type]
    conn = os.environ["SPIRE_PY_TEST_POSTGRES" if kind == "postgres" else "SPIRE_PY_TEST_MYSQL"]
    return SQLDataStore(kind, conn, **kw)  # type: ignore[arg-type]


@pytest.fixture(params=BACKENDS)
def backend(request: pytest.FixtureRequest, tmp_path: os.PathLike[str]) -> str:
    kind: str = request.param
    if kind != "sqlite3":
        _reset_server_db(kind, os.environ["SPIRE_PY_TEST_POSTGRES" if kind == "postgres" else "SPIRE_PY_TEST_MYSQL"])
    return kind


@pytest.fixture
def store(backend: str, tmp_path: os.PathLike[str]) -> Iterator[SQLDataStore]:
    s = open_store(backend, tmp_path)
    yield s
    s.close()


def sel(*pairs: str) -> list[Selector]:
    return [Selector(*p.split(":", 1)) for p in pairs]


def entry(spiffe: str = "/w", parent: str = "/agent", sels: tuple[str, ...] = ("unix:uid:1000",), **kw: object) -> Entry:
    return Entry(spiffe_id=TD + spiffe, parent_id=TD + parent, selectors=sel(*sels), **kw)  # type: ignore[arg-type]


def make_cert(not_after: int, cn: str = "ca") -> bytes:
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, cn)])
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(datetime.datetime.fromtimestamp(NOW - 86400, datetime.timezone.utc))
        .not_valid_after(datetime.datetime.fromtimestamp(not_after, datetime.timezone.utc))
        .sign(key, hashes.SHA256())
    )
    return cert.public_bytes(serialization.Encoding.DER)


def jwt_key(kid: str, expires_at: int) -> JWTKey:
    pub = ec.generate_private_key(ec.SECP256R1()).public_key()
    der = pub.public_bytes(serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo)
    return JWTKey(key_id=kid, public_key=der, expires_at=expires_at)


# --- bundles ----------------------------------------------------------------


def test_bundle_create_fetch_round_trips_exactly(store: SQLDataStore) -> None:
    b = Bundle(TD, [make_cert(NOW + 3600)], [jwt_key("k1", NOW + 3600)], refresh_hint=300, sequence_number=7)
    b.jwt_authorities[0].tainted = True
    assert store.create_bundle(b) == b
    assert store.fetch_bundle(TD) == b
    assert store.fetch_bundle(FED) is None
    assert store.count_bundles() == 1


def test_bundle_create_twice_is_already_exists(store: SQLDataStore) -> None:
    store.create_bundle(Bundle(TD))
    with pytest.raises(AlreadyExistsError):
        store.create_bundle(Bundle(TD))


def test_bundle_update_applies_only_masked_fields(store: SQLDataStore) -> None:
    store.create_bundle(Bundle(TD, [make_cert(NOW + 10)], refresh_hint=5))
    new_ca = make_cert(NOW + 20)
    out = store.update_bundle(Bundle(TD, [new_ca], refresh_hint=99), {"refresh_hint"})
    assert out.refresh_hint == 99 and out.x509_authorities != [new_ca]
    out = store.update_bundle(Bundle(TD, [new_ca], refresh_hint=1))
    assert store.fetch_bundle(TD) == out == Bundle(TD, [new_ca], refresh_hint=1)
    with pytest.raises(NotFoundError):
        store.update_bundle(Bundle(FED))
    with pytest.raises(InvalidArgumentError):
        store.update_bundle(Bundle(TD), {"nope"})


def test_bundle_set_creates_then_replaces(store: SQLDataStore) -> None:
    store.set_bundle(Bundle(TD, [b"\x01"]))
    store.set_bundle(Bundle(TD, [b"\x02"], sequence_number=3))
    assert store.fetch_bundle(TD) == Bundle(TD, [b"\x02"], sequence_number=3)


def test_bundle_append_merges_dedupes_and_bumps_sequence(store: SQLDataStore) -> None:
    ca1, ca2 = make_cert(NOW + 10), make_cert(NOW + 20)
    k1, k2 = jwt_key("k1", NOW + 10), jwt_key("k2", NOW + 20)
    assert store.append_bundle(Bundle(TD, [ca1], [k1])) == Bundle(TD, [ca1], [k1])  # created
    out = store.append_bundle(Bundle(TD, [ca1, ca2], [jwt_key("k1", NOW + 99), k2]))
    assert out.x509_authorities == [ca1, ca2]
    assert [k.key_id for k in out.jwt_authorities] == ["k1", "k2"]
    assert out.jwt_authorities[0] == k1  # existing key id kept as it was
    assert out.sequence_number == 1
    assert store.append_bundle(Bundle(TD, [ca2], [k2])).sequence_number == 1  # nothing new
    assert store.fetch_bundle(TD) == out


def test_bundle_prune_drops_expired_but_never_empties(store: SQLDataStore) -> None:
    old, new = make_cert(NOW - 10, "old"), make_cert(NOW + 3600, "new")
    kold, knew = jwt_key("old", NOW - 10), jwt_key("new", NOW + 3600)
    store.create_bundle(Bundle(TD, [old, new], [kold, knew], refresh_hint=60, sequence_number=4))
    assert store.prune_bundle(TD, NOW) is True
    assert store.fetch_bundle(TD) == Bundle(TD, [new], [knew], refresh_hint=60, sequence_number=5)
    assert store.prune_bundle(TD, NOW) is False
    with pytest.raises(ConflictError, match="all certificates"):
        store.prune_bundle(TD, NOW + 7200)
    assert store.fetch_bundle(TD) == Bundle(TD, [new], [knew], refresh_hint=60, sequence_number=5)
    assert store.prune_bundle(FED, NOW) is False


def test_bundle_prune_refuses_to_remove_every_jwt_key(store: SQLDataStore) -> None:
    store.create_bundle(Bundle(TD, [make_cert(NOW + 9999)], [jwt_key("k", NOW - 1)]))
    with pytest.raises(ConflictError, match="JWT"):
        store.prune_bundle(TD, NOW)


def test_bundle_list_pages(store: SQLDataStore) -> None:
    tds = [f"spiffe://td{i}.example" for i in range(5)]
    for td in tds:
        store.create_bundle(Bundle(td))
    seen, token = [], ""
    while True:
        page, token = store.list_bundles(page_token=token, page_size=2)
        seen += [b.trust_domain_id for b in page]
        if not token:
            break
    assert seen == tds
    assert [b.trust_domain_id for b in store.list_bundles()[0]] == tds


def test_bundle_delete_modes(store: SQLDataStore) -> None:
    store.create_bundle(Bundle(FED))
    e = store.create_entry(entry(federates_with=[FED]))
    with pytest.raises(ConflictError):
        store.delete_bundle(FED)  # restrict
    store.delete_bundle(FED, "dissociate")
    assert store.fetch_entry(e.id).federates_with == []  # type: ignore[union-attr]
    store.create_bundle(Bundle(FED))
    store.update_entry(Entry(id=e.id, federates_with=[FED]), {"federates_with"})
    store.delete_bundle(FED, "delete")
    assert store.fetch_entry(e.id) is None and store.fetch_bundle(FED) is None
    with pytest.raises(NotFoundError):
        store.delete_bundle(FED)
    with pytest.raises(InvalidArgumentError):
        store.delete_bundle(TD, "cascade")


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
    assert ids(by_downstream=False) == [a.id, c.id]
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


# --- attested nodes ---------------------------------------------------------


def agent(name: str, **kw: object) -> AttestedNode:
    fields: dict[str, object] = dict(attestation_type="x509pop", cert_serial_number="1", cert_not_after=NOW + 3600)
    fields.update(kw)
    return AttestedNode(spiffe_id=f"{TD}/spire/agent/{name}", **fields)  # type: ignore[arg-type]


def test_node_crud(store: SQLDataStore) -> None:
    n = agent("a", new_cert_serial_number="2", new_cert_not_after=NOW + 7200, can_reattest=True)
    assert store.create_attested_node(n) == n
    with pytest.raises(AlreadyExistsError):
        store.create_attested_node(n)
    assert store.fetch_attested_node(n.spiffe_id) == n
    assert store.fetch_attested_node(TD + "/nope") is None
    upd = store.update_attested_node(agent("a", cert_serial_number="3", cert_not_after=1), {"cert_serial_number"})
    assert upd.cert_serial_number == "3" and upd.cert_not_after == NOW + 3600 and upd.new_cert_serial_number == "2"
    banned = store.update_attested_node(agent("a", cert_serial_number="", new_cert_serial_number=""), {"cert_serial_number", "new_cert_serial_number"})
    assert banned.banned
    with pytest.raises(NotFoundError):
        store.update_attested_node(agent("zz"))
    with pytest.raises(InvalidArgumentError):
        store.update_attested_node(n, {"selectors"})
    store.set_node_selectors(n.spiffe_id, sel("x509pop:subject:cn:a"))
    deleted = store.delete_attested_node(n.spiffe_id)
    assert deleted.spiffe_id == n.spiffe_id
    assert store.fetch_attested_node(n.spiffe_id) is None
    assert store.get_node_selectors(n.spiffe_id) == []
    with pytest.raises(NotFoundError):
        store.delete_attested_node(n.spiffe_id)


def test_node_selectors(store: SQLDataStore) -> None:
    store.create_attested_node(agent("a"))
    store.create_attested_node(agent("old", cert_not_after=NOW - 1))
    a, old = agent("a").spiffe_id, agent("old").spiffe_id
    store.set_node_selectors(a, sel("t:1", "t:2", "t:1"))
    assert store.get_node_selectors(a) == sel("t:1", "t:2")
    store.set_node_selectors(a, sel("t:3"))
    store.set_node_selectors(old, sel("t:4"))
    assert store.get_node_selectors(a) == sel("t:3")
    assert store.list_node_selectors() == {a: sel("t:3"), old: sel("t:4")}
    assert store.list_node_selectors(valid_at=NOW) == {a: sel("t:3")}
    assert store.fetch_attested_node(a, with_selectors=True).selectors == sel("t:3")  # type: ignore[union-attr]
    assert store.fetch_attested_nodes([a, TD + "/x"]) == {a: agent("a", selectors=sel("t:3"))}


def test_node_list_filters_and_paging(store: SQLDataStore) -> None:
    store.create_attested_node(agent("a", can_reattest=True))
    store.create_attested_node(agent("b", attestation_type="join_token", cert_not_after=NOW - 5))
    store.create_attested_node(agent("c", cert_serial_number="", new_cert_serial_number=""))
    store.set_node_selectors(agent("a").spiffe_id, sel("s:1", "s:2"))
    store.set_node_selectors(agent("b").spiffe_id, sel("s:1"))

    def names(**kw: object) -> list[str]:
        nodes, _ = store.list_attested_nodes(**kw)  # type: ignore[arg-type]
        return [n.spiffe_id.rsplit("/", 1)[1] for n in nodes]

    assert names() == ["a", "b", "c"]
    assert names(by_attestation_type="join_token") == ["b"]
    assert names(by_banned=True) == ["c"]
    assert names(by_banned=False) == ["a", "b"]
    assert names(by_expires_before=NOW) == ["b"]
    assert names(by_can_reattest=True) == ["a"]
    assert names(by_selector_match=(sel("s:1"), "superset")) == ["a", "b"]
    assert names(by_selector_match=(sel("s:1"), "exact")) == ["b"]
    assert names(by_selector_match=(sel("s:1", "s:2", "s:3"), "subset")) == ["a", "b"]
    assert names(by_selector_match=(sel("s:2", "s:9"), "any")) == ["a"]
    assert store.count_attested_nodes() == 3
    assert store.count_attested_nodes(by_banned=False, by_selector_match=(sel("s:1"), "any")) == 2
    nodes, _ = store.list_attested_nodes(fetch_selectors=True)
    assert nodes[0].selectors == sel("s:1", "s:2") and nodes[2].selectors == []
    assert store.list_attested_nodes()[0][0].selectors == []
    page, token = store.list_attested_nodes(page_size=2)
    rest, token2 = store.list_attested_nodes(page_size=2, page_token=token)
    assert [n.spiffe_id for n in page + rest] == [agent(x).spiffe_id for x in "abc"]
    assert store.list_attested_nodes(page_size=2, page_token=token2) == ([], "")


def test_node_prune_expired_keeps_banned_and_non_reattestable(store: SQLDataStore) -> None:
    store.create_attested_node(agent("fresh", can_reattest=True))
    store.create_attested_node(agent("expired", cert_not_after=NOW - 10, can_reattest=True))
    store.create_attested_node(agent("expired_jt", cert_not_after=NOW - 10))
    store.create_attested_node(agent("banned", cert_not_after=NOW - 10, cert_serial_number="", can_reattest=True))
    store.set_node_selectors(agent("expired").spiffe_id, sel("s:1"))
    assert store.prune_attested_expired_nodes(NOW) == 1
    assert store.get_node_selectors(agent("expired").spiffe_id) == []
    assert store.prune_attested_expired_nodes(NOW, include_non_reattestable=True) == 1
    left = {n.spiffe_id for n in store.list_attested_nodes()[0]}
    assert left == {agent("fresh").spiffe_id, agent("banned").spiffe_id}


def test_node_events(store: SQLDataStore) -> None:
    n = agent("a")
    store.create_attested_node(n)
    store.set_node_selectors(n.spiffe_id, sel("s:1"))
    store.update_attested_node(n)
    store.delete_attested_node(n.spiffe_id)
    events = store.list_node_events()
    assert [e[1] for e in events] == [n.spiffe_id] * 4
    assert store.list_node_events(greater_than_id=events[1][0], limit=1) == [events[2]]
    assert store.prune_node_events(-10) == 4


def test_deleting_join_token_agent_deletes_its_alias_entry(store: SQLDataStore) -> None:
    n = agent("jt", attestation_type="join_token")
    store.create_attested_node(n)
    alias = store.create_entry(Entry(spiffe_id=TD + "/host", parent_id=n.spiffe_id, selectors=[Selector("spiffe_id", n.spiffe_id)]))
    workload = store.create_entry(Entry(spiffe_id=TD + "/w", parent_id=n.spiffe_id, selectors=sel("unix:uid:0")))
    store.delete_attested_node(n.spiffe_id)
    assert store.fetch_entry(alias.id) is None
    assert store.fetch_entry(workload.id) == workload
    assert store.list_entry_events()[-1][1] == alias.id


# --- join tokens and CA journal --------------------------------------------


def test_join_token_crud_and_prune(store: SQLDataStore) -> None:
    store.create_join_token(JoinToken("t1", NOW + 60))
    store.create_join_token(JoinToken("t2", NOW - 60))
    with pytest.raises(AlreadyExistsError):
        store.create_join_token(JoinToken("t1", NOW))
    with pytest.raises(InvalidArgumentError):
        store.create_join_token(JoinToken("", NOW))
    assert store.fetch_join_token("t1") == JoinToken("t1", NOW + 60)
    assert store.prune_join_tokens(NOW) == 1
    assert store.fetch_join_token("t2") is None
    store.delete_join_token("t1")
    with pytest.raises(NotFoundError):
        store.delete_join_token("t1")


def test_join_token_is_single_use(store: SQLDataStore) -> None:
    store.create_join_token(JoinToken("once", NOW + 60))
    assert store.take_join_token("once") == JoinToken("once", NOW + 60)
    assert store.take_join_token("once") is None
    assert store.fetch_join_token("once") is None


def test_join_token_taken_once_under_race(backend: str, tmp_path: os.PathLike[str]) -> None:
    stores = [open_store(backend, tmp_path), open_store(backend, tmp_path)]
    tokens = [f"tok-{i}" for i in range(40)]
    for t in tokens:
        stores[0].create_join_token(JoinToken(t, NOW + 60))
    wins: list[str] = []
    errors: list[BaseException] = []
    lock = threading.Lock()
    barrier = threading.Barrier(8)

    def worker(s: SQLDataStore) -> None:
        try:
            barrier.wait()
            for t in tokens:
                if s.take_join_token(t) is not None:
                    with lock:
                        wins.append(t)
        except BaseException as exc:  # noqa: BLE001 - reported below
            errors.append(exc)

    threads = [threading.Thread(target=worker, args=(stores[i % 2],)) for i in range(8)]
    for th in threads:
        th.start()
    for th in threads:
        th.join()
    for s in stores:
        s.close()
    assert errors == []
    assert sorted(wins) == sorted(tokens)  # every token exactly once


def test_ca_journal_set_and_fetch(store: SQLDataStore) -> None:
    assert store.fetch_ca_journal("x") is None
    store.set_ca_journal("x", b"\x00one")
    store.set_ca_journal("x", b"\x00two")
    store.set_ca_journal("y", b"")
    assert store.fetch_ca_journal("x") == b"\x00two"
    assert store.fetch_ca_journal("y") == b""


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


def test_sqlite_raw_schema_has_foreign_keys_on(tmp_path: os.PathLike[str]) -> None:
    s = SQLDataStore("sqlite3", os.path.join(tmp_path, "ds.sqlite3"))
    with s.engine.connect() as c:
        assert c.exec_driver_sql("PRAGMA foreign_keys").scalar() == 1
        assert c.exec_driver_sql("PRAGMA journal_mode").scalar() == "wal"
    s.close()
    engine = create_engine(f"sqlite:///{os.path.join(tmp_path, 'ds.sqlite3')}")
    assert "registered_entries" in inspect(engine).get_table_names()
    engine.dispose()
