"""Row-level helpers for registration entries, used inside a transaction.

An entry is one ``registered_entries`` row plus its ``selectors``, ``dns_names``
and ``federated_registration_entries`` rows; these helpers write and read the
whole set so callers never see half an entry.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Sequence
from typing import Any

from sqlalchemy import Connection, Row, and_, delete, exists, insert, not_, select

from ...common.registration import MATCH_ANY, MATCH_EXACT, MATCH_SUBSET, MATCH_SUPERSET, Entry, Selector
from . import schema as s
from .errors import InvalidArgumentError
from .matching import check_match, dedupe
from .paging import chunks
from .transactions import now

_ENTRY_ID_RE = re.compile(r"^[A-Za-z0-9._-]*$")

E = s.registered_entries


def _check_len(value: str, limit: int, what: str) -> None:
    if len(value) > limit:
        raise InvalidArgumentError(f"invalid registration entry: {what} longer than {limit} characters")


def check_selectors(selectors: Sequence[Selector], what: str = "registration entry") -> None:
    for sel in selectors:
        if not sel.type:
            raise InvalidArgumentError(f"invalid {what}: selector type is empty")
        if len(sel.type) > s.SELECTOR_TYPE_LEN:
            raise InvalidArgumentError(
                f"invalid {what}: selector type longer than {s.SELECTOR_TYPE_LEN} characters"
            )
        if len(sel.value) > s.SELECTOR_VALUE_LEN:
            raise InvalidArgumentError(
                f"invalid {what}: selector value longer than {s.SELECTOR_VALUE_LEN} characters"
            )
    if len(set(selectors)) != len(selectors):
        dup = next(x for x in selectors if selectors.count(x) > 1)
        raise InvalidArgumentError(f'invalid {what}: duplicate selector "{dup}"')


def validate_entry(e: Entry, fields: frozenset[str] | set[str] | None = None) -> None:
    """SPIRE's datastore-level checks; ``fields`` limits them to an update mask."""

    def want(name: str) -> bool:
        return fields is None or name in fields

    if want("selectors"):
        if not e.selectors:
            raise InvalidArgumentError("invalid registration entry: missing selector list")
        check_selectors(e.selectors)
    if want("spiffe_id"):
        if not e.spiffe_id:
            raise InvalidArgumentError("invalid registration entry: missing SPIFFE ID")
        _check_len(e.spiffe_id, s.SPIFFE_ID_LEN, "SPIFFE ID")
    if want("parent_id"):
        _check_len(e.parent_id, s.SPIFFE_ID_LEN, "parent ID")
    if want("x509_svid_ttl") and e.x509_svid_ttl < 0:
        raise InvalidArgumentError("invalid registration entry: X509SvidTtl is not set")
    if want("jwt_svid_ttl") and e.jwt_svid_ttl < 0:
        raise InvalidArgumentError("invalid registration entry: JwtSvidTtl is not set")
    if want("expires_at") and e.expires_at < 0:
        raise InvalidArgumentError("invalid registration entry: expiry is negative")
    if want("hint"):
        _check_len(e.hint, s.HINT_LEN, "hint")
    if want("dns_names"):
        for name in e.dns_names:
            _check_len(name, s.DNS_NAME_LEN, "DNS name")
    if fields is None:
        _check_len(e.id, s.ENTRY_ID_LEN, "entry ID")
        if not _ENTRY_ID_RE.match(e.id):
            raise InvalidArgumentError("invalid registration entry: entry ID contains invalid characters")
        if e.store_svid:
            check_store_svid_selectors(e.selectors)


def check_store_svid_selectors(selectors: Sequence[Selector]) -> None:
    if len({sel.type for sel in selectors}) > 1:
        raise InvalidArgumentError(
            "invalid registration entry: selector types must be the same when store SVID is enabled"
        )


def write_entry_event(conn: Connection, entry_id: str) -> None:
    conn.execute(insert(s.registered_entries_events).values(entry_id=entry_id, created_at=now()))


def bundle_ids(conn: Connection, trust_domains: Sequence[str]) -> list[int]:
    """Row ids of the bundles an entry federates with; every one must exist."""
    wanted = list(dict.fromkeys(trust_domains))
    if not wanted:
        return []
    found: dict[str, int] = {}
    for part in chunks(wanted):
        for row in conn.execute(
            select(s.bundles.c.trust_domain, s.bundles.c.id).where(s.bundles.c.trust_domain.in_(part))
        ):
            found[row.trust_domain] = int(row.id)
    for td in wanted:
        if td not in found:
            raise InvalidArgumentError(f'unable to find federated bundle "{td}"')
    return [found[td] for td in wanted]


def write_selectors(conn: Connection, internal_id: int, selectors: Iterable[Selector]) -> None:
    rows = [{"registered_entry_id": internal_id, "type": x.type, "value": x.value} for x in selectors]
    if rows:
        conn.execute(insert(s.selectors), rows)


