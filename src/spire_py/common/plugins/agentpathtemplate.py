"""Agent path templates: the subset of Go text/template that SPIRE's attestors use.

SPIRE renders ``agent_path_template`` with Go's text/template (``missingkey=error``)
and a list of sprig functions, then appends the result to ``/spire/agent``. We
support what agent IDs need: field chains (``{{ .Subject.CommonName }}``), string
and number literals, pipelines (``{{ .Hostname | lower }}``) and a set of Go and
sprig functions. Control structures, variables and other functions are refused
when the template is parsed, so a bad template is a configuration error.

Template data is a tree of plain Python values (dicts for Go structs and maps,
lists for slices); values render as Go's fmt would print them.
"""

from __future__ import annotations

import base64
import hashlib
import posixpath
import re
from dataclasses import dataclass
from typing import Any, Callable, Mapping, Union

from ..errors import SpireError
from ..spiffeid import SpiffeId, SpiffeIdError, TrustDomain


class TemplateError(SpireError, ValueError):
    """The template cannot be parsed, or cannot be rendered with the given data."""


# --- values as Go prints them --------------------------------------------------------

def go_str(value: Any) -> str:
    if value is None:
        return "<no value>"
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, str):
        return value
    if isinstance(value, bytes):
        return "[" + " ".join(str(b) for b in value) + "]"
    if isinstance(value, (list, tuple)):
        return "[" + " ".join(go_str(v) for v in value) + "]"
    if isinstance(value, Mapping):
        return "map[" + " ".join(f"{go_str(k)}:{go_str(v)}" for k, v in sorted(value.items())) + "]"
    return str(value)


def _truthy(value: Any) -> bool:
    return bool(value)


# --- functions: Go builtins and the sprig ones SPIRE lists --------------------------

def _index(coll: Any, *keys: Any) -> Any:
    for key in keys:
        try:
            coll = coll[key]
        except (KeyError, IndexError, TypeError):
            raise TemplateError(f"error calling index: cannot index {go_str(coll)} with {go_str(key)}") from None
    return coll


def _printf(fmt: str, *args: Any) -> str:
    it = iter(args)

    def verb(m: re.Match[str]) -> str:
        flags, conv = m.group(1), m.group(2)
        if conv == "%":
            return "%"
        try:
            arg = next(it)
        except StopIteration:
            return f"%!{conv}(MISSING)"
        if conv in "sv":
            return ("%" + flags + "s") % go_str(arg)
        if conv == "q":
            return '"' + go_str(arg).replace("\\", "\\\\").replace('"', '\\"') + '"'
        if conv in "xX":
            if isinstance(arg, str):
                arg = arg.encode().hex()
                return arg.upper() if conv == "X" else arg
            if isinstance(arg, bytes):
                return arg.hex().upper() if conv == "X" else arg.hex()
        if conv in "dxXo" and isinstance(arg, int) and not isinstance(arg, bool):
            return ("%" + flags + conv) % arg
        return f"%!{conv}({go_str(arg)})"

    return re.sub(r"%([-+ #0]*\d*)([a-zA-Z%])", verb, fmt)


def _print(*args: Any) -> str:
    out = ""
    for i, arg in enumerate(args):
        if i and not isinstance(arg, str) and not isinstance(args[i - 1], str):
            out += " "
        out += go_str(arg)
    return out


def _trunc(n: int, s: str) -> str:
    if n < 0:
        return s[n:] if -n < len(s) else s
    return s[:n]


def _substr(start: int, end: int, s: str) -> str:
    if start < 0:
        return s[:end]
    if end < 0 or end > len(s):
        return s[start:]
    return s[start:end]


def _default(default: Any, *given: Any) -> Any:
    if not given or not _truthy(given[0]):
        return default
    return given[0]


