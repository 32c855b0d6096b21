"""Built-in plugins: found by (side, type, name) as in SPIRE's catalog, configured by one path.

A plugin class declares ``TYPE`` and ``NAME``, its ``plugin_data`` keys as a
:class:`Schema` (``CONFIG``) and the dataclass they fill (``CONFIG_TYPE``), and at
most two hooks:

* ``validate(config, ctx)``: checks the schema cannot express (one key or another,
  a template that must parse, a file that must load). It may read, never write:
  ``spire-server validate`` runs it.
* ``from_config(config, ctx)``: the ready instance (may create directories or open
  a database).

:meth:`Plugin.configure` and :meth:`Plugin.check_config` are the one path around
them: unknown keys and wrong types are refused with :class:`PluginConfigError`
naming the key, which ``daemon_config.configure_plugin`` locates (file, line, key).
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Any, Callable, ClassVar, Mapping, Optional, TypeVar

from .config.schema import BOOL, DURATION, INT, STR, STR_LIST, Ctx, Field, Kind, Schema, describe
from .config.source import ConfigError, KeyPath
from .errors import SpireError

# What a plugin module needs to declare its config comes from here.
__all__ = [
    "BOOL", "DURATION", "INT", "STR", "STR_LIST", "Ctx", "Field", "KeyPath", "Kind", "Schema",
    "EXACT_INT", "EXACT_STR", "EXACT_STR_LIST", "NoConfig", "Plugin", "PluginConfigError", "PluginContext",
    "known_names", "known_types", "lookup", "parse_plugin_data", "register",
]


class PluginConfigError(SpireError, ValueError):
    """A plugin's configuration is invalid; ``key`` names the offending key when known."""

    def __init__(self, message: str, key: str | None = None) -> None:
        super().__init__(message)
        self.key = key


@dataclass
class PluginContext:
    """What every plugin may need from its host at configure time. Each side extends it
    (``ServerPluginContext`` adds the datastore, ``AgentPluginContext`` the join token)."""

    trust_domain: str
    data_dir: str = ""
    side: str = "server"  # "server" or "agent"


# --- plugin_data kinds --------------------------------------------------------------
# The plugins have always taken their values as written (a number is not a path); these
# kinds keep that, with the messages the plugins gave: "<key> must be a string".


def _name(path: KeyPath) -> str:
    names = [p for p in path if isinstance(p, str)]
    return names[-1] if names else "value"


class _ExactStr(Kind):
    name = "string"

    def convert(self, ctx: Ctx, path: KeyPath, value: Any) -> Any:
        if isinstance(value, str):
            return value
        raise ctx.error(path, f"{_name(path)} must be a string")

    def empty(self, ctx: Ctx, path: KeyPath) -> Any:
        return ""


class _ExactInt(Kind):
    name = "integer"

    def convert(self, ctx: Ctx, path: KeyPath, value: Any) -> Any:
        if isinstance(value, int) and not isinstance(value, bool):
            return value
        raise ctx.error(path, f"{_name(path)} must be an integer, got {describe(value)}")


class _ExactStrList(Kind):
    name = "list of strings"

    def convert(self, ctx: Ctx, path: KeyPath, value: Any) -> Any:
        if isinstance(value, list) and all(isinstance(v, str) for v in value):
            return list(value)
        raise ctx.error(path, f"{_name(path)} must be a list of strings")

    def empty(self, ctx: Ctx, path: KeyPath) -> Any:
        return []


EXACT_STR: Kind = _ExactStr()
EXACT_INT: Kind = _ExactInt()
EXACT_STR_LIST: Kind = _ExactStrList()


def parse_plugin_data(schema: Schema, data: Optional[Mapping[str, Any]]) -> dict[str, Any]:
    """``plugin_data`` checked against ``schema``: values by key, or PluginConfigError whose
    ``key`` is relative to plugin_data ("keys_path"), which the host locates."""
    data = dict(data or {})
    unknown = sorted(k for k in data if k not in schema.fields)
    if unknown:
        raise PluginConfigError(
            f'unknown configuration key "{unknown[0]}"; known keys: {", ".join(schema.known()) or "none"}',
            unknown[0])
    try:
        return dict(schema.parse(Ctx(), [], data))
    except ConfigError as exc:
        raise PluginConfigError(exc.message, exc.key or None) from None


