"""DataStore "sql": trust bundles."""

from __future__ import annotations

import pytest

from spire_py.common.registration import Entry
from spire_py.server.datastore import (
    AlreadyExistsError,
    Bundle,
    ConflictError,
    InvalidArgumentError,
    NotFoundError,
    SQLDataStore,
)
from tests.unit.helpers.datastore import FED, NOW, TD, entry, jwt_key, make_cert


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


# --- forced rotation: taint and revoke (SPIRE's sqlstore words) ---------------------------


def _ca_der() -> tuple[bytes, str]:
    from cryptography.hazmat.primitives import serialization

    from spire_py.common.keys import generate_key
    from spire_py.common.x509util import authority_id, create_ca_certificate, x509_ca_subject

    key = generate_key()
    cert = create_ca_certificate(key.public_key(), key, subject=x509_ca_subject(), ttl=3600, now=NOW)
    return cert.public_bytes(serialization.Encoding.DER), authority_id(cert)


def test_taint_then_revoke_x509_and_jwt_authorities(store: SQLDataStore) -> None:
    (a, a_id), (b, _) = _ca_der(), _ca_der()
    store.create_bundle(Bundle(TD, [a, b], [jwt_key("k1", NOW + 3600), jwt_key("k2", NOW + 3600)]))
    with pytest.raises(NotFoundError, match="no ca found with provided subject key ID"):
        store.taint_x509_ca(TD, "00ff")
    with pytest.raises(InvalidArgumentError, match="it is not possible to revoke an untainted root CA"):
        store.revoke_x509_ca(TD, a_id)
    store.taint_x509_ca(TD, a_id)
    got = store.fetch_bundle(TD)
    assert got is not None and got.tainted_x509_authorities == [a] and got.sequence_number == 1
    with pytest.raises(InvalidArgumentError, match="root CA is already tainted"):
        store.taint_x509_ca(TD, a_id)
    store.append_bundle(Bundle(TD, [a]))  # an append of the same CA keeps it tainted
    assert store.fetch_bundle(TD).tainted_x509_authorities == [a]  # type: ignore[union-attr]
    store.revoke_x509_ca(TD, a_id)
    got = store.fetch_bundle(TD)
    assert got is not None and got.x509_authorities == [b] and got.tainted_x509_authorities == []
    with pytest.raises(NotFoundError, match="no root CA found with provided subject key ID"):
        store.revoke_x509_ca(TD, a_id)

    with pytest.raises(InvalidArgumentError, match="it is not possible to revoke an untainted key"):
        store.revoke_jwt_key(TD, "k1")
    assert store.taint_jwt_key(TD, "k1").tainted
    with pytest.raises(InvalidArgumentError, match="key is already tainted"):
        store.taint_jwt_key(TD, "k1")
    assert store.revoke_jwt_key(TD, "k1").key_id == "k1"
    assert [k.key_id for k in store.fetch_bundle(TD).jwt_authorities] == ["k2"]  # type: ignore[union-attr]
    with pytest.raises(NotFoundError, match="no JWT Key found with provided key ID"):
        store.taint_jwt_key(TD, "k1")


def test_a_revoked_authority_is_not_appended_again_and_is_forgotten_at_expiry(store: SQLDataStore) -> None:
    # An upstream (nested SPIRE) that still lists a revoked root must not bring it back, even after a
    # restart: the revoked IDs are stored with the bundle until the authority expires.
    (a, a_id), (b, _) = _ca_der(), _ca_der()
    store.create_bundle(Bundle(TD, [a, b], [jwt_key("k1", NOW + 3600), jwt_key("k2", NOW + 3600)]))
    store.taint_x509_ca(TD, a_id)
    store.revoke_x509_ca(TD, a_id)
    store.taint_jwt_key(TD, "k1")
    store.revoke_jwt_key(TD, "k1")
    got = store.append_bundle(Bundle(TD, [a, b], [jwt_key("k1", NOW + 3600)]))
    assert got.x509_authorities == [b] and [k.key_id for k in got.jwt_authorities] == ["k2"]
    fetched = store.fetch_bundle(TD)
    assert fetched is not None and set(fetched.revoked_authorities) == {a_id, "k1"}
    # A replaced bundle keeps the revoked set.
    store.set_bundle(Bundle(TD, [b], [jwt_key("k2", NOW + 3600)]))
    assert store.append_bundle(Bundle(TD, [a])).x509_authorities == [b]
    # Once expired, the revoked IDs are pruned with the authorities.
    store.append_bundle(Bundle(TD, [make_cert(NOW + 90000)], [jwt_key("k3", NOW + 90000)]))
    assert store.prune_bundle(TD, NOW + 7200)
    assert store.fetch_bundle(TD).revoked_authorities == {}  # type: ignore[union-attr]
