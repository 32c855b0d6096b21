"""Typed sections of a config file: declare fields, get checked values and located errors.

Types follow what SPIRE's HCL decoder accepts, so a file SPIRE loads loads here
and a value SPIRE rejects is rejected here: strings also take numbers
(``bind_port = "8081"`` and ``port = 8443`` both work for ints), booleans must
be ``true``/``false``, durations are Go duration strings.

pyhcl gives a dict for a single block and a list of dicts for a repeated one;
:func:`merge_blocks` folds either into one dict, the way SPIRE's decoder fills
one struct from repeated blocks.
"""

from __future__ import annotations

import copy
from dataclasses import dataclass
from typing import Any, Callable, Optional, Sequence, Union

from ..duration import DurationError, parse_duration
from .source import ConfigError, KeyPath, SourceInfo, known_list, line_of, lines_of

MISSING: Any = object()


def render_key(path: KeyPath) -> str:
    """("telemetry", "DogStatsd", 1, "address") -> "telemetry.DogStatsd[1].address"."""
    out = ""
    for part in path:
        if isinstance(part, int):
            out += f"[{part}]"
        else:
            out += ("." if out else "") + part
    return out


def _names(path: KeyPath) -> tuple[str, ...]:
    return tuple(p for p in path if isinstance(p, str))


class Ctx:
    """Where values come from, for errors and warnings that name file, line and key."""

    def __init__(self, source: Optional[SourceInfo] = None, path: Optional[str] = None) -> None:
        self.source = source
        self.path = path if path is not None else (source.path if source else None)
        self.warnings: list[str] = []
        # key path -> CLI flag that set it; such values have no line in the file.
        self.overrides: dict[tuple[str, ...], str] = {}

    def line(self, path: KeyPath) -> Optional[int]:
        if _names(path) in self.overrides:
            return None
        return line_of(self.source, path)

    def occurrences(self, path: KeyPath) -> int:
        return len(lines_of(self.source, path))

    def error(self, path: KeyPath, message: str) -> ConfigError:
        flag = self.overrides.get(_names(path))
        if flag:
            return ConfigError(f"{message} (set by the -{flag} flag)", key=render_key(path))
        return ConfigError(message, path=self.path, line=self.line(path), key=render_key(path))

    def warn(self, path: KeyPath, message: str) -> None:
        self.warnings.append(str(ConfigError(message, path=self.path, line=self.line(path), key=render_key(path))))


def describe(value: Any) -> str:
    """How a wrong value reads in an error message."""
    if isinstance(value, bool):
        return f"the boolean {str(value).lower()}"
    if isinstance(value, (int, float)):
        return f"the number {value}"
    if isinstance(value, str):
        return f'the string "{value}"'
    if isinstance(value, dict):
        return "a block"
    if isinstance(value, list):
        return "a list"
    return type(value).__name__


def go_int(text: str) -> int:
    """Go's ``strconv.ParseInt(s, 0, 0)``: decimal, 0x.., 0o.., 0b.., or a leading-0 octal."""
    s = text
    sign = 1
    if s[:1] in "+-" and s:
        sign = -1 if s[0] == "-" else 1
        s = s[1:]
    low = s.lower()
    if low.startswith("0x"):
        return sign * int(s[2:], 16)
    if low.startswith("0o"):
        return sign * int(s[2:], 8)
    if low.startswith("0b"):
        return sign * int(s[2:], 2)
    if len(s) > 1 and s[0] == "0":
        return sign * int(s[1:], 8)
    if not s.isdigit() or not s.isascii():
        raise ValueError(text)
    return sign * int(s)


def _deep_merge(into: dict[str, Any], more: dict[str, Any]) -> None:
    for k, v in more.items():
        if isinstance(v, dict) and isinstance(into.get(k), dict):
            _deep_merge(into[k], v)
        else:
            into[k] = copy.deepcopy(v)


def merge_blocks(ctx: Ctx, path: KeyPath, value: Any) -> dict[str, Any]:
    """One dict from a block given once (dict) or repeated (list of dicts)."""
    if value is None:
        return {}
    if isinstance(value, dict):
        return copy.deepcopy(value)
    if isinstance(value, list) and all(isinstance(v, dict) for v in value):
        merged: dict[str, Any] = {}
        for v in value:
            _deep_merge(merged, v)
        return merged
    raise ctx.error(path, f"expected a block {{ ... }}, got {describe(value)}")


