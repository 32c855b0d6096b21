"""Reading a SPIRE config file: HCL or JSON, env expansion, and where each key sits.

pyhcl returns plain values without positions, so lines are recovered by a small
scanner over the same text: it walks blocks the way HCL (and JSON, its subset
here) nests them and records, for every key path, the lines it appears on.
``plugins { KeyManager "disk" { plugin_data { keys_path = ... } } }`` records
``plugins.KeyManager.disk.plugin_data.keys_path``.
"""

from __future__ import annotations

import errno
import json
import os
import re
import sys
from dataclasses import dataclass, field
from typing import Any, Iterable, Optional, Sequence, Union

import hcl  # pyhcl

from ..errors import SpireError

KeyPath = Sequence[Union[str, int]]


class ConfigError(SpireError):
    """A configuration mistake: ``str()`` is ``<path>:<line>: <key>: <message>``, with unknown parts left out."""

    def __init__(
        self,
        message: str,
        *,
        path: Optional[str] = None,
        line: Optional[int] = None,
        key: Optional[str] = None,
    ) -> None:
        super().__init__(message)
        self.message = message
        self.path = path
        self.line = line
        self.key = key

    def __str__(self) -> str:
        where = ""
        if self.path and self.line:
            where = f"{self.path}:{self.line}: "
        elif self.path:
            where = f"{self.path}: "
        elif self.line:
            where = f"line {self.line}: "
        key = f"{self.key}: " if self.key else ""
        return _printable(f"{where}{key}{self.message}")


# Control characters from the file (a key "a\nb", an escape sequence) would break the
# one-line error or drive the terminal, and a lone surrogate ("\ud800" in JSON) cannot
# be written as UTF-8; they are shown escaped.
_CONTROL = re.compile(r"[\x00-\x08\x0a-\x1f\x7f-\x9f\ud800-\udfff]")


def _printable(text: str) -> str:
    return _CONTROL.sub(lambda m: repr(m.group())[1:-1], text)


# --- environment expansion ------------------------------------------------------

_SPECIAL = set("*#$@!?-0123456789")


def _is_name_char(c: str) -> bool:
    return c == "_" or ("0" <= c <= "9") or ("a" <= c <= "z") or ("A" <= c <= "Z")


def expand_env(text: str, env: Optional[dict[str, str]] = None) -> str:
    """Replace ``$VAR`` and ``${VAR}`` as Go's ``os.Expand`` does (SPIRE's -expandEnv).

    Unset variables become empty; ``$$`` is a literal ``$``; a ``$`` not followed
    by a name stays; a malformed ``${`` is dropped, as in Go.
    """
    environ = os.environ if env is None else env

    def lookup(name: str) -> str:
        return "$" if name == "$" else environ.get(name, "")

    out: list[str] = []
    i = 0
    n = len(text)
    while i < n:
        c = text[i]
        if c != "$" or i + 1 >= n:
            out.append(c)
            i += 1
            continue
        rest = text[i + 1:]
        if rest[0] == "{":
            if len(rest) > 2 and rest[1] in _SPECIAL and rest[2] == "}":
                out.append(lookup(rest[1]))
                i += 4
                continue
            close = rest.find("}", 1)
            if close == 1:  # "${}": bad syntax, eaten
                i += 3
            elif close < 0:  # "${" without "}": bad syntax, "${" eaten
                i += 2
            else:
                out.append(lookup(rest[1:close]))
                i += close + 2
            continue
        if rest[0] in _SPECIAL:
            out.append(lookup(rest[0]))
            i += 2
            continue
        j = 0
        while j < len(rest) and _is_name_char(rest[j]):
            j += 1
        if j == 0:
            out.append("$")
            i += 1
        else:
            out.append(lookup(rest[:j]))
            i += 1 + j
    return "".join(out)


_expand = expand_env  # load_file's parameter shadows the name


# --- the key locator --------------------------------------------------------------

_TOKEN_RE = re.compile(
    r"""
    (?P<ws>[ \t\r\n]+)
  | (?P<comment>\#[^\n]*|//[^\n]*|/\*.*?(?:\*/|\Z))
  | (?P<heredoc><<-?(?P<tag>[A-Za-z_][A-Za-z0-9_-]*)[^\n]*\n)
  | (?P<string>")
  | (?P<punct>[{}\[\]=:,()])
  | (?P<word>[^\s{}\[\]=:,()"\#]+)
    """,
    re.VERBOSE | re.DOTALL,
)


