"""DataStore "sql": federation relationships (SPIRE's federated_trust_domains)."""

from __future__ import annotations

import pytest

from spire_py.server.datastore import (
    AlreadyExistsError,
    Bundle,
    FederationRelationship,
    InvalidArgumentError,
    NotFoundError,
    SQLDataStore,
)
from tests.unit.helpers.datastore import NOW, make_cert

OTHER = "other.test"


def _rel(td: str = OTHER, **kw: object) -> FederationRelationship:
    fields: dict[str, object] = dict(
        bundle_endpoint_url=f"https://{td}:8443", bundle_endpoint_profile="https_spiffe",
        endpoint_spiffe_id=f"spiffe://{td}/spire/server",
    )
    fields.update(kw)
    return FederationRelationship(td, **fields)  # type: ignore[arg-type]


def test_relationship_round_trips_with_its_bundle(store: SQLDataStore) -> None:
    b = Bundle("spiffe://" + OTHER, [make_cert(NOW + 3600)], sequence_number=3)
    out = store.create_federation_relationship(_rel(trust_domain_bundle=b))
    assert out.trust_domain_bundle == b
    got = store.fetch_federation_relationship(OTHER)
    assert got == out
    assert store.fetch_bundle("spiffe://" + OTHER) == b
    assert store.fetch_federation_relationship("nope.test") is None
    assert store.count_federation_relationships() == 1


def test_relationship_without_bundle_has_none_until_one_is_stored(store: SQLDataStore) -> None:
    store.create_federation_relationship(_rel(bundle_endpoint_profile="https_web", endpoint_spiffe_id="ignored"))
    got = store.fetch_federation_relationship(OTHER)
    assert got is not None and got.trust_domain_bundle is None and got.endpoint_spiffe_id == ""
    store.set_bundle(Bundle("spiffe://" + OTHER, [make_cert(NOW + 10)]))
    got = store.fetch_federation_relationship(OTHER)
    assert got is not None and got.trust_domain_bundle is not None


def test_relationship_create_twice_is_already_exists(store: SQLDataStore) -> None:
    store.create_federation_relationship(_rel())
    with pytest.raises(AlreadyExistsError):
        store.create_federation_relationship(_rel())


@pytest.mark.parametrize("bad", [
    _rel(bundle_endpoint_url=""),
    _rel(bundle_endpoint_profile="acme"),
    _rel(endpoint_spiffe_id=""),
    _rel(trust_domain_bundle=Bundle("spiffe://someone.else")),
])
def test_invalid_relationships_are_refused(store: SQLDataStore, bad: FederationRelationship) -> None:
    with pytest.raises(InvalidArgumentError):
        store.create_federation_relationship(bad)
    assert store.count_federation_relationships() == 0


def test_update_applies_only_masked_fields(store: SQLDataStore) -> None:
    store.create_federation_relationship(_rel())
    new = _rel(bundle_endpoint_url="https://moved.test", bundle_endpoint_profile="https_web")
    out = store.update_federation_relationship(new, {"bundle_endpoint_url"})
    assert out.bundle_endpoint_url == "https://moved.test" and out.bundle_endpoint_profile == "https_spiffe"
    b = Bundle("spiffe://" + OTHER, [make_cert(NOW + 5)])
    out = store.update_federation_relationship(_rel(bundle_endpoint_profile="https_web", trust_domain_bundle=b),
                                               {"bundle_endpoint_profile", "trust_domain_bundle"})
    assert out.bundle_endpoint_profile == "https_web" and out.endpoint_spiffe_id == "" and out.trust_domain_bundle == b
    with pytest.raises(NotFoundError):
        store.update_federation_relationship(_rel("missing.test"))
    with pytest.raises(InvalidArgumentError):
        store.update_federation_relationship(_rel(), {"trust_domain"})


def test_delete_keeps_the_bundle_and_list_pages(store: SQLDataStore) -> None:
    for td in ("a.test", "b.test", "c.test"):
        store.create_federation_relationship(_rel(td, trust_domain_bundle=Bundle("spiffe://" + td)))
    page, token = store.list_federation_relationships(page_size=2)
    assert [r.trust_domain for r in page] == ["a.test", "b.test"]
    page, token = store.list_federation_relationships(token, 2)
    assert [r.trust_domain for r in page] == ["c.test"]
    store.delete_federation_relationship("b.test")
    assert [r.trust_domain for r in store.list_federation_relationships()[0]] == ["a.test", "c.test"]
    assert store.fetch_bundle("spiffe://b.test") is not None
    with pytest.raises(NotFoundError):
        store.delete_federation_relationship("b.test")
