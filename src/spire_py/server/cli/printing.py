"""How SPIRE's admin commands read their arguments and print their results.

SPIRE's ``-output json`` goes through Go's protojson (proto field names,
unpopulated fields emitted, nulls dropped) and is then re-encoded from a Go
map, so keys come out sorted, compact, with ``<``, ``>`` and ``&`` escaped.
SPIFFE IDs are parsed with go-spiffe's rules and error texts, so a mistake on
the command line reads the same as with SPIRE.
"""

from __future__ import annotations

import base64
import datetime as _dt
import json
from typing import Any, Awaitable, Optional, TypeVar

from grpclib.exceptions import GRPCError, StreamTerminatedError

from ...common.cli import CommandError, Context
from ...proto.spire.api.types import selector_pb2, spiffeid_pb2
from .client import rpc_error, to_json

T = TypeVar("T")

# google.golang.org/grpc/codes String() spellings.
GO_CODES = [
    "OK", "Canceled", "Unknown", "InvalidArgument", "DeadlineExceeded", "NotFound",
    "AlreadyExists", "PermissionDenied", "ResourceExhausted", "FailedPrecondition",
    "Aborted", "OutOfRange", "Unimplemented", "Internal", "Unavailable", "DataLoss",
    "Unauthenticated",
]

PEM_FORMAT = "pem"
SPIFFE_FORMAT = "spiffe"


def go_code(code: int) -> str:
    return GO_CODES[code] if 0 <= code < len(GO_CODES) else f"Code({code})"


# ---------------------------------------------------------------- output


def is_json(ctx: Context) -> bool:
    """The -output flag as cliprinter reads it ("prettyprint" is an alias)."""
    fmt = str(ctx.flags.get("output", "pretty")).lower()
    if fmt == "json":
        return True
    if fmt in ("pretty", "prettyprint"):
        return False
    raise CommandError(f'invalid value "{ctx.flags.get("output")}" for flag -output: bad formatter flag: unknown format option: "{ctx.flags.get("output")}"')


def go_json(obj: Any, sort_keys: bool = True) -> str:
    """Compact JSON as Go's encoding/json writes it (HTML-safe escaping)."""
    text = json.dumps(obj, separators=(",", ":"), sort_keys=sort_keys, ensure_ascii=False)
    for ch, esc in (("<", "\\u003c"), (">", "\\u003e"), ("&", "\\u0026"), ("\u2028", "\\u2028"), ("\u2029", "\\u2029")):
        text = text.replace(ch, esc)
    return text


def _drop_nulls(value: Any) -> Any:
    if isinstance(value, dict):
        return {k: _drop_nulls(v) for k, v in value.items() if v is not None}
    if isinstance(value, list):
        return [_drop_nulls(v) for v in value if v is not None]
    return value


def proto_json(msg: Any) -> Any:
    return _drop_nulls(to_json(msg))


def print_proto_json(ctx: Context, *msgs: Any) -> None:
    """cliprinter's protojson: one message as an object, several as an array."""
    docs = [proto_json(m) for m in msgs]
    ctx.out(go_json(docs[0] if len(docs) == 1 else docs))


def eprint(ctx: Context, text: str) -> None:
    ctx.stderr.write(text)


def pluralize(msg: str, singular: str, plural: str, n: int) -> str:
    return msg + (singular if n == 1 else plural)


def go_time(ts: int, utc: bool = True) -> str:
    """time.Unix(ts, 0)[.UTC()].String(): ``2006-01-02 15:04:05 +0000 UTC``."""
    if utc:
        t = _dt.datetime.fromtimestamp(ts, _dt.timezone.utc)
        return t.strftime("%Y-%m-%d %H:%M:%S +0000 UTC")
    t = _dt.datetime.fromtimestamp(ts).astimezone()
    return t.strftime("%Y-%m-%d %H:%M:%S %z ") + (t.tzname() or t.strftime("%z"))


def rfc3339(ts: float) -> str:
    return _dt.datetime.fromtimestamp(int(ts), _dt.timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")


def go_quote(s: str) -> str:
    """Go's %q for a string."""
    out = ['"']
    for ch in s:
        o = ord(ch)
        if ch == '"':
            out.append('\\"')
        elif ch == "\\":
            out.append("\\\\")
        elif ch in "\a\b\f\n\r\t\v":
            out.append({"\a": "\\a", "\b": "\\b", "\f": "\\f", "\n": "\\n", "\r": "\\r", "\t": "\\t", "\v": "\\v"}[ch])
        elif o < 0x20 or o == 0x7F:
            out.append(f"\\x{o:02x}")
        elif not ch.isprintable() and o > 0x7F:
            out.append(f"\\u{o:04x}" if o <= 0xFFFF else f"\\U{o:08x}")
        else:
            out.append(ch)
    out.append('"')
    return "".join(out)


def pem_encode(der: bytes, kind: str = "CERTIFICATE") -> str:
    """encoding/pem: 64-column base64 between BEGIN and END lines."""
    b64 = base64.b64encode(der).decode()
    body = "".join(b64[i:i + 64] + "\n" for i in range(0, len(b64), 64))
    return f"-----BEGIN {kind}-----\n{body}-----END {kind}-----\n"


# ---------------------------------------------------------------- RPCs


async def call(aw: Awaitable[T], prefix: str = "") -> T:
    """Await an RPC; a failure becomes SPIRE's one-line error."""
    try:
        return await aw
    except (GRPCError, StreamTerminatedError, ConnectionError, OSError) as exc:
        err = rpc_error(exc)
        raise CommandError(f"{prefix}{err}" if prefix else str(err)) from None


# ---------------------------------------------------------------- arguments

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
    if sid is None:
        return ""
    return f"spiffe://{sid.trust_domain}{sid.path}"


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