FUNCTIONS: dict[str, Callable[..., Any]] = {
    "index": _index,
    "len": lambda x: len(x),
    "print": _print,
    "printf": _printf,
    "lower": lambda s: str(s).lower(),
    "upper": lambda s: str(s).upper(),
    "trim": lambda s: str(s).strip(),
    "trimAll": lambda cut, s: str(s).strip(cut),
    "trimPrefix": lambda p, s: str(s)[len(p):] if str(s).startswith(p) else str(s),
    "trimSuffix": lambda p, s: str(s)[: -len(p)] if p and str(s).endswith(p) else str(s),
    "replace": lambda old, new, s: str(s).replace(old, new),
    "trunc": _trunc,
    "substr": _substr,
    "nospace": lambda s: "".join(str(s).split()),
    "repeat": lambda n, s: str(s) * n,
    "contains": lambda sub, s: sub in str(s),
    "hasPrefix": lambda p, s: str(s).startswith(p),
    "hasSuffix": lambda p, s: str(s).endswith(p),
    "quote": lambda *a: " ".join('"' + go_str(x).replace('"', '\\"') + '"' for x in a),
    "squote": lambda *a: " ".join("'" + go_str(x) + "'" for x in a),
    "toString": go_str,
    "default": _default,
    "join": lambda sep, items: sep.join(go_str(i) for i in items),
    "splitList": lambda sep, s: str(s).split(sep),
    "first": lambda items: items[0] if items else None,
    "last": lambda items: items[-1] if items else None,
    "sha1sum": lambda s: hashlib.sha1(str(s).encode()).hexdigest(),
    "sha256sum": lambda s: hashlib.sha256(str(s).encode()).hexdigest(),
    "b64enc": lambda s: base64.b64encode(str(s).encode()).decode(),
    "b32enc": lambda s: base64.b32encode(str(s).encode()).decode(),
    "base": lambda s: posixpath.basename(str(s)) or ".",
    "dir": lambda s: posixpath.dirname(str(s)) or ".",
}

_CONTROL = {"if", "else", "end", "range", "with", "define", "template", "block", "break", "continue"}


# --- parse tree ----------------------------------------------------------------------

@dataclass(frozen=True)
class _Field:
    names: tuple[str, ...]  # () is the dot itself


@dataclass(frozen=True)
class _Literal:
    value: Any


@dataclass(frozen=True)
class _Call:
    name: str
    args: tuple["_Node", ...]


@dataclass(frozen=True)
class _Pipeline:
    commands: tuple[Union[_Field, _Literal, _Call, "_Pipeline"], ...]


_Node = Union[_Field, _Literal, _Call, _Pipeline]

_TOKEN_RE = re.compile(
    r"""\s*(?:
      (?P<field>(?:\.[A-Za-z_][A-Za-z0-9_]*)+|\.)
    | (?P<string>"(?:[^"\\]|\\.)*")
    | (?P<raw>`[^`]*`)
    | (?P<number>-?\d+)
    | (?P<ident>[A-Za-z_][A-Za-z0-9_]*)
    | (?P<punct>[|()])
    )""",
    re.VERBOSE,
)


def _tokens(src: str) -> list[tuple[str, str]]:
    out, pos = [], 0
    while pos < len(src):
        rest = src[pos:].lstrip()
        if not rest:
            break
        if rest.startswith("$"):
            raise TemplateError(f"variables are not supported in agent path templates: {{{{{src}}}}}")
        m = _TOKEN_RE.match(src, pos)
        if not m or m.end() == pos:
            raise TemplateError(f"unexpected {src[pos:].strip()[:20]!r} in action {{{{{src}}}}}")
        kind = m.lastgroup or ""
        out.append((kind, m.group(kind)))
        pos = m.end()
    return out


class _Parser:
    def __init__(self, action: str) -> None:
        self.action = action
        self.toks = _tokens(action)
        self.i = 0

    def peek(self) -> tuple[str, str] | None:
        return self.toks[self.i] if self.i < len(self.toks) else None

    def pipeline(self, closing: str | None) -> _Pipeline:
        commands: list[_Node] = []
        while True:
            commands.append(self.command())
            tok = self.peek()
            if tok == ("punct", "|"):
                self.i += 1
                continue
            if closing is None and tok is None:
                break
            if closing is not None and tok == ("punct", closing):
                self.i += 1
                break
            raise TemplateError(f"unexpected {tok[1] if tok else 'end'!r} in action {{{{{self.action}}}}}")
        for later in commands[1:]:
            if not isinstance(later, _Call):
                raise TemplateError(f"non-function in pipeline position in action {{{{{self.action}}}}}")
        return _Pipeline(tuple(commands))

    def command(self) -> _Node:
        tok = self.peek()
        if tok is None or tok == ("punct", "|") or tok == ("punct", ")"):
            raise TemplateError(f"missing value in action {{{{{self.action}}}}}")
        if tok[0] == "ident" and tok[1] not in ("true", "false", "nil"):
            name = tok[1]
            if name in _CONTROL:
                raise TemplateError(f'"{name}" actions are not supported in agent path templates')
            if name not in FUNCTIONS:
                raise TemplateError(
                    f'function "{name}" is not supported in agent path templates; '
                    f'supported: {", ".join(sorted(FUNCTIONS))}')
            self.i += 1
            args: list[_Node] = []
            while (t := self.peek()) is not None and t[1] not in ("|", ")"):
                args.append(self.operand())
            return _Call(name, tuple(args))
        node = self.operand()
        t = self.peek()
        if t is not None and t[1] not in ("|", ")"):
            raise TemplateError(f"can't give argument to non-function in action {{{{{self.action}}}}}")
        return node

    def operand(self) -> _Node:
        tok = self.peek()
        assert tok is not None
        kind, text = tok
        self.i += 1
        if kind == "field":
            return _Field(tuple(text.split(".")[1:]) if text != "." else ())
        if kind == "string":
            try:
                return _Literal(text[1:-1].encode("latin-1", "backslashreplace").decode("unicode_escape"))
            except UnicodeDecodeError:
                raise TemplateError(f"bad string literal {text}") from None
        if kind == "raw":
            return _Literal(text[1:-1])
        if kind == "number":
            return _Literal(int(text))
        if kind == "ident":
            if text in ("true", "false"):
                return _Literal(text == "true")
            if text == "nil":
                raise TemplateError("nil is not a command")
            if text in FUNCTIONS:
                return _Call(text, ())
            raise TemplateError(f'function "{text}" is not supported in agent path templates')
        if (kind, text) == ("punct", "("):
            return self.pipeline(")")
        raise TemplateError(f"unexpected {text!r} in action {{{{{self.action}}}}}")


