"""Opaque page tokens, as SPIRE does them: the last internal row id of a page.

Rows are ordered by their autoincrement id, which never changes and is never
reused, so paging is stable while rows are added or removed. Like SPIRE, a
non-empty page always carries a token; the page after the last one is empty
and carries none.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from typing import TypeVar

from sqlalchemy import ColumnElement, Select

from .errors import InvalidArgumentError

_MAX_ID = 2**63 - 1
# Keep IN (...) lists well under every database's bound-parameter limit.
IN_CHUNK = 500

T = TypeVar("T")


def parse_token(token: str) -> int:
    if not token:
        return 0
    if not token.isdigit():
        raise InvalidArgumentError(f"could not parse token '{token}'")
    return min(int(token), _MAX_ID)


def check_page_size(page_size: int) -> None:
    if page_size < 0:
        raise InvalidArgumentError(f"page size must not be negative, got {page_size}")


def apply_page(
    query: Select[tuple[object, ...]],
    id_column: ColumnElement[int],
    page_token: str,
    page_size: int,
) -> Select[tuple[object, ...]]:
    check_page_size(page_size)
    after = parse_token(page_token)
    if after:
        query = query.where(id_column > after)
    query = query.order_by(id_column)
    if page_size:
        query = query.limit(page_size)
    return query


def next_token(last_id: int | None, page_size: int) -> str:
    if not page_size or last_id is None:
        return ""
    return str(last_id)


def chunks(items: Sequence[T], size: int = IN_CHUNK) -> Iterator[Sequence[T]]:
    for i in range(0, len(items), size):
        yield items[i : i + size]
