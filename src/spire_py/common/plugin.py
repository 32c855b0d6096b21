"""Built-in plugin registry: plugins are found by (type, name), as in SPIRE's catalog.

A plugin class declares ``TYPE`` and ``NAME`` and a ``configure`` classmethod that
checks its ``plugin_data`` and returns a ready instance. A bad key or value raises
:class:`PluginConfigError` naming the key; the config loader adds file and line.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Callable, ClassVar, TypeVar


class PluginConfigError(ValueError):
    """A plugin's configuration is invalid; ``key`` names the offending key when known."""

    def __init__(self, message: str, key: str | None = None) -> None:
        super().__init__(message)
        self.key = key


@dataclass
class PluginContext:
    """What a plugin may need from its host at configure time."""

    trust_domain: str
    data_dir: str = ""
    side: str = "server"  # "server" or "agent"
    extra: dict[str, Any] = field(default_factory=dict)


class Plugin:
    TYPE: ClassVar[str] = ""
    NAME: ClassVar[str] = ""

    @classmethod
    def configure(cls, data: dict[str, Any], ctx: PluginContext) -> "Plugin":
        if data:
            unknown = sorted(data)
            raise PluginConfigError(f'unknown configuration key "{unknown[0]}"', unknown[0])
        return cls()

    @classmethod
    def check_config(cls, data: dict[str, Any], ctx: PluginContext) -> None:
        """Validate ``data`` without side effects (``validate``); plugins that touch
        disk or network on configure override this."""
        cls.configure(data, ctx)

    async def close(self) -> None:
        """Release resources; default: nothing to release."""


# (side, type) -> name -> class
_REGISTRY: dict[tuple[str, str], dict[str, type[Plugin]]] = {}

P = TypeVar("P", bound=type[Plugin])


def register(side: str) -> Callable[[P], P]:
    """Class decorator: ``@register("server")`` files the class under its TYPE and NAME."""

    def deco(cls: P) -> P:
        if not cls.TYPE or not cls.NAME:
            raise TypeError(f"{cls.__name__} must set TYPE and NAME")
        _REGISTRY.setdefault((side, cls.TYPE), {})[cls.NAME] = cls
        return cls

    return deco


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
