"""Loading SPIRE config files (HCL or JSON) into checked values, with errors naming file, line and key.

This package's ``__init__`` is the public face; the pieces are ``source`` (reading, env
expansion, key lines), ``schema`` (typed fields), ``plugins`` (the plugins section),
``sections`` (health_checks, telemetry), ``federation`` and ``unacted`` (keys accepted but
not acted on yet). ``server.config`` and ``agent.config`` build on them.
"""

from __future__ import annotations

import os
from typing import Any, Mapping, Optional

from .plugins import AGENT_PLUGIN_RULES, SERVER_PLUGIN_RULES, PluginRule, PluginSpec, parse_plugins
from .schema import (
    BOOL,
    DURATION,
    INT,
    MISSING,
    RAW,
    STR,
    STR_LIST,
    Block,
    BlockList,
    Ctx,
    Field,
    Kind,
    LabeledBlocks,
    Schema,
    Values,
    block_list,
    merge_blocks,
    render_key,
)
from .sections import HealthChecksConfig, PrometheusConfig, PrometheusTLSConfig, SinkConfig, TelemetryConfig
from .source import ConfigError, SourceInfo, expand_env, line_of, lines_of, load_file, parse_text

__all__ = [
    "AGENT_PLUGIN_RULES", "BOOL", "DURATION", "INT", "MISSING", "RAW", "SERVER_PLUGIN_RULES", "STR", "STR_LIST",
    "Block", "BlockList", "ConfigError", "Ctx", "Field", "HealthChecksConfig", "Kind", "LabeledBlocks",
    "PluginRule", "PluginSpec", "PrometheusConfig", "PrometheusTLSConfig", "Schema", "SinkConfig", "SourceInfo",
    "TelemetryConfig", "Values", "absolute", "apply_overrides", "block_list", "check_top_level", "expand_env",
    "line_of", "lines_of", "load_file", "merge_blocks", "parse_plugins", "parse_text",
    "render_key",
]


def check_top_level(ctx: Ctx, raw: dict[str, Any], sections: tuple[str, ...]) -> None:
    """SPIRE refuses unknown top-level sections; so do we."""
    for key in raw:
        if key not in sections:
            raise ctx.error([key], f'unknown section "{key}"; known sections: {", ".join(sorted(sections))}')


def apply_overrides(
    ctx: Ctx,
    raw: dict[str, Any],
    section: str,
    flags: Mapping[str, str],
    overrides: Optional[Mapping[str, Any]],
) -> None:
    """Write command-line flag values over ``raw[section]`` (flag name -> config key in ``flags``).

    As in SPIRE, a flag left at its zero value ("" / 0 / false) does not override the file.
    """
    if not overrides:
        return
    body = merge_blocks(ctx, [section], raw.get(section))
    for flag, value in overrides.items():
        key = flags.get(flag)
        if key is None:
            raise ConfigError(f'unknown command-line override "{flag}"; known: {", ".join(sorted(flags))}')
        if value is None or value == "" or value is False or (value == 0 and not isinstance(value, bool)):
            continue
        body[key] = value
        ctx.overrides[(section, key)] = flag
    raw[section] = body


def absolute(path: str) -> str:
    """Relative paths resolve against the working directory, as SPIRE's do."""
    return os.path.abspath(path) if path else path

