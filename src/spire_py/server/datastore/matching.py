"""SQL for SPIRE's match behaviours over a set-valued attribute.

For an owner row (entry or node) with a set S of (type, value) selectors and a
requested set R:
  exact     S == R      every r in R is in S, and nothing in S is outside R
  superset  S ⊇ R      every r in R is in S
  subset    S ⊆ R      S meets R, and nothing in S is outside R
  any       S ∩ R ≠ ∅
Each test is an indexed subquery on the selector table, so matching runs in the
database instead of loading rows.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence

from sqlalchemy import ColumnElement, FromClause, Table, and_, exists, false, not_, or_, select

from ...common.registration import (
    MATCH_ANY,
    MATCH_BEHAVIOURS,
    MATCH_EXACT,
    MATCH_SUBSET,
    MATCH_SUPERSET,
    Selector,
)
from .errors import InvalidArgumentError


def check_match(match: str, what: str = "selectors") -> None:
    if match not in MATCH_BEHAVIOURS:
        raise InvalidArgumentError(
            f'unknown {what} match behaviour "{match}"; use one of {", ".join(MATCH_BEHAVIOURS)}'
        )


def dedupe(selectors: Iterable[Selector]) -> list[Selector]:
    return list(dict.fromkeys(selectors))


def selector_match_clause(
    owner_key: ColumnElement[object],
    table: Table,
    fk_column: str,
    selectors: Sequence[Selector],
    match: str,
) -> ColumnElement[bool]:
    """A WHERE clause on the owner row; ``table.c[fk_column]`` refers to ``owner_key``."""
    check_match(match)
    wanted = dedupe(selectors)
    if not wanted:
        raise InvalidArgumentError("cannot list by empty selector set")
    fk = table.c[fk_column]

    def is_wanted(t: FromClause) -> ColumnElement[bool]:
        return or_(*(and_(t.c.type == s.type, t.c.value == s.value) for s in wanted))

    def has(sel: Selector) -> ColumnElement[bool]:
        return owner_key.in_(
            select(fk).where(table.c.type == sel.type, table.c.value == sel.value)
        )

    has_any = owner_key.in_(select(fk).where(is_wanted(table)))
    inner = table.alias("outside")
    has_outside = exists(
        select(inner.c[fk_column]).where(inner.c[fk_column] == owner_key, not_(is_wanted(inner)))
    )
    if match == MATCH_SUPERSET:
        return and_(*(has(s) for s in wanted))
    if match == MATCH_EXACT:
        return and_(*(has(s) for s in wanted), not_(has_outside))
    if match == MATCH_SUBSET:
        return and_(has_any, not_(has_outside))
    if match == MATCH_ANY:
        return has_any
    return false()  # pragma: no cover - check_match rejected it