def write_dns_names(conn: Connection, internal_id: int, names: Iterable[str]) -> None:
    rows = [{"registered_entry_id": internal_id, "value": n} for n in dict.fromkeys(names)]
    if rows:
        conn.execute(insert(s.dns_names), rows)


def write_federation(conn: Connection, internal_id: int, ids: Iterable[int]) -> None:
    rows = [{"registered_entry_id": internal_id, "bundle_id": b} for b in ids]
    if rows:
        conn.execute(insert(s.federated_registration_entries), rows)


def delete_entry_rows(conn: Connection, internal_ids: Sequence[int]) -> None:
    """Delete entries and everything hanging off them."""
    for part in chunks(list(internal_ids)):
        for child in (s.selectors, s.dns_names, s.federated_registration_entries):
            conn.execute(delete(child).where(child.c.registered_entry_id.in_(part)))
        conn.execute(delete(E).where(E.c.id.in_(part)))


def hydrate(conn: Connection, rows: Sequence[Row[Any]]) -> list[Entry]:
    """Build entries from ``registered_entries`` rows, reading their children in bulk."""
    if not rows:
        return []
    ids = [int(r.id) for r in rows]
    sels: dict[int, list[Selector]] = {i: [] for i in ids}
    dns: dict[int, list[str]] = {i: [] for i in ids}
    feds: dict[int, list[str]] = {i: [] for i in ids}
    fre = s.federated_registration_entries
    for part in chunks(ids):
        for r in conn.execute(
            select(s.selectors.c.registered_entry_id, s.selectors.c.type, s.selectors.c.value)
            .where(s.selectors.c.registered_entry_id.in_(part))
            .order_by(s.selectors.c.id)
        ):
            sels[int(r.registered_entry_id)].append(Selector(r.type, r.value))
        for d in conn.execute(
            select(s.dns_names.c.registered_entry_id, s.dns_names.c.value)
            .where(s.dns_names.c.registered_entry_id.in_(part))
            .order_by(s.dns_names.c.id)
        ):
            dns[int(d.registered_entry_id)].append(d.value)
        for f in conn.execute(
            select(fre.c.registered_entry_id, s.bundles.c.trust_domain)
            .join(s.bundles, s.bundles.c.id == fre.c.bundle_id)
            .where(fre.c.registered_entry_id.in_(part))
            .order_by(s.bundles.c.trust_domain)
        ):
            feds[int(f.registered_entry_id)].append(f.trust_domain)
    return [
        Entry(
            id=r.entry_id,
            spiffe_id=r.spiffe_id,
            parent_id=r.parent_id,
            selectors=sels[int(r.id)],
            x509_svid_ttl=int(r.x509_svid_ttl),
            jwt_svid_ttl=int(r.jwt_svid_ttl),
            dns_names=dns[int(r.id)],
            admin=bool(r.admin),
            downstream=bool(r.downstream),
            federates_with=feds[int(r.id)],
            expires_at=int(r.expires_at),
            hint=r.hint,
            store_svid=bool(r.store_svid),
            created_at=int(r.created_at),
            revision_number=int(r.revision_number),
        )
        for r in rows
    ]


def federates_with_clause(trust_domains: Sequence[str], match: str) -> Any:
    """SPIRE's federates-with matching, with the same four behaviours as selectors."""
    check_match(match, "federates with")
    tds = list(dict.fromkeys(trust_domains))
    if not tds:
        raise InvalidArgumentError("cannot list by empty federates with set")
    fre = s.federated_registration_entries
    b = s.bundles

    def entries_with(*where: Any) -> Any:
        return E.c.id.in_(
            select(fre.c.registered_entry_id).join(b, b.c.id == fre.c.bundle_id).where(*where)
        )

    fre2 = fre.alias("fre_out")
    b2 = b.alias("b_out")
    has_outside = exists(
        select(fre2.c.registered_entry_id)
        .join(b2, b2.c.id == fre2.c.bundle_id)
        .where(fre2.c.registered_entry_id == E.c.id, b2.c.trust_domain.not_in(tds))
    )
    has_all = [entries_with(b.c.trust_domain == td) for td in tds]
    has_any = entries_with(b.c.trust_domain.in_(tds))
    if match == MATCH_SUPERSET:
        return and_(*has_all)
    if match == MATCH_EXACT:
        return and_(*has_all, not_(has_outside))
    if match == MATCH_SUBSET:
        return and_(has_any, not_(has_outside))
    assert match == MATCH_ANY
    return has_any


def normalize_match_arg(arg: Any, what: str) -> tuple[list[Any], str]:
    """Accept ``(items, match)`` or a bare list of items (exact, SPIRE's API default)."""
    if isinstance(arg, tuple) and len(arg) == 2 and isinstance(arg[1], str):
        items, match = arg
    else:
        items, match = arg, MATCH_EXACT
    items = list(items)
    check_match(match, what)
    if what == "selectors":
        items = dedupe(items)
    return items, match
