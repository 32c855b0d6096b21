"""Go-style durations ("1h30m", "500ms", "-1.5h"), as SPIRE's configuration and flags use them.

Values are seconds: an ``int`` when whole, a ``float`` when not. Parsing follows
Go's ``time.ParseDuration`` exactly (units ns, us, µs, μs, ms, s, m, h; a bare
``"0"`` is allowed, any other number needs a unit) so a value SPIRE rejects is
rejected here too. Formatting follows Go's ``Duration.String()``.
"""

from __future__ import annotations

import re
from typing import Union

from .errors import SpireError

Seconds = Union[int, float]

_NS_PER = {
    "ns": 1,
    "us": 1_000,
    "µs": 1_000,  # U+00B5 micro sign
    "μs": 1_000,  # U+03BC Greek mu
    "ms": 1_000_000,
    "s": 1_000_000_000,
    "m": 60 * 1_000_000_000,
    "h": 3600 * 1_000_000_000,
}
_MAX_NS = (1 << 63) - 1
_NS_PER_SECOND = 1_000_000_000
_BARE_INT = re.compile(r"^[+-]?[0-9]+$")
_UNIT_CHARS = re.compile(r"[^0-9.]*")


class DurationError(SpireError, ValueError):
    """A value that is not a valid duration; the message quotes the value."""


def _fail(value: str, why: str) -> DurationError:
    return DurationError(f'invalid duration "{value}": {why}')


def parse_duration_ns(value: str) -> int:
    """Parse a Go duration string into integer nanoseconds (Go's own precision)."""
    if not isinstance(value, str):
        raise DurationError(f"invalid duration {value!r}: expected a string such as \"30s\"")
    s = value
    neg = False
    if s[:1] in ("-", "+"):
        neg = s[0] == "-"
        s = s[1:]
    if s == "0":
        return 0
    if s == "":
        raise _fail(value, 'expected a number with a unit, such as "30s", "5m" or "1h"')
    total = 0
    while s:
        # Whole part, then optional fraction; at least one digit overall.
        i = 0
        while i < len(s) and s[i].isdigit() and s[i].isascii():
            i += 1
        whole, s = s[:i], s[i:]
        frac = ""
        if s.startswith("."):
            s = s[1:]
            j = 0
            while j < len(s) and s[j].isdigit() and s[j].isascii():
                j += 1
            frac, s = s[:j], s[j:]
        if not whole and not frac:
            raise _fail(value, 'expected a number with a unit, such as "30s", "5m" or "1h"')
        unit_match = _UNIT_CHARS.match(s)
        unit = unit_match.group(0) if unit_match else ""
        s = s[len(unit):]
        if not unit:
            raise _fail(value, 'missing unit; use one of "ns", "us", "ms", "s", "m", "h" (e.g. "30s")')
        per = _NS_PER.get(unit)
        if per is None:
            raise _fail(value, f'unknown unit "{unit}"; use one of "ns", "us", "ms", "s", "m", "h"')
        ns = int(whole or "0") * per
        if frac:
            # Exact: frac digits scaled by the unit, truncated like Go.
            ns += int(frac) * per // (10 ** len(frac))
        total += ns
        if total > _MAX_NS:
            raise _fail(value, "out of range")
    return -total if neg else total


def _ns_to_seconds(ns: int) -> Seconds:
    if ns % _NS_PER_SECOND == 0:
        return ns // _NS_PER_SECOND
    return ns / _NS_PER_SECOND


def parse_duration(value: Union[str, int, float], *, bare_seconds: bool = False) -> Seconds:
    """Seconds from a Go duration string, or from a number that already is seconds.

    ``bare_seconds=True`` also accepts a string of digits as seconds, for the
    places where SPIRE takes an integer number of seconds (entry TTLs, ``-ttl``).
    """
    if isinstance(value, bool):
        raise DurationError(f"invalid duration {str(value).lower()}: expected a string such as \"30s\"")
    if isinstance(value, int):
        return value
    if isinstance(value, float):
        return int(value) if value.is_integer() else value
    if bare_seconds and isinstance(value, str) and _BARE_INT.match(value):
        return int(value)
    return _ns_to_seconds(parse_duration_ns(value))


def _fmt_frac(v: int, prec: int) -> str:
    """``v`` in units of 10**-prec, trailing zeros dropped: (1500, 3) -> "1.5"."""
    whole, frac = divmod(v, 10**prec)
    if frac == 0:
        return str(whole)
    return f"{whole}.{str(frac).rjust(prec, '0').rstrip('0')}"


def format_duration_ns(ns: int) -> str:
    """Go's ``time.Duration.String()`` for integer nanoseconds."""
    if ns == 0:
        return "0s"
    sign = "-" if ns < 0 else ""
    u = abs(ns)
    if u < _NS_PER_SECOND:
        if u < 1_000:
            return f"{sign}{u}ns"
        if u < 1_000_000:
            return f"{sign}{_fmt_frac(u, 3)}µs"
        return f"{sign}{_fmt_frac(u, 6)}ms"
    secs = _fmt_frac(u % (60 * _NS_PER_SECOND), 9) + "s"
    minutes_total = u // (60 * _NS_PER_SECOND)
    if minutes_total == 0:
        return sign + secs
    hours, minutes = divmod(minutes_total, 60)
    if hours == 0:
        return f"{sign}{minutes}m{secs}"
    return f"{sign}{hours}h{minutes}m{secs}"


def format_duration(seconds: Seconds, *, compact: bool = False) -> str:
    """Display seconds as Go does ("1h0m0s", "1m30s", "500ms").

    ``compact=True`` trims zero tails the way SPIRE's messages do ("1h", "1h30m", "5m").
    """
    ns = int(round(seconds * _NS_PER_SECOND)) if isinstance(seconds, float) else int(seconds) * _NS_PER_SECOND
    s = format_duration_ns(ns)
    if compact:
        if s.endswith("m0s"):
            s = s[:-2]
        if s.endswith("h0m"):
            s = s[:-2]
    return s