# --- the plugin base ------------------------------------------------------------------


@dataclass(frozen=True)
class NoConfig:
    """The config of a plugin that takes no plugin_data."""


PluginT = TypeVar("PluginT", bound="Plugin")


class Plugin:
    TYPE: ClassVar[str] = ""
    NAME: ClassVar[str] = ""
    CONFIG: ClassVar[Schema] = Schema([])
    CONFIG_TYPE: ClassVar[type[Any]] = NoConfig

    # --- the hooks a plugin overrides ---
    @classmethod
    def validate(cls, config: Any, ctx: PluginContext) -> None:
        """Checks beyond the schema; reads at most (``validate`` runs this, so: no writes)."""

    @classmethod
    def from_config(cls: type[PluginT], config: Any, ctx: PluginContext) -> PluginT:
        """The configured instance; by default the class takes no arguments."""
        return cls()

    # --- the one path around them ---
    @classmethod
    def parse_config(cls, data: Mapping[str, Any], ctx: PluginContext) -> Any:
        """plugin_data -> ``CONFIG_TYPE``, validated; no side effects."""
        config = cls.CONFIG_TYPE(**parse_plugin_data(cls.CONFIG, data))
        cls.validate(config, ctx)
        return config

    @classmethod
    def check_config(cls, data: Mapping[str, Any], ctx: PluginContext) -> None:
        """What ``validate`` checks: the same parsing as configure, nothing created."""
        cls.parse_config(data, ctx)

    @classmethod
    def configure(cls: type[PluginT], data: Mapping[str, Any], ctx: PluginContext) -> PluginT:
        return cls.from_config(cls.parse_config(data, ctx), ctx)

    async def close(self) -> None:
        """Release resources; default: nothing to release."""


# (side, type) -> name -> class
_REGISTRY: dict[tuple[str, str], dict[str, type[Plugin]]] = {}

P = TypeVar("P", bound=type[Plugin])


def _check_declaration(cls: type[Plugin]) -> None:
    """A schema key without a dataclass field (or the reverse) is a bug: say so at import."""
    if not cls.TYPE or not cls.NAME:
        raise TypeError(f"{cls.__name__} must set TYPE and NAME")
    if not dataclasses.is_dataclass(cls.CONFIG_TYPE):
        raise TypeError(f"{cls.__name__}.CONFIG_TYPE must be a dataclass")
    fields = {f.name for f in dataclasses.fields(cls.CONFIG_TYPE) if f.init}
    if fields != set(cls.CONFIG.fields):
        raise TypeError(f"{cls.__name__}: CONFIG keys {sorted(cls.CONFIG.fields)} "
                        f"differ from {cls.CONFIG_TYPE.__name__} fields {sorted(fields)}")


def register(side: str) -> Callable[[P], P]:
    """Class decorator: ``@register("server")`` files the class under its TYPE and NAME."""

    def deco(cls: P) -> P:
        _check_declaration(cls)
        _REGISTRY.setdefault((side, cls.TYPE), {})[cls.NAME] = cls
        return cls

    return deco


def unregister(side: str, ptype: str, name: str) -> None:
    """Forget a plugin (tests that register a throwaway one)."""
    by_name = _REGISTRY.get((side, ptype), {})
    by_name.pop(name, None)
    if not by_name:
        _REGISTRY.pop((side, ptype), None)


def known_types(side: str) -> list[str]:
    return sorted(t for (s, t) in _REGISTRY if s == side)


def known_names(side: str, ptype: str) -> list[str]:
    return sorted(_REGISTRY.get((side, ptype), {}))


def lookup(side: str, ptype: str, name: str) -> type[Plugin]:
    """Return the plugin class or raise PluginConfigError naming the known ones."""
    by_name = _REGISTRY.get((side, ptype))
    if by_name is None:
        raise PluginConfigError(
            f'unknown plugin type "{ptype}"; known types: {", ".join(known_types(side))}'
        )
    cls = by_name.get(name)
    if cls is None:
        raise PluginConfigError(
            f'unknown {ptype} plugin "{name}"; known {ptype} plugins: {", ".join(sorted(by_name))}'
        )
    return cls
