"""Attested nodes (agents), their selectors and change events."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from sqlalchemy import ColumnElement, Connection, Row, and_, delete, func, insert, select, update

from ...common.registration import Selector
from . import schema as s
from .entries_sql import check_selectors, delete_entry_rows, hydrate, normalize_match_arg, write_entry_event
from .errors import AlreadyExistsError, InvalidArgumentError, NotFoundError
from .matching import dedupe, selector_match_clause
from .models import NODE_MASK_FIELDS, AttestedNode
from .paging import apply_page, check_page_size, chunks, next_token
from .transactions import TransactionalStore, now

N = s.attested_node_entries
NS = s.node_resolver_map_entries

# Column for each AttestedNode field.
_NODE_COLUMNS = {
    "attestation_type": "data_type",
    "cert_serial_number": "serial_number",
    "cert_not_after": "expires_at",
    "new_cert_serial_number": "new_serial_number",
    "new_cert_not_after": "new_expires_at",
    "can_reattest": "can_reattest",
}

SelectorFilter = tuple[Sequence[Selector], str]


def _banned() -> ColumnElement[bool]:
    return and_(N.c.serial_number == "", N.c.new_serial_number == "")


def _check_node(n: AttestedNode) -> None:
    if not n.spiffe_id:
        raise InvalidArgumentError("invalid attested node: missing SPIFFE ID")
    if len(n.spiffe_id) > s.SPIFFE_ID_LEN:
        raise InvalidArgumentError(f"invalid attested node: SPIFFE ID longer than {s.SPIFFE_ID_LEN} characters")
    for name in ("attestation_type", "cert_serial_number", "new_cert_serial_number"):
        if len(getattr(n, name)) > s.SERIAL_LEN:
            raise InvalidArgumentError(f"invalid attested node: {name} longer than {s.SERIAL_LEN} characters")


def _node_from_row(r: Row[Any], selectors: list[Selector] | None = None) -> AttestedNode:
    return AttestedNode(
        spiffe_id=r.spiffe_id,
        attestation_type=r.data_type,
        cert_serial_number=r.serial_number,
        cert_not_after=int(r.expires_at),
        new_cert_serial_number=r.new_serial_number,
        new_cert_not_after=int(r.new_expires_at),
        can_reattest=bool(r.can_reattest),
        selectors=selectors if selectors is not None else [],
    )


def _node_filters(
    by_attestation_type: str | None,
    by_banned: bool | None,
    by_expires_before: int | None,
    by_selector_match: SelectorFilter | Sequence[Selector] | None,
    by_can_reattest: bool | None,
) -> list[ColumnElement[bool]]:
    where: list[ColumnElement[bool]] = []
    if by_attestation_type:
        where.append(N.c.data_type == by_attestation_type)
    if by_banned is not None:
        where.append(_banned() if by_banned else ~_banned())
    if by_expires_before:
        where.append(N.c.expires_at < by_expires_before)
    if by_can_reattest is not None:
        where.append(N.c.can_reattest == bool(by_can_reattest))
    if by_selector_match is not None:
        sels, match = normalize_match_arg(by_selector_match, "selectors")
        where.append(selector_match_clause(N.c.spiffe_id, NS, "spiffe_id", sels, match))
    return where


def _write_node_event(conn: Connection, spiffe_id: str) -> None:
    conn.execute(insert(s.attested_node_entries_events).values(spiffe_id=spiffe_id, created_at=now()))


def _selectors_for(conn: Connection, spiffe_ids: Sequence[str]) -> dict[str, list[Selector]]:
    out: dict[str, list[Selector]] = {i: [] for i in spiffe_ids}
    for part in chunks(list(spiffe_ids)):
        for r in conn.execute(
            # (spiffe_id, id) is the index's own order: no sort, no walk of the whole table.
            select(NS.c.spiffe_id, NS.c.type, NS.c.value)
            .where(NS.c.spiffe_id.in_(part))
            .order_by(NS.c.spiffe_id, NS.c.id)
        ):
            out[r.spiffe_id].append(Selector(r.type, r.value))
    return out


def _delete_join_token_alias_entries(conn: Connection, spiffe_id: str) -> None:
    """SPIRE's cascade: when a join-token agent goes, so does the alias entry the
    agent API created for it (parent = agent ID, one selector spiffe_id:<agent ID>)."""
    E = s.registered_entries
    rows = conn.execute(select(E).where(E.c.parent_id == spiffe_id)).all()
    for entry, row in zip(hydrate(conn, rows), rows):
        if entry.selectors == [Selector("spiffe_id", spiffe_id)]:
            delete_entry_rows(conn, [int(row.id)])
            write_entry_event(conn, entry.id)


class NodeStore(TransactionalStore):
    def _delete_node(self, conn: Connection, row: Row[Any]) -> None:
        if row.data_type == "join_token":
            _delete_join_token_alias_entries(conn, row.spiffe_id)
        conn.execute(delete(NS).where(NS.c.spiffe_id == row.spiffe_id))
        conn.execute(delete(N).where(N.c.id == row.id))
        _write_node_event(conn, row.spiffe_id)

    def create_attested_node(self, n: AttestedNode) -> AttestedNode:
        _check_node(n)
        with self._write() as conn:
            if conn.execute(select(N.c.id).where(N.c.spiffe_id == n.spiffe_id)).first() is not None:
                raise AlreadyExistsError(f'attested node "{n.spiffe_id}" already exists')
            t = now()
            conn.execute(
                insert(N).values(
                    spiffe_id=n.spiffe_id,
                    data_type=n.attestation_type,
                    serial_number=n.cert_serial_number,
                    expires_at=n.cert_not_after,
                    new_serial_number=n.new_cert_serial_number,
                    new_expires_at=n.new_cert_not_after,
                    can_reattest=n.can_reattest,
                    created_at=t,
                    updated_at=t,
                )
            )
            _write_node_event(conn, n.spiffe_id)
            row = conn.execute(select(N).where(N.c.spiffe_id == n.spiffe_id)).one()
        return _node_from_row(row)

    def fetch_attested_node(self, spiffe_id: str, with_selectors: bool = False) -> AttestedNode | None:
        with self._read() as conn:
            row = conn.execute(select(N).where(N.c.spiffe_id == spiffe_id)).first()
            if row is None:
                return None
            sels = _selectors_for(conn, [spiffe_id])[spiffe_id] if with_selectors else None
        return _node_from_row(row, sels)

    def fetch_attested_nodes(self, spiffe_ids: Sequence[str]) -> dict[str, AttestedNode]:
        """Nodes with their selectors, keyed by SPIFFE ID; unknown IDs are left out."""
        ids = list(dict.fromkeys(spiffe_ids))
        out: dict[str, AttestedNode] = {}
        with self._read() as conn:
            for part in chunks(ids):
                rows = conn.execute(select(N).where(N.c.spiffe_id.in_(part))).all()
                sels = _selectors_for(conn, [r.spiffe_id for r in rows])
                for r in rows:
                    out[r.spiffe_id] = _node_from_row(r, sels[r.spiffe_id])
        return out

    def list_attested_nodes(
        self,
        *,
        by_attestation_type: str | None = None,
        by_banned: bool | None = None,
        by_expires_before: int | None = None,
        by_selector_match: SelectorFilter | Sequence[Selector] | None = None,
        by_can_reattest: bool | None = None,
        fetch_selectors: bool = False,
        page_token: str = "",
        page_size: int = 0,
    ) -> tuple[list[AttestedNode], str]:
        where = _node_filters(by_attestation_type, by_banned, by_expires_before, by_selector_match, by_can_reattest)
        q = apply_page(select(N).where(*where), N.c.id, page_token, page_size)
        with self._read() as conn:
            rows = conn.execute(q).all()
            sels = _selectors_for(conn, [r.spiffe_id for r in rows]) if fetch_selectors else {}
        nodes = [_node_from_row(r, sels.get(r.spiffe_id)) for r in rows]
        last = int(rows[-1].id) if rows else None
        return nodes, next_token(last, page_size)

    def count_attested_nodes(
        self,
        *,
        by_attestation_type: str | None = None,
        by_banned: bool | None = None,
        by_expires_before: int | None = None,
        by_selector_match: SelectorFilter | Sequence[Selector] | None = None,
        by_can_reattest: bool | None = None,
    ) -> int:
        where = _node_filters(by_attestation_type, by_banned, by_expires_before, by_selector_match, by_can_reattest)
        with self._read() as conn:
            return int(conn.execute(select(func.count()).select_from(N).where(*where)).scalar_one())

    def update_attested_node(self, n: AttestedNode, mask: set[str] | None = None) -> AttestedNode:
        """Update the fields named in ``mask`` (all updatable ones when None)."""
        fields = set(NODE_MASK_FIELDS) if mask is None else set(mask)
        unknown = fields - NODE_MASK_FIELDS
        if unknown:
            raise InvalidArgumentError(f'unknown attested node mask field "{sorted(unknown)[0]}"')
        _check_node(n)
        with self._write() as conn:
            row = conn.execute(select(N.c.id).where(N.c.spiffe_id == n.spiffe_id).with_for_update()).first()
            if row is None:
                raise NotFoundError(f'attested node "{n.spiffe_id}" not found')
            values: dict[str, Any] = {_NODE_COLUMNS[f]: getattr(n, f) for f in fields}
            values["updated_at"] = now()
            conn.execute(update(N).where(N.c.id == row.id).values(**values))
            _write_node_event(conn, n.spiffe_id)
            updated = conn.execute(select(N).where(N.c.id == row.id)).one()
        return _node_from_row(updated)

    def delete_attested_node(self, spiffe_id: str) -> AttestedNode:
        """Delete a node with its selectors (and a join-token agent's alias entry)."""
        with self._write() as conn:
            row = conn.execute(select(N).where(N.c.spiffe_id == spiffe_id)).first()
            if row is None:
                raise NotFoundError(f'attested node "{spiffe_id}" not found')
            self._delete_node(conn, row)
        return _node_from_row(row)

    def prune_attested_expired_nodes(
        self, expired_before: int, include_non_reattestable: bool = False, batch_size: int = 0
    ) -> int:
        """Delete nodes whose certificate expired before ``expired_before``.

        Banned nodes stay (the ban must outlive the certificate); nodes that
        cannot re-attest stay unless ``include_non_reattestable``. A node whose
        renewed SVID (not yet used) is newer than the cut-off stays too: its
        agent may still come back with it. Returns how many were deleted;
        ``batch_size`` > 0 caps one call (one transaction).
        """
        where = [N.c.expires_at < expired_before, N.c.new_expires_at < expired_before, ~_banned()]
        if not include_non_reattestable:
            where.append(N.c.can_reattest == True)  # noqa: E712 - SQL expression
        q = select(N).where(*where).order_by(N.c.id)
        if batch_size > 0:
            q = q.limit(batch_size)
        with self._write() as conn:
            rows = conn.execute(q).all()
            for row in rows:
                self._delete_node(conn, row)
        return len(rows)

    # -- node selectors --

    def set_node_selectors(self, spiffe_id: str, selectors: Sequence[Selector]) -> None:
        """Replace the node's selectors (duplicates dropped)."""
        if not spiffe_id:
            raise InvalidArgumentError("invalid node selectors: missing SPIFFE ID")
        wanted = dedupe(selectors)
        check_selectors(wanted, "node selectors")
        with self._write() as conn:
            # Delete by primary key, not by spiffe_id: a range delete takes gap
            # locks in MySQL that deadlock concurrent re-attestations (as SPIRE found).
            ids = [int(r[0]) for r in conn.execute(select(NS.c.id).where(NS.c.spiffe_id == spiffe_id))]
            for part in chunks(ids):
                conn.execute(delete(NS).where(NS.c.id.in_(part)))
            if wanted:
                conn.execute(insert(NS), [{"spiffe_id": spiffe_id, "type": x.type, "value": x.value} for x in wanted])
            _write_node_event(conn, spiffe_id)

    def get_node_selectors(self, spiffe_id: str, *, tolerate_stale: bool = False) -> list[Selector]:
        with self._read(tolerate_stale) as conn:
            return _selectors_for(conn, [spiffe_id])[spiffe_id]

    def list_node_selectors(
        self, valid_at: int | None = None, *, tolerate_stale: bool = False
    ) -> dict[str, list[Selector]]:
        """Selectors of every node; with ``valid_at``, only nodes whose
        certificate is still valid then (expires_at > valid_at)."""
        q = select(NS.c.spiffe_id, NS.c.type, NS.c.value)
        if valid_at:
            q = q.join(N, N.c.spiffe_id == NS.c.spiffe_id).where(N.c.expires_at > valid_at)
        q = q.order_by(NS.c.spiffe_id, NS.c.id)
        out: dict[str, list[Selector]] = {}
        with self._read(tolerate_stale) as conn:
            for r in conn.execute(q):
                out.setdefault(r.spiffe_id, []).append(Selector(r.type, r.value))
        return out

    # -- events --

    def list_node_events(
        self, greater_than_id: int = 0, limit: int = 0, *, tolerate_stale: bool = False
    ) -> list[tuple[int, str]]:
        """(event_id, spiffe_id) in id order, after ``greater_than_id``."""
        check_page_size(limit)
        ev = s.attested_node_entries_events
        q = select(ev.c.id, ev.c.spiffe_id).where(ev.c.id > greater_than_id).order_by(ev.c.id)
        if limit:
            q = q.limit(limit)
        with self._read(tolerate_stale) as conn:
            return [(int(r.id), r.spiffe_id) for r in conn.execute(q)]

    def fetch_node_events(self, event_ids: Sequence[int]) -> list[tuple[int, str]]:
        """The events among ``event_ids`` that exist now, in id order (see ``fetch_entry_events``)."""
        ev = s.attested_node_entries_events
        out: list[tuple[int, str]] = []
        with self._read() as conn:
            for part in chunks(sorted(set(event_ids))):
                q = select(ev.c.id, ev.c.spiffe_id).where(ev.c.id.in_(part)).order_by(ev.c.id)
                out.extend((int(r.id), r.spiffe_id) for r in conn.execute(q))
        return out

    def last_node_event_id(self) -> int:
        """The highest node event id now visible (0 when there is none)."""
        ev = s.attested_node_entries_events
        with self._read() as conn:
            return int(conn.execute(select(func.max(ev.c.id))).scalar() or 0)

    def prune_node_events(self, older_than_seconds: int) -> int:
        ev = s.attested_node_entries_events
        with self._write() as conn:
            res = conn.execute(delete(ev).where(ev.c.created_at < now() - older_than_seconds))
        return int(res.rowcount or 0)