class AgentPathTemplate:
    """A parsed template; ``render(data)`` returns the agent path."""

    def __init__(self, text: str, parts: list[str | _Pipeline]) -> None:
        self.text = text
        self._parts = parts

    @classmethod
    def parse(cls, text: str) -> "AgentPathTemplate":
        parts: list[str | _Pipeline] = []
        pos = 0
        while True:
            start = text.find("{{", pos)
            if start < 0:
                parts.append(text[pos:])
                break
            literal = text[pos:start]
            inner_start = start + 2
            if text.startswith(("- ", "-\t", "-\n", "-\r"), inner_start):
                literal = literal.rstrip()
                inner_start += 1
            end = text.find("}}", inner_start)
            if end < 0:
                raise TemplateError(f"unclosed action in template {text!r}")
            inner_end, pos = end, end + 2
            if text[inner_start:end].endswith((" -", "\t-", "\n-", "\r-")):
                inner_end -= 1
                trim_after = True
            else:
                trim_after = False
            parts.append(literal)
            action = text[inner_start:inner_end]
            stripped = action.strip()
            if stripped.startswith("/*"):
                if not stripped.endswith("*/"):
                    raise TemplateError(f"unclosed comment in template {text!r}")
            elif not stripped:
                raise TemplateError(f"missing value for command in template {text!r}")
            else:
                parts.append(_Parser(action).pipeline(None))
            if trim_after:
                rest = text[pos:]
                pos += len(rest) - len(rest.lstrip())
        return cls(text, [p for p in parts if p != ""])

    def render(self, data: Mapping[str, Any]) -> str:
        out = []
        for part in self._parts:
            out.append(part if isinstance(part, str) else go_str(_eval(part, data, data, None)))
        return "".join(out)


_NO_ARG = object()


def _eval(node: _Node, dot: Any, data: Mapping[str, Any], piped: Any) -> Any:
    if isinstance(node, _Pipeline):
        value: Any = _NO_ARG
        for cmd in node.commands:
            value = _eval(cmd, dot, data, value)
        return value
    if isinstance(node, _Call):
        args = [_eval(a, dot, data, _NO_ARG) for a in node.args]
        if piped is not _NO_ARG:
            args.append(piped)
        try:
            return FUNCTIONS[node.name](*args)
        except TemplateError:
            raise
        except Exception as exc:  # wrong arity or argument types: a template mistake
            raise TemplateError(f"error calling {node.name}: {exc}") from None
    if isinstance(node, _Literal):
        return node.value
    value = dot
    walked = ""
    for name in node.names:
        walked += "." + name
        if not isinstance(value, Mapping):
            raise TemplateError(f"can't evaluate field {name} in {walked}: not a struct or map")
        if name not in value:
            raise TemplateError(f'no field or map key "{name}" for {walked}')
        value = value[name]
    return value


def make_agent_id(td: TrustDomain, template: AgentPathTemplate, data: Mapping[str, Any]) -> SpiffeId:
    """Render ``template`` and append it to ``/spire/agent``, as SPIRE's idutil.AgentID."""
    path = template.render(data)
    if path and not path.startswith("/"):
        raise TemplateError(f'agent path "{path}" rendered from template {template.text!r} must start with "/"')
    try:
        return SpiffeId(td, "/spire/agent" + path)
    except SpiffeIdError as exc:
        raise TemplateError(f'invalid agent path "{path}" rendered from template {template.text!r}: {exc}') from None
