"""How the admin commands read their arguments, with SPIRE's error texts.

SPIFFE IDs are parsed with go-spiffe's rules and messages, selectors as
``type:value`` and TTLs as SPIRE converts them, so a mistake on the command
line reads the same as with SPIRE.
"""

from __future__ import annotations

import datetime as _dt
from typing import Any, Optional

from ...common.cli import CommandError
from ...common.spiffeid import unchecked_id_string
from ...proto.spire.api.types import selector_pb2, spiffeid_pb2

_TD_CHARS = set("abcdefghijklmnopqrstuvwxyz0123456789.-_")
_PATH_CHARS = _TD_CHARS | set("ABCDEFGHIJKLMNOPQRSTUVWXYZ")


def _check_path(path: str) -> None:
    if not path:
        return
    if path[0] != "/":
        raise CommandError("path must have a leading slash")
    segments = path[1:].split("/")
    for i, seg in enumerate(segments):
        if seg == "":
            raise CommandError("path cannot have a trailing slash" if i == len(segments) - 1 else "path cannot contain empty segments")
        if seg in (".", ".."):
            raise CommandError("path cannot contain dot segments")
        if any(c not in _PATH_CHARS for c in seg):
            raise CommandError("path segment characters are limited to letters, numbers, dots, dashes, and underscores")


def split_spiffe_id(value: str) -> tuple[str, str]:
    """(trust domain, path) of a SPIFFE ID, with go-spiffe's error texts."""
    if value == "":
        raise CommandError("cannot be empty")
    if not value.startswith("spiffe://"):
        raise CommandError("scheme is missing or invalid")
    rest = value[len("spiffe://"):]
    slash = rest.find("/")
    td, path = (rest, "") if slash < 0 else (rest[:slash], rest[slash:])
    if any(c not in _TD_CHARS for c in td):
        raise CommandError("trust domain characters are limited to lowercase letters, numbers, dots, dashes, and underscores")
    if not td:
        raise CommandError("trust domain is missing")
    _check_path(path)
    return td, path


def spiffe_id_proto(value: str) -> spiffeid_pb2.SPIFFEID:
    td, path = split_spiffe_id(value)
    return spiffeid_pb2.SPIFFEID(trust_domain=td, path=path)


def id_string(sid: Optional[spiffeid_pb2.SPIFFEID]) -> str:
    """The other way round: an API SPIFFE ID as the command line writes it."""
    if sid is None:
        return ""
    return unchecked_id_string(sid.trust_domain, sid.path)


def trust_domain_name(value: str) -> str:
    """spiffeid.TrustDomainFromString: a bare name or a SPIFFE ID."""
    if value == "":
        raise CommandError("trust domain is missing")
    if ":/" in value:
        return split_spiffe_id(value)[0]
    if any(c not in _TD_CHARS for c in value):
        raise CommandError("trust domain characters are limited to lowercase letters, numbers, dots, dashes, and underscores")
    return value


def parse_selector(value: str) -> selector_pb2.Selector:
    """type:value; everything right of the first colon is the value."""
    kind, sep, rest = value.partition(":")
    if not sep:
        raise CommandError(f'selector "{value}" must be formatted as type:value')
    return selector_pb2.Selector(type=kind, value=rest)


def check_int32(value: int, what: str, go_type: str = "int") -> int:
    if not -(2**31) <= value < 2**31:
        raise CommandError(f"invalid value for {what}: overflow converting {go_type}({value}) to int32")
    return value


def ttl_seconds(value: Any) -> int:
    """A duration flag's value in whole seconds, rounded up as SPIRE's ttlToSeconds does."""
    ns = round(duration_seconds(value) * 1_000_000_000) + 999_999_999
    q = abs(ns) // 1_000_000_000
    return q if ns >= 0 else -q


def duration_seconds(value: Any) -> float:
    if isinstance(value, _dt.timedelta):
        return value.total_seconds()
    return float(value or 0)