@dataclass
class _Tok:
    kind: str  # "key" (identifier or string), "lit", or a punctuation char
    value: str
    line: int


def _scan_string(text: str, start: int) -> int:
    """Index just past the closing quote of the string opening at ``start``."""
    i = start + 1
    depth = 0
    while i < len(text):
        c = text[i]
        if c == "\\":
            i += 2
            continue
        if c == "$" and text[i + 1:i + 2] == "{":
            depth += 1
            i += 2
            continue
        if c == "}" and depth:
            depth -= 1
        elif c == '"' and not depth:
            return i + 1
        elif c == "\n" and not depth:
            return i  # unterminated; the parser reports it
        i += 1
    return i


def _tokenize(text: str) -> list[_Tok]:
    toks: list[_Tok] = []
    pos = 0
    line = 1
    while pos < len(text):
        m = _TOKEN_RE.match(text, pos)
        if m is None:  # unreachable in practice; skip a character
            pos += 1
            continue
        kind = m.lastgroup
        if kind == "string":
            end = _scan_string(text, pos)
            raw = text[pos + 1:end - 1] if text[end - 1:end] == '"' else text[pos + 1:end]
            try:
                value = json.loads('"' + raw + '"')
            except ValueError:
                value = raw
            toks.append(_Tok("key", value, line))
            line += text.count("\n", pos, end)
            pos = end
            continue
        if kind == "heredoc":
            tag = m.group("tag")
            end_re = re.compile(r"^[ \t]*" + re.escape(tag) + r"[ \t]*$", re.MULTILINE)
            body_start = m.end()
            em = end_re.search(text, body_start)
            end = em.end() if em else len(text)
            toks.append(_Tok("lit", "", line))
            line += text.count("\n", pos, end)
            pos = end
            continue
        chunk = m.group(0)
        if kind == "punct":
            toks.append(_Tok(chunk, chunk, line))
        elif kind == "word":
            toks.append(_Tok("key", chunk, line))
        line += chunk.count("\n")
        pos = m.end()
    return toks


class _Locator:
    """Key path -> lines it occurs on, in source order."""

    def __init__(self, text: str) -> None:
        self.lines: dict[tuple[str, ...], list[int]] = {}
        self.dotted: dict[str, list[int]] = {}
        self._toks = _tokenize(text)
        self._i = 0
        try:
            if self._toks and self._toks[0].kind == "{":
                self._value(())
            else:
                self._body((), None)
        except (IndexError, RecursionError):
            pass  # truncated or absurdly deep input: keep what was recorded

    def _peek(self) -> Optional[_Tok]:
        return self._toks[self._i] if self._i < len(self._toks) else None

    def _record(self, path: tuple[str, ...], line: int) -> None:
        self.lines.setdefault(path, []).append(line)
        self.dotted.setdefault(".".join(path), []).append(line)

    def _body(self, path: tuple[str, ...], end: Optional[str]) -> None:
        while True:
            tok = self._peek()
            if tok is None:
                return
            if tok.kind == end:
                self._i += 1
                return
            if tok.kind != "key":
                self._i += 1  # stray comma or junk
                continue
            keys: list[_Tok] = []
            while (t := self._peek()) is not None and t.kind == "key":
                keys.append(t)
                self._i += 1
            nxt = self._peek()
            if nxt is None:
                return
            first = keys[0].line
            for k in range(1, len(keys) + 1):
                self._record(path + tuple(t.value for t in keys[:k]), first)
            full = path + tuple(t.value for t in keys)
            if nxt.kind in ("=", ":"):
                self._i += 1
                self._value(full)
            elif nxt.kind == "{":
                self._i += 1
                self._body(full, "}")

    def _value(self, path: tuple[str, ...]) -> None:
        tok = self._peek()
        if tok is None:
            return
        self._i += 1
        if tok.kind == "{":
            self._body(path, "}")
        elif tok.kind == "[":
            while (t := self._peek()) is not None and t.kind != "]":
                if t.kind == ",":
                    self._i += 1
                    continue
                self._value(path)
            self._i += 1


