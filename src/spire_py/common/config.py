"""Loading SPIRE config files (HCL or JSON) into checked values, with errors naming file, line and key.

This module is the public face; the pieces live in ``config_source`` (reading,
env expansion, key lines), ``config_schema`` (typed fields), ``config_plugins``
(the plugins section), ``config_sections`` (health_checks, telemetry, logging)
and ``config_federation``. ``server.config`` and ``agent.config`` build on them.
"""

from __future__ import annotations

import os
from typing import Any, Mapping, Optional

from .config_plugins import AGENT_PLUGIN_RULES, SERVER_PLUGIN_RULES, PluginRule, PluginSpec, parse_plugins
from .config_schema import (
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
from .config_sections import HealthChecksConfig, PrometheusConfig, PrometheusTLSConfig, SinkConfig, TelemetryConfig
from .config_source import ConfigError, SourceInfo, expand_env, line_of, lines_of, load_file, parse_text
from .plugin import PluginConfigError

__all__ = [
    "AGENT_PLUGIN_RULES", "BOOL", "DURATION", "INT", "MISSING", "RAW", "SERVER_PLUGIN_RULES", "STR", "STR_LIST",
    "Block", "BlockList", "ConfigError", "Ctx", "Field", "HealthChecksConfig", "Kind", "LabeledBlocks",
    "PluginRule", "PluginSpec", "PrometheusConfig", "PrometheusTLSConfig", "Schema", "SinkConfig", "SourceInfo",
    "TelemetryConfig", "Values", "absolute", "apply_overrides", "block_list", "check_top_level", "expand_env",
    "line_of", "lines_of", "load_file", "merge_blocks", "parse_plugin_data", "parse_plugins", "parse_text",
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


def parse_plugin_data(schema: Schema, data: Optional[Mapping[str, Any]]) -> Values:
    """For plugins: check ``plugin_data`` against a schema with the same typing rules as
    the rest of the file. A mistake raises PluginConfigError whose ``key`` is relative to
    plugin_data ("keys_path", "clusters.prod.allow_list"), which the host locates."""
    try:
        return schema.parse(Ctx(), [], dict(data or {}))
    except ConfigError as exc:
        raise PluginConfigError(exc.message, exc.key or None) from None
