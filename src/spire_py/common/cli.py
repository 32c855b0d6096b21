"""SPIRE-style command line: Go ``flag`` semantics and a tree of sub-commands.

Flags are accepted as ``-flag value``, ``-flag=value``, ``--flag value`` and
``--flag=value``; booleans as ``-flag`` or ``-flag=false``; list flags repeat.
Flag parsing stops at the first positional argument or at ``--``, as Go's does.
Errors are one line on stderr and exit status 1; ``-h`` prints the usage.
"""

from __future__ import annotations

import asyncio
import builtins
import errno
import os
import select
import signal
import sys
from dataclasses import dataclass, field
from typing import Any, Callable, Coroutine, Mapping, Optional, Sequence, TextIO

from .duration import format_duration, parse_duration
from .errors import SpireError
from .files import atomic_write


class UsageError(SpireError):
    """A command-line mistake; printed as one line, exit status 1."""


class CommandError(SpireError):
    """A failed command; printed as one line, exit status 1 (or ``code``), after ``prefix``
    (SPIRE's adapters print ``Error: ``; its Workload API commands print the bare message)."""

    def __init__(self, message: str, code: int = 1, prefix: str = "Error: ") -> None:
        super().__init__(message)
        self.code = code
        self.prefix = prefix


@dataclass
class Flag:
    name: str
    kind: str  # string, int, bool, duration, list
    default: Any
    usage: str


class FlagSet:
    def __init__(self) -> None:
        self.flags: dict[str, Flag] = {}

    def _add(self, name: str, kind: str, default: Any, usage: str) -> None:
        self.flags[name] = Flag(name, kind, default, usage)

    def string(self, name: str, default: str = "", usage: str = "") -> None:
        self._add(name, "string", default, usage)

    def int(self, name: str, default: int = 0, usage: str = "") -> None:
        self._add(name, "int", default, usage)

    def bool(self, name: str, default: bool = False, usage: str = "") -> None:
        self._add(name, "bool", default, usage)

    # int and list name methods from here on: annotations say builtins.int, builtins.list.
    def duration(self, name: str, default: builtins.int = 0, usage: str = "") -> None:
        self._add(name, "duration", default, usage)

    def list(self, name: str, usage: str = "") -> None:
        self._add(name, "list", None, usage)

    def _convert(self, flag: Flag, raw: str) -> Any:
        if flag.kind == "string":
            return raw
        if flag.kind == "int":
            try:
                return int(raw, 0)
            except ValueError:
                raise UsageError(f'invalid value "{raw}" for flag -{flag.name}: parse error') from None
        if flag.kind == "bool":
            low = raw.lower()
            if low in ("1", "t", "true"):
                return True
            if low in ("0", "f", "false"):
                return False
            raise UsageError(f'invalid boolean value "{raw}" for -{flag.name}: parse error')
        if flag.kind == "duration":
            try:
                return parse_duration(raw)
            except ValueError as exc:
                raise UsageError(f'invalid value "{raw}" for flag -{flag.name}: {exc}') from None
        return raw

    def parse(self, args: Sequence[str]) -> tuple[dict[str, Any], builtins.list[str], set[str]]:
        """Return (values, positional args, names of flags set explicitly)."""
        values: dict[str, Any] = {
            f.name: ([] if f.kind == "list" else f.default) for f in self.flags.values()
        }
        seen: set[str] = set()
        i = 0
        args = list(args)
        while i < len(args):
            arg = args[i]
            if arg == "--":
                i += 1
                break
            if not arg.startswith("-") or arg == "-":
                break
            body = arg[2:] if arg.startswith("--") else arg[1:]
            if not body or body.startswith("-") or body.startswith("="):
                raise UsageError(f"bad flag syntax: {arg}")
            name, eq, raw = body.partition("=")
            if name in ("h", "help"):
                raise HelpRequested()
            flag = self.flags.get(name)
            if flag is None:
                raise UsageError(f"flag provided but not defined: -{name}")
            if not eq:
                if flag.kind == "bool":
                    raw = "true"
                else:
                    if i + 1 >= len(args):
                        raise UsageError(f"flag needs an argument: -{name}")
                    i += 1
                    raw = args[i]
            value = self._convert(flag, raw)
            if flag.kind == "list":
                values[name].append(value)
            else:
                values[name] = value
            seen.add(name)
            i += 1
        return values, args[i:], seen

    def usage(self) -> str:
        lines = []
        for f in sorted(self.flags.values(), key=lambda f: f.name.lower()):
            arg = {"string": " string", "int": " int", "duration": " duration", "list": " value", "bool": ""}[f.kind]
            lines.append(f"  -{f.name}{arg}")
            desc = f"    \t{f.usage}"
            if f.kind not in ("bool", "list") and f.default not in ("", 0, None):
                if f.kind == "string":
                    desc += f' (default "{f.default}")'
                elif f.kind == "duration":  # as Go's time.Duration prints: 5s, 1m0s
                    desc += f" (default {format_duration(f.default)})"
                else:
                    desc += f" (default {f.default})"
            lines.append(desc)
        return "\n".join(lines)


class HelpRequested(SpireError):
    pass


@dataclass
class Context:
    """What a command's run function receives."""

    flags: dict[str, Any]
    args: list[str]
    set_flags: set[str]
    stdout: TextIO = field(default_factory=lambda: sys.stdout)
    stderr: TextIO = field(default_factory=lambda: sys.stderr)

    def out(self, text: str = "") -> None:
        print(text, file=self.stdout)


