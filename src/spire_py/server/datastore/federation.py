"""Federation relationships: which trust domains this server federates with, where
their bundle endpoints are and how to authenticate them (SPIRE's federated_trust_domains).

A relationship's bundle is the trust domain's row in ``bundles``; creating or
updating a relationship with a bundle writes that row in the same transaction.
Deleting a relationship leaves the bundle (SPIRE does the same: entries may still
federate with it).
"""

from __future__ import annotations

from typing import Any

from sqlalchemy import Connection, delete, func, insert, select, update

from . import schema as s
from .bundles import BundleStore
from .errors import AlreadyExistsError, InvalidArgumentError, NotFoundError
from .models import FEDERATION_MASK_FIELDS, Bundle, FederationRelationship
from .paging import apply_page, next_token
from .transactions import now

T = s.federated_trust_domains
PROFILES = ("https_spiffe", "https_web")


def _td_id(trust_domain: str) -> str:
    return "spiffe://" + trust_domain


def _check(fr: FederationRelationship) -> None:
    if not fr.trust_domain:
        raise InvalidArgumentError("trust domain is required")
    if len(fr.trust_domain) > s.TRUST_DOMAIN_LEN:
        raise InvalidArgumentError(f"trust domain longer than {s.TRUST_DOMAIN_LEN} characters")
    if not fr.bundle_endpoint_url:
        raise InvalidArgumentError("bundle endpoint URL is required")
    if len(fr.bundle_endpoint_url) > s.URL_LEN:
        raise InvalidArgumentError(f"bundle endpoint URL longer than {s.URL_LEN} characters")
    if fr.bundle_endpoint_profile not in PROFILES:
        raise InvalidArgumentError(f'unknown bundle endpoint profile type: "{fr.bundle_endpoint_profile}"')
    if fr.bundle_endpoint_profile == "https_spiffe":
        if not fr.endpoint_spiffe_id:
            raise InvalidArgumentError("bundle endpoint SPIFFE ID is required")
        if len(fr.endpoint_spiffe_id) > s.SPIFFE_ID_LEN:
            raise InvalidArgumentError(f"endpoint SPIFFE ID longer than {s.SPIFFE_ID_LEN} characters")
    if fr.trust_domain_bundle is not None and fr.trust_domain_bundle.trust_domain_id != _td_id(fr.trust_domain):
        raise InvalidArgumentError(
            f'trust domain bundle ("{fr.trust_domain_bundle.trust_domain_id}") must match the '
            f'trust domain of the federation relationship ("{fr.trust_domain}")'
        )


def _row_values(fr: FederationRelationship) -> dict[str, Any]:
    return {
        "bundle_endpoint_url": fr.bundle_endpoint_url,
        "bundle_endpoint_profile": fr.bundle_endpoint_profile,
        "endpoint_spiffe_id": fr.endpoint_spiffe_id if fr.bundle_endpoint_profile == "https_spiffe" else "",
    }


def _from_row(row: Any) -> FederationRelationship:
    return FederationRelationship(
        trust_domain=str(row.trust_domain),
        bundle_endpoint_url=str(row.bundle_endpoint_url),
        bundle_endpoint_profile=str(row.bundle_endpoint_profile),
        endpoint_spiffe_id=str(row.endpoint_spiffe_id),
    )


_COLUMNS = (T.c.id, T.c.trust_domain, T.c.bundle_endpoint_url, T.c.bundle_endpoint_profile, T.c.endpoint_spiffe_id)


class FederationStore(BundleStore):
    def _with_bundle(self, conn: Connection, fr: FederationRelationship) -> FederationRelationship:
        found = self._bundle_row(conn, _td_id(fr.trust_domain))
        fr.trust_domain_bundle = found[1] if found else None
        return fr

    def _write_bundle(self, conn: Connection, b: Bundle) -> None:
        found = self._bundle_row(conn, b.trust_domain_id, lock=True)
        if found is None:
            self._insert_bundle(conn, b)
        else:
            self._store_bundle(conn, found[0], b)

    def create_federation_relationship(self, fr: FederationRelationship) -> FederationRelationship:
        _check(fr)
        with self._write() as conn:
            if conn.execute(select(T.c.id).where(T.c.trust_domain == fr.trust_domain)).first() is not None:
                raise AlreadyExistsError("federation relationship already exists")
            t = now()
            conn.execute(insert(T).values(trust_domain=fr.trust_domain, implicit=False, created_at=t, updated_at=t,
                                          **_row_values(fr)))
            if fr.trust_domain_bundle is not None:
                self._write_bundle(conn, fr.trust_domain_bundle)
            return self._with_bundle(conn, _copy(fr))

    def fetch_federation_relationship(self, trust_domain: str) -> FederationRelationship | None:
        with self._read() as conn:
            row = conn.execute(select(*_COLUMNS).where(T.c.trust_domain == trust_domain)).first()
            return self._with_bundle(conn, _from_row(row)) if row is not None else None

    def list_federation_relationships(
        self, page_token: str = "", page_size: int = 0
    ) -> tuple[list[FederationRelationship], str]:
        q = apply_page(select(*_COLUMNS), T.c.id, page_token, page_size)
        with self._read() as conn:
            rows = conn.execute(q).all()
            out = [self._with_bundle(conn, _from_row(r)) for r in rows]
        return out, next_token(int(rows[-1].id) if rows else None, page_size)

    def count_federation_relationships(self) -> int:
        with self._read() as conn:
            return int(conn.execute(select(func.count()).select_from(T)).scalar_one())

    def update_federation_relationship(
        self, fr: FederationRelationship, mask: set[str] | None = None
    ) -> FederationRelationship:
        fields = FEDERATION_MASK_FIELDS if mask is None else set(mask)
        unknown = fields - FEDERATION_MASK_FIELDS
        if unknown:
            raise InvalidArgumentError(f'unknown federation relationship mask field "{sorted(unknown)[0]}"')
        with self._write() as conn:
            row = conn.execute(select(*_COLUMNS).where(T.c.trust_domain == fr.trust_domain).with_for_update()).first()
            if row is None:
                raise NotFoundError("unable to fetch federation relationship: record not found")
            new = _from_row(row)
            if "bundle_endpoint_url" in fields:
                new.bundle_endpoint_url = fr.bundle_endpoint_url
            if "bundle_endpoint_profile" in fields:
                new.bundle_endpoint_profile = fr.bundle_endpoint_profile
                new.endpoint_spiffe_id = fr.endpoint_spiffe_id
            if "trust_domain_bundle" in fields:
                new.trust_domain_bundle = fr.trust_domain_bundle
            _check(new)
            new = _copy(new, new.trust_domain_bundle)
            conn.execute(update(T).where(T.c.id == row.id).values(updated_at=now(), **_row_values(new)))
            if "trust_domain_bundle" in fields and fr.trust_domain_bundle is not None:
                self._write_bundle(conn, fr.trust_domain_bundle)
            return self._with_bundle(conn, new)

    def delete_federation_relationship(self, trust_domain: str) -> None:
        with self._write() as conn:
            if conn.execute(delete(T).where(T.c.trust_domain == trust_domain)).rowcount != 1:
                raise NotFoundError("record not found")


def _copy(fr: FederationRelationship, bundle: Bundle | None = None) -> FederationRelationship:
    return FederationRelationship(fr.trust_domain, fr.bundle_endpoint_url, fr.bundle_endpoint_profile,
                                  fr.endpoint_spiffe_id if fr.bundle_endpoint_profile == "https_spiffe" else "", bundle)