def block_list(ctx: Ctx, path: KeyPath, value: Any) -> list[dict[str, Any]]:
    """A list of blocks from one block, a repeated block, or a list of objects."""
    if value is None:
        return []
    if isinstance(value, dict):
        return [copy.deepcopy(value)]
    if isinstance(value, list) and all(isinstance(v, dict) for v in value):
        return [copy.deepcopy(v) for v in value]
    raise ctx.error(path, f"expected a block or a list of blocks, got {describe(value)}")


def _single(ctx: Ctx, path: KeyPath, value: Any) -> Any:
    """A scalar set twice reaches us as a list; SPIRE's decoder keeps the last one."""
    if isinstance(value, list) and value and ctx.occurrences(path) > 1 and not isinstance(value[-1], (list, dict)):
        ctx.warn(path, "set more than once; the last value is used")
        return value[-1]
    return value


# --- kinds --------------------------------------------------------------------------


class Kind:
    name = "value"

    def convert(self, ctx: Ctx, path: KeyPath, value: Any) -> Any:
        return copy.deepcopy(value)

    def empty(self, ctx: Ctx, path: KeyPath) -> Any:
        return None


class _Str(Kind):
    name = "string"

    def convert(self, ctx: Ctx, path: KeyPath, value: Any) -> Any:
        value = _single(ctx, path, value)
        if isinstance(value, str):
            return value
        if isinstance(value, int) and not isinstance(value, bool):
            return str(value)
        raise ctx.error(path, f"expected a string, got {describe(value)}")


class _Int(Kind):
    name = "integer"

    def convert(self, ctx: Ctx, path: KeyPath, value: Any) -> Any:
        value = _single(ctx, path, value)
        if isinstance(value, int) and not isinstance(value, bool):
            return value
        if isinstance(value, str):
            try:
                return go_int(value)
            except ValueError:
                pass
        raise ctx.error(path, f"expected an integer, got {describe(value)}")


class _Bool(Kind):
    name = "boolean"

    def convert(self, ctx: Ctx, path: KeyPath, value: Any) -> Any:
        value = _single(ctx, path, value)
        if isinstance(value, bool):
            return value
        hint = " (write it without quotes)" if isinstance(value, str) and value.lower() in ("true", "false") else ""
        raise ctx.error(path, f"expected true or false, got {describe(value)}{hint}")


class _Duration(Kind):
    name = "duration"

    def convert(self, ctx: Ctx, path: KeyPath, value: Any) -> Any:
        value = _single(ctx, path, value)
        if isinstance(value, int) and not isinstance(value, bool):
            value = str(value)  # SPIRE reads the number's text as a duration string: only 0 parses
        if not isinstance(value, str):
            raise ctx.error(path, f'expected a duration such as "30s", "5m" or "1h", got {describe(value)}')
        try:
            return parse_duration(value)
        except DurationError as exc:
            raise ctx.error(path, str(exc)) from None


class _StrList(Kind):
    name = "list of strings"

    def convert(self, ctx: Ctx, path: KeyPath, value: Any) -> Any:
        if not isinstance(value, list):
            raise ctx.error(path, f'expected a list of strings such as ["a", "b"], got {describe(value)}')
        if value and all(isinstance(v, list) for v in value) and ctx.occurrences(path) > 1:
            value = [x for v in value for x in v]  # repeated key: SPIRE appends
        out = []
        for i, item in enumerate(value):
            if isinstance(item, str):
                out.append(item)
            elif isinstance(item, int) and not isinstance(item, bool):
                out.append(str(item))
            else:
                raise ctx.error(list(path) + [i], f"expected a string, got {describe(item)}")
        return out

    def empty(self, ctx: Ctx, path: KeyPath) -> Any:
        return []


class _Raw(Kind):
    """Kept as written (a block is merged into one dict)."""

    name = "block"

    def convert(self, ctx: Ctx, path: KeyPath, value: Any) -> Any:
        if isinstance(value, (dict, list)) and (isinstance(value, dict) or all(isinstance(v, dict) for v in value)):
            return merge_blocks(ctx, path, value)
        return copy.deepcopy(value)

    def empty(self, ctx: Ctx, path: KeyPath) -> Any:
        return {}


STR: Kind = _Str()
INT: Kind = _Int()
BOOL: Kind = _Bool()
DURATION: Kind = _Duration()
STR_LIST: Kind = _StrList()
RAW: Kind = _Raw()


class Block(Kind):
    """A nested block parsed with its own schema; absent means all defaults."""

    name = "block"

    def __init__(self, schema: "Schema") -> None:
        self.schema = schema

    def convert(self, ctx: Ctx, path: KeyPath, value: Any) -> Any:
        return self.schema.parse(ctx, path, merge_blocks(ctx, path, value))

    def empty(self, ctx: Ctx, path: KeyPath) -> Any:
        return self.schema.parse(ctx, path, {})