RunFn = Callable[[Context], "int | None | Coroutine[Any, Any, int | None]"]


@dataclass
class Command:
    synopsis: str
    setup: Callable[[FlagSet], None]
    run: RunFn


class App:
    """A tree of commands keyed by their words, e.g. ("entry", "create").

    Each CLI hands its whole command table in (``server/cli/commands.py``).
    """

    def __init__(self, name: str, version: str, commands: Optional[Mapping[str, Command]] = None) -> None:
        self.name = name
        self.version = version
        self.commands: dict[tuple[str, ...], Command] = {tuple(w.split()): c for w, c in (commands or {}).items()}

    def command(self, words: str, synopsis: str, setup: Callable[[FlagSet], None] = lambda fs: None) -> Callable[[RunFn], RunFn]:
        def deco(fn: RunFn) -> RunFn:
            self.commands[tuple(words.split())] = Command(synopsis, setup, fn)
            return fn

        return deco

    def _usage(self, prefix: tuple[str, ...]) -> str:
        head = " ".join((self.name,) + prefix)
        rows = sorted(
            (" ".join(k[len(prefix):]), c.synopsis) for k, c in self.commands.items() if k[: len(prefix)] == prefix
        )
        width = max((len(r[0]) for r in rows), default=0)
        body = "\n".join(f"    {w.ljust(width)}    {s}" for w, s in rows)
        return f"Usage: {head} [--version] [--help] <command> [<args>]\n\nAvailable commands are:\n{body}"

    def main(self, argv: Optional[Sequence[str]] = None) -> int:
        try:
            code = self._main(argv)
            sys.stdout.flush()  # a reader that went away shows here, not in the interpreter's exit
            return code
        except BrokenPipeError:
            if not _closed_pipes():
                raise  # a socket, not our output: a real error
            return _die_of_sigpipe()

    def _main(self, argv: Optional[Sequence[str]]) -> int:
        argv = list(sys.argv[1:] if argv is None else argv)
        if argv and argv[0] in ("-v", "-version", "--version", "version"):
            print(self.version)
            return 0
        # Longest command path that matches the leading words.
        words: tuple[str, ...] = ()
        for n in range(len(argv), 0, -1):
            if tuple(argv[:n]) in self.commands:
                words = tuple(argv[:n])
                break
        if not words:
            prefix = tuple(a for a in argv if not a.startswith("-"))
            print(self._usage(prefix[:1] if prefix and any(k[0] == prefix[0] for k in self.commands) else ()), file=sys.stderr)
            return 127 if argv and argv[0] not in ("-h", "--help", "help") else 0
        cmd = self.commands[words]
        fs = FlagSet()
        cmd.setup(fs)
        try:
            values, rest, seen = fs.parse(argv[len(words):])
        except HelpRequested:
            print(f"Usage of {self.name} {' '.join(words)}:\n{fs.usage()}", file=sys.stderr)
            return 0
        except UsageError as exc:
            print(f"{exc}\nUsage of {self.name} {' '.join(words)}:\n{fs.usage()}", file=sys.stderr)
            return 1
        ctx = Context(values, rest, seen)
        try:
            result = cmd.run(ctx)
            if asyncio.iscoroutine(result):
                result = asyncio.run(result)
        except (CommandError, UsageError) as exc:
            lead = exc.prefix if isinstance(exc, CommandError) else "Error: "
            print(f"{lead}{exc}" if not str(exc).startswith("Error") else str(exc), file=sys.stderr)
            return getattr(exc, "code", 1)
        except KeyboardInterrupt:
            return 130
        return int(result or 0)


def write_file(path: str, data: bytes, mode: int) -> None:
    """A command's ``-write`` output, replaced atomically with ``mode``. Unlike the daemons'
    files, a missing directory is an error, as with Go's os.WriteFile."""
    directory = os.path.dirname(path) or "."
    if not os.path.isdir(directory):
        code = errno.ENOTDIR if os.path.exists(directory) else errno.ENOENT
        raise OSError(code, os.strerror(code), path)
    atomic_write(path, data, mode)


def _closed_pipes() -> list[int]:
    """stdout/stderr descriptors whose reader is gone (``spire-server entry show | head -1``)."""
    closed = []
    for fd in (1, 2):
        try:
            poller = select.poll()
            poller.register(fd, select.POLLOUT)
            if any(ev & select.POLLERR for _, ev in poller.poll(0)):
                closed.append(fd)
        except (AttributeError, OSError, ValueError):  # no poll() here, or fd not open
            pass
    return closed


def _die_of_sigpipe() -> int:
    """Go programs die of SIGPIPE when their output's reader leaves, and shells print
    nothing for that; do the same rather than print a traceback."""
    devnull = os.open(os.devnull, os.O_WRONLY)
    for fd in _closed_pipes():
        os.dup2(devnull, fd)  # what is still buffered must not fail again at exit
    os.close(devnull)
    if hasattr(signal, "SIGPIPE"):
        signal.signal(signal.SIGPIPE, signal.SIG_DFL)
        os.kill(os.getpid(), signal.SIGPIPE)
    return 1  # no SIGPIPE (Windows): a quiet failure