@dataclass
class SourceInfo:
    """The text a config was parsed from (after env expansion) and how."""

    path: Optional[str]
    text: str
    format: str  # "hcl" or "json"
    _locator: Optional[_Locator] = field(default=None, repr=False, compare=False)

    def locator(self) -> _Locator:
        if self._locator is None:
            self._locator = _Locator(self.text)
        return self._locator


def _split_key(key: Union[str, KeyPath]) -> tuple[tuple[str, ...], int]:
    """Path without list indices, and the last index (which occurrence to pick)."""
    if isinstance(key, str):
        parts: list[Union[str, int]] = []
        for piece in key.split("."):
            m = re.fullmatch(r"(.*?)((?:\[\d+\])*)", piece)
            assert m is not None
            if m.group(1):
                parts.append(m.group(1))
            parts.extend(int(x) for x in re.findall(r"\[(\d+)\]", m.group(2)))
        key = parts
    names = tuple(str(p) for p in key if not isinstance(p, int))
    indices = [p for p in key if isinstance(p, int)]
    return names, (indices[-1] if indices else 0)


def lines_of(source: Optional[SourceInfo], key: Union[str, KeyPath]) -> list[int]:
    """Every line where exactly this key path occurs (empty when absent)."""
    if source is None:
        return []
    loc = source.locator()
    if isinstance(key, str) and key in loc.dotted:
        return list(loc.dotted[key])
    names, _ = _split_key(key)
    return list(loc.lines.get(names, []))


def line_of(source: Optional[SourceInfo], key: Union[str, KeyPath]) -> Optional[int]:
    """The line of ``key`` ("server.bind_port", "plugins.DataStore.sql.plugin_data.x",
    or a tuple of path parts) in ``source``; the nearest enclosing block's line when
    the key itself is absent; None when nothing matches or there is no source.

    A list index in the key ("telemetry.DogStatsd[1].address") picks that occurrence.
    """
    if source is None:
        return None
    loc = source.locator()
    if isinstance(key, str) and key in loc.dotted:
        return loc.dotted[key][0]
    names, occurrence = _split_key(key)
    while names:
        found = loc.lines.get(names)
        if found:
            return found[min(occurrence, len(found) - 1)]
        names = names[:-1]
        occurrence = 0
    return None


# --- loading -----------------------------------------------------------------------

_PYHCL_LINE = re.compile(r"^Line (\d+), column \d+(?:, index \d+)?: ?")


def _looks_like_json(text: str) -> bool:
    stripped = text.lstrip()
    return stripped.startswith("{")


# Far deeper than any real config (plugin_data rarely passes 6 levels), and shallow
# enough that every recursive walk of the values (deepcopy, merges, the key locator)
# stays well inside Python's stack.
MAX_DEPTH = 100


def _check_values(data: Any, source: SourceInfo) -> None:
    """Nesting depth, and NUL characters, which no name or path may hold (open() would
    raise its own ValueError). Iterative, so any depth is safe to look at."""
    stack: list[tuple[Any, tuple[Union[str, int], ...]]] = [(data, ())]
    while stack:
        value, keys = stack.pop()
        if isinstance(value, str):
            if "\x00" in value:
                raise _nul_error(source, keys)
            continue
        if isinstance(value, dict):
            children: Iterable[tuple[Union[str, int], Any]] = value.items()
        elif isinstance(value, list):
            children = enumerate(value)
        else:
            continue
        if len(keys) >= MAX_DEPTH:
            raise _too_deep_error(source.path)
        for k, child in children:
            if isinstance(k, str) and "\x00" in k:
                raise _nul_error(source, keys + (k,))
            stack.append((child, keys + (k,)))


def _too_deep_error(path: Optional[str]) -> ConfigError:
    return ConfigError(f"nesting too deep (more than {MAX_DEPTH} levels)", path=path)


def _nul_error(source: SourceInfo, keys: tuple[Union[str, int], ...]) -> ConfigError:
    key = "".join(f"[{k}]" if isinstance(k, int) else f".{k}" for k in keys).lstrip(".")
    return ConfigError("must not contain a NUL character", path=source.path, line=line_of(source, keys), key=key)


