"""Settings spire_py accepts, as SPIRE documents them, but does not act on yet.

A file written for SPIRE must load here, so these keys are parsed and checked like
any other. Set to anything but their default, each earns one warning from
``validate`` and ``run``, so nobody believes that, say, profiling is on.
tests/unit/common/config/test_unacted.py holds this list to the code: a key leaves it
when something reads it, and a key nothing reads must be on it.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Mapping

from .schema import Ctx, Values

MESSAGE = "not acted on by spire_py yet: the setting is accepted but has no effect"


@dataclass(frozen=True)
class Unacted:
    """``key``: dotted path in the file ("server.profiling_enabled", or a whole section
    such as "telemetry"); ``attr``: the ServerConfig/AgentConfig attribute that carries
    it; ``default``: SPIRE's default, which changes nothing (None: any value does)."""

    key: str
    attr: str
    default: Any = None


def _same(side: str, *items: tuple[str, Any]) -> tuple[Unacted, ...]:
    """Entries whose attribute is the key's last part."""
    return tuple(Unacted(f"{side}.{key}", key.rsplit(".", 1)[-1], default) for key, default in items)


_PROFILING: tuple[tuple[str, Any], ...] = (("profiling_enabled", False), ("profiling_port", 0), ("profiling_freq", 0), ("profiling_names", []))

SERVER: tuple[Unacted, ...] = (
    *_same(
        "server",
        ("max_attested_node_info_staleness", 0),
        *_PROFILING,
        ("experimental.cache_reload_interval", 5),
        ("experimental.full_cache_reload_interval", 24 * 3600),
        ("experimental.events_based_cache", False),
        ("experimental.event_timeout", 15 * 60),
        ("experimental.wit_key_type", None),
        ("experimental.wit_issuer", ""),
    ),
    # ACME certificates for the bundle endpoint are not built; run refuses them (server/federation/endpoint.py)
    Unacted("server.federation.bundle_endpoint.acme", "acme"),
    # the deprecated spelling of event_timeout
    Unacted("server.experimental.sql_transaction_timeout", "event_timeout"),
)

AGENT: tuple[Unacted, ...] = (
    *_same(
        "agent",
        *_PROFILING,
        ("experimental.broker", None),
    ),
)

UNACTED: dict[str, tuple[Unacted, ...]] = {"server": SERVER, "agent": AGENT}

_UNSET = object()


def _value(sections: Mapping[str, Any], parts: list[str]) -> Any:
    """The parsed value at ``parts``, or _UNSET when the file (or a flag) did not set it."""
    value: Any = sections.get(parts[0], _UNSET)
    for part in parts[1:]:
        if not isinstance(value, Values) or part not in value.present:
            return _UNSET
        value = value[part]
    if isinstance(value, Values) and not value.present:
        return _UNSET  # an empty block sets nothing
    return value


def warn_unacted(ctx: Ctx, side: str, sections: Mapping[str, Any]) -> None:
    """One warning per listed key set to something other than its default, in file order.
    ``sections`` are the parsed top-level sections ("server", "telemetry", ...)."""
    found = []
    for item in UNACTED[side]:
        value = _value(sections, item.key.split("."))
        if value is not _UNSET and value != item.default:
            found.append(item.key.split("."))
    for path in sorted(found, key=lambda p: ctx.line(p) or 0):
        ctx.warn(path, MESSAGE)
