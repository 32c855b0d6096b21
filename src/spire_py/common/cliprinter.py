"""How both CLIs print, byte for byte as SPIRE's Go CLIs (pkg/common/cliprinter).

SPIRE's ``-output json`` goes through Go's protojson (proto field names,
unpopulated fields emitted, nulls dropped) and is then re-encoded by Go's
encoding/json, so keys come out sorted, compact, with ``<``, ``>`` and ``&``
escaped. Pretty output borrows Go's spellings too: ``time.Time.String()``,
``%q``, encoding/pem and grpc-go's error text. Everything here is shared by
``spire-server`` and ``spire-agent`` so the two cannot drift apart.
"""

from __future__ import annotations

import base64
import datetime as _dt
import json
from typing import Any

from google.protobuf import json_format
from google.protobuf.message import Message
from grpclib.exceptions import GRPCError

from .cli import CommandError, Context
from .grpc_codes import go_code

# encoding/json's HTMLEscape, plus the two line separators it always escapes.
_GO_JSON_ESCAPES = (("<", "\\u003c"), (">", "\\u003e"), ("&", "\\u0026"), ("\u2028", "\\u2028"), ("\u2029", "\\u2029"))


def rpc_error_text(exc: GRPCError) -> str:
    """A failed call as grpc-go's status error prints it."""
    return f"rpc error: code = {go_code(exc.status.value)} desc = {exc.message or ''}"


# ---------------------------------------------------------------- -output json


def is_json(ctx: Context) -> bool:
    """The -output flag as cliprinter reads it ("prettyprint" is an alias)."""
    raw = ctx.flags.get("output", "pretty")
    fmt = str(raw).lower()
    if fmt == "json":
        return True
    if fmt in ("pretty", "prettyprint"):
        return False
    raise CommandError(f'invalid value "{raw}" for flag -output: bad formatter flag: unknown format option: "{raw}"')


def go_json(obj: Any, sort_keys: bool = True) -> str:
    """Compact JSON as Go's encoding/json writes it (HTML-safe escaping)."""
    text = json.dumps(obj, separators=(",", ":"), sort_keys=sort_keys, ensure_ascii=False)
    for ch, esc in _GO_JSON_ESCAPES:
        text = text.replace(ch, esc)
    return text


def _drop_nulls(value: Any) -> Any:
    if isinstance(value, dict):
        return {k: _drop_nulls(v) for k, v in value.items() if v is not None}
    if isinstance(value, list):
        return [_drop_nulls(v) for v in value if v is not None]
    return value


def proto_json(msg: Message) -> Any:
    """protojson with proto field names and every field emitted, nulls dropped."""
    doc = json_format.MessageToDict(msg, preserving_proto_field_name=True, always_print_fields_with_no_presence=True)
    return _drop_nulls(doc)


def print_proto_json(ctx: Context, *msgs: Message) -> None:
    """cliprinter's protojson: one message as an object, several as an array."""
    docs = [proto_json(m) for m in msgs]
    ctx.out(go_json(docs[0] if len(docs) == 1 else docs))


# ---------------------------------------------------------------- pretty


def eprint(ctx: Context, text: str) -> None:
    ctx.stderr.write(text)


def pluralize(msg: str, singular: str, plural: str, n: int) -> str:
    return msg + (singular if n == 1 else plural)


def unix_time(ts: float, local: bool = False) -> _dt.datetime:
    """Go's time.Unix(ts, 0), in UTC unless ``local`` (Go's .UTC() or not)."""
    if local:
        return _dt.datetime.fromtimestamp(ts).astimezone()
    return _dt.datetime.fromtimestamp(ts, _dt.timezone.utc)


def go_time(t: _dt.datetime) -> str:
    """time.Time.String(): ``2006-01-02 15:04:05.999999 -0700 MST`` (fraction only when non-zero)."""
    frac = f".{t.microsecond:06d}".rstrip("0") if t.microsecond else ""
    return t.strftime("%Y-%m-%d %H:%M:%S") + frac + t.strftime(" %z ") + (t.tzname() or t.strftime("%z"))


def rfc3339(ts: float) -> str:
    return _dt.datetime.fromtimestamp(int(ts), _dt.timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")


_GO_ESCAPES = {"\a": "\\a", "\b": "\\b", "\f": "\\f", "\n": "\\n", "\r": "\\r", "\t": "\\t", "\v": "\\v"}


def go_quote(s: str) -> str:
    """Go's %q for a string."""
    out = ['"']
    for ch in s:
        o = ord(ch)
        if ch == '"':
            out.append('\\"')
        elif ch == "\\":
            out.append("\\\\")
        elif ch in _GO_ESCAPES:
            out.append(_GO_ESCAPES[ch])
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