def parse_text(text: str, path: Optional[str] = None) -> tuple[dict[str, Any], SourceInfo]:
    """Parse HCL or JSON text (JSON when it starts with "{" and is valid JSON)."""
    try:
        data, fmt = _parse(text, path)
    except RecursionError:  # the parsers recurse per level: absurd nesting is the user's mistake
        raise _too_deep_error(path) from None
    if not isinstance(data, dict):
        raise ConfigError("the top level must be an object", path=path, line=1)
    source = SourceInfo(path, text, fmt)
    # HCL labels (a b c { }) nest without braces, so the parsed values are what is measured.
    _check_values(data, source)
    return data, source


_LONG_INT = "integer string conversion"  # in Python's refusal to convert very long integers


def _long_number(text: str, path: Optional[str]) -> ConfigError:
    """Python refuses to convert integers this long (a guard against slow parsing);
    its message names a Python setting, so say it in the file's terms."""
    limit = sys.get_int_max_str_digits()
    m = re.search(r"\d{%d,}" % (limit + 1), text)
    line = text.count("\n", 0, m.start()) + 1 if m else None
    return ConfigError(f"number with more than {limit} digits", path=path, line=line)


def _parse(text: str, path: Optional[str]) -> tuple[Any, str]:
    try:
        return _parse_either(text, path)
    except ValueError as exc:  # syntax errors are ConfigErrors by now
        if _LONG_INT not in str(exc):
            raise
        raise _long_number(text, path) from None


def _parse_either(text: str, path: Optional[str]) -> tuple[Any, str]:
    if _looks_like_json(text):
        try:
            return json.loads(text), "json"
        except json.JSONDecodeError as exc:
            # Not JSON after all? HCL may still accept it; otherwise report the JSON error.
            try:
                return hcl.loads(text), "hcl"
            except RecursionError:
                raise
            except Exception:
                raise ConfigError(f"invalid JSON: {exc.msg} (column {exc.colno})", path=path, line=exc.lineno) from None
    try:
        return hcl.loads(text), "hcl"
    except RecursionError:
        raise
    except Exception as exc:  # pyhcl raises ValueError, sometimes others, for syntax errors
        if _LONG_INT in str(exc):
            raise _long_number(text, path) from None
        msg = str(exc)
        m = _PYHCL_LINE.match(msg)
        if m:
            line: Optional[int] = int(m.group(1))
            msg = msg[m.end():]
        else:
            line = text.count("\n") + (0 if text.endswith("\n") else 1) if "end of file" in msg.lower() else None
        raise ConfigError(f"invalid HCL: {msg}", path=path, line=line) from None


# No real config comes near this; the bound keeps "-config /dev/zero" (or a FIFO that
# never ends) from taking all memory.
MAX_FILE_BYTES = 16 << 20


def read_bounded(path: str) -> bytes:
    """A config-related file's bytes; OSError (EFBIG) past MAX_FILE_BYTES."""
    with open(path, "rb") as f:
        raw = f.read(MAX_FILE_BYTES + 1)
    if len(raw) > MAX_FILE_BYTES:
        raise OSError(errno.EFBIG, f"file larger than {MAX_FILE_BYTES >> 20} MiB")
    return raw


def load_file(path: str, expand_env: bool = False) -> tuple[dict[str, Any], SourceInfo]:
    """Read and parse ``path``; ``expand_env`` substitutes $VAR / ${VAR} first, as -expandEnv does."""
    try:
        raw = read_bounded(path)
    except FileNotFoundError:
        raise ConfigError(
            f"could not find config file {os.path.abspath(path)}: please use the -config flag"
        ) from None
    except OSError as exc:
        raise ConfigError(f'unable to read configuration at "{path}": {exc.strerror or exc}') from None
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        line = raw[: exc.start].count(b"\n") + 1
        raise ConfigError("file is not valid UTF-8", path=path, line=line) from None
    if text.startswith("\ufeff"):
        text = text[1:]
    if expand_env:
        text = _expand(text)
    return parse_text(text, path)


def known_list(keys: Iterable[str]) -> str:
    """Sorted, comma-separated names for "known keys: ..." messages."""
    return ", ".join(sorted(keys))