class BlockList(Kind):
    """Zero or more blocks (``DogStatsd = [{...}, {...}]`` or repeated ``DogStatsd {}``)."""

    name = "list of blocks"

    def __init__(self, schema: "Schema") -> None:
        self.schema = schema

    def convert(self, ctx: Ctx, path: KeyPath, value: Any) -> Any:
        return [self.schema.parse(ctx, list(path) + [i], b) for i, b in enumerate(block_list(ctx, path, value))]

    def empty(self, ctx: Ctx, path: KeyPath) -> Any:
        return []


class LabeledBlocks(Kind):
    """``federates_with "td" { ... }`` blocks: label -> parsed block, in file order."""

    name = "labeled blocks"

    def __init__(self, schema: "Schema") -> None:
        self.schema = schema

    def convert(self, ctx: Ctx, path: KeyPath, value: Any) -> Any:
        out: dict[str, Any] = {}
        bodies: dict[str, list[Any]] = {}
        for item in block_list(ctx, path, value):
            for label, body in item.items():
                bodies.setdefault(label, []).append(body)
        for label, parts in bodies.items():
            merged: dict[str, Any] = {}
            for part in parts:
                _deep_merge(merged, merge_blocks(ctx, list(path) + [label], part))
            out[label] = self.schema.parse(ctx, list(path) + [label], merged)
        return out

    def empty(self, ctx: Ctx, path: KeyPath) -> Any:
        return {}


# --- fields and schemas --------------------------------------------------------------


@dataclass
class Field:
    """One key of a block. ``check`` returns an error message for a bad (converted) value."""

    name: str
    kind: Kind
    default: Any = MISSING
    required: bool = False
    choices: Optional[Sequence[str]] = None
    deprecated: Optional[str] = None
    check: Optional[Callable[[Any], Optional[str]]] = None


class Values(dict[str, Any]):
    """Parsed values by key, plus which keys the file (or a flag) actually set."""

    present: set[str]

    def __init__(self, *args: Any, **kw: Any) -> None:
        super().__init__(*args, **kw)
        self.present = set()


class Schema:
    """A block's fields. ``unknown`` is "error" where SPIRE rejects unknown keys and
    "warn" where SPIRE silently ignores them (so such files still load)."""

    def __init__(self, fields: Sequence[Field], unknown: str = "error") -> None:
        self.fields = {f.name: f for f in fields}
        self.unknown = unknown

    def known(self) -> list[str]:
        return sorted(self.fields)

    def parse(self, ctx: Ctx, path: KeyPath, data: Optional[dict[str, Any]]) -> Values:
        data = data or {}
        unknown = [k for k in data if k not in self.fields]
        if unknown:
            # Report the first one in the file, so the line points at it.
            unknown.sort(key=lambda k: (ctx.line(list(path) + [k]) or 0, k))
            for key in unknown if self.unknown == "warn" else unknown[:1]:
                msg = f'unknown key "{key}"; known keys: {known_list(self.fields)}'
                if self.unknown == "warn":
                    ctx.warn(list(path) + [key], msg + " (ignored)")
                else:
                    raise ctx.error(list(path) + [key], msg)
        out = Values()
        for f in self.fields.values():
            fpath = list(path) + [f.name]
            if f.name in data:
                value = f.kind.convert(ctx, fpath, data[f.name])
                if f.choices is not None and value is not None:
                    value = _choose(ctx, fpath, value, f.choices)
                if f.check is not None and value is not None:
                    problem = f.check(value)
                    if problem:
                        raise ctx.error(fpath, problem)
                if f.deprecated:
                    ctx.warn(fpath, f.deprecated)
                out.present.add(f.name)
            elif f.required:
                raise ctx.error(fpath, "must be configured")
            elif f.default is MISSING:
                value = f.kind.empty(ctx, fpath)
            else:
                value = copy.deepcopy(f.default)
            out[f.name] = value
        return out


def _choose(ctx: Ctx, path: KeyPath, value: Any, choices: Sequence[str]) -> Any:
    for c in choices:
        if isinstance(value, str) and value.lower() == c.lower():
            return c
    raise ctx.error(path, f'invalid value "{value}"; must be one of: {", ".join(choices)}')


def at(path: KeyPath, *more: Union[str, int]) -> list[Union[str, int]]:
    """``at(("server",), "bind_port")`` -> ["server", "bind_port"]."""
    return list(path) + list(more)
