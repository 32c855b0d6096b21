"""The ``plugins { ... }`` section: every SPIRE spelling of it, reduced to PluginSpecs.

Accepted forms (all seen in the wild):

    plugins { DataStore "sql" { plugin_data { ... } } }          # HCL, labels
    plugins { NodeAttestor { join_token { plugin_data {} } } }   # HCL, nested blocks
    plugins { NodeAttestor "k8s_psat" plugin_data { ... } }      # HCL, three labels
    {"plugins": {"DataStore": [{"sql": {"plugin_data": {...}}}]}}  # JSON, list
    {"plugins": {"DataStore": {"sql": {"plugin_data": {...}}}}}    # JSON, object

Only built-in plugins exist, so ``plugin_cmd`` is refused. Each plugin checks its
own ``plugin_data`` later; here it is only required to be a block.
"""

from __future__ import annotations

import copy
import os
from dataclasses import dataclass, field
from typing import Any, Optional

from .schema import BOOL, RAW, STR, STR_LIST, Ctx, Field, Schema, block_list, describe, merge_blocks
from .source import ConfigError, known_list, lines_of, parse_text, read_bounded


@dataclass
class PluginSpec:
    """One enabled plugin as configured: ``data`` is its plugin_data, ``line`` its block's line."""

    type: str
    name: str
    data: dict[str, Any] = field(default_factory=dict)
    line: Optional[int] = None
    checksum: str = ""
    data_file: Optional[str] = None  # set when data came from plugin_data_file
    # An unreadable plugin_data_file: reported when the plugin is checked or configured, so
    # validate names it next to the other plugins' errors (as SPIRE's catalog notes).
    data_error: Optional[ConfigError] = None

    @property
    def key(self) -> str:
        """The dotted key of this plugin's block, for errors: "plugins.DataStore.sql"."""
        return f"plugins.{self.type}.{self.name}"


@dataclass(frozen=True)
class PluginRule:
    """How many plugins of a type a side accepts (``maximum`` None: any number)."""

    minimum: int = 0
    maximum: Optional[int] = None


SERVER_PLUGIN_RULES: dict[str, PluginRule] = {
    "BundlePublisher": PluginRule(),
    "CredentialComposer": PluginRule(),
    "DataStore": PluginRule(1, 1),
    "KeyManager": PluginRule(1, 1),
    "NodeAttestor": PluginRule(),
    "Notifier": PluginRule(),
    "UpstreamAuthority": PluginRule(0, 1),
}

AGENT_PLUGIN_RULES: dict[str, PluginRule] = {
    "KeyManager": PluginRule(1, 1),
    "NodeAttestor": PluginRule(1, 1),
    "SVIDStore": PluginRule(),
    "WorkloadAttestor": PluginRule(1, None),
}

_PLUGIN_BLOCK = Schema(
    [
        Field("plugin_cmd", STR, default=""),
        Field("plugin_args", STR_LIST),
        Field("plugin_checksum", STR, default=""),
        Field("plugin_data", RAW, default=None),
        Field("plugin_data_file", STR),
        Field("enabled", BOOL, default=True),
    ]
)


def _declared(ctx: Ctx, raw: Any) -> list[tuple[str, str, Any]]:
    """(type, name, body) for every declaration, before any checking of bodies."""
    out: list[tuple[str, str, Any]] = []
    for section in block_list(ctx, ["plugins"], raw):
        for ptype, by_name in section.items():
            for entry in block_list(ctx, ["plugins", ptype], by_name):
                for name, body in entry.items():
                    out.append((ptype, name, body))
    return out


def _plugin_data(ctx: Ctx, path: list[Any], value: Any) -> dict[str, Any]:
    if value is None or value == "" or value == []:
        return {}
    if isinstance(value, dict) or (isinstance(value, list) and all(isinstance(v, dict) for v in value)):
        return merge_blocks(ctx, path, value)
    raise ctx.error(path, f"expected a block plugin_data {{ ... }}, got {describe(value)}")


class DataFileUnreadable(ConfigError):
    """plugin_data_file could not be read: deferred to the plugin's check (PluginSpec.data_error)."""


def _load_data_file(ctx: Ctx, path: list[Any], file_path: str) -> dict[str, Any]:
    try:
        text = read_bounded(file_path).decode("utf-8")
    except OSError as exc:
        why = exc.strerror or str(exc)
        # Go's os error: "open <path>: no such file or directory".
        err = ctx.error(path, f"failed to read plugin configuration: open {file_path}: {why[:1].lower() + why[1:]}")
        raise DataFileUnreadable(err.message, path=err.path, line=err.line, key=err.key) from None
    except UnicodeDecodeError:
        raise ctx.error(path, f'plugin_data_file "{file_path}" is not valid UTF-8') from None
    if not text.strip():
        return {}
    try:
        data, _ = parse_text(text, file_path)
    except ConfigError as exc:
        raise ctx.error(path, f"in plugin_data_file: {exc}") from None
    return data


def parse_plugins(ctx: Ctx, raw: Any, rules: dict[str, PluginRule]) -> list[PluginSpec]:
    """Enabled plugins in file order, with counts per type checked against ``rules``."""
    if raw is None:
        raise ctx.error(["plugins"], "plugins section must be configured")
    declared = _declared(ctx, raw)

    seen: dict[tuple[str, str], int] = {}
    specs: list[tuple[int, int, PluginSpec]] = []
    for order, (ptype, name, body) in enumerate(declared):
        path: list[Any] = ["plugins", ptype, name]
        if ptype not in rules:
            raise ctx.error(["plugins", ptype], f'unknown plugin type "{ptype}"; known types: {known_list(rules)}')
        occurrence = seen.get((ptype, name), 0)
        seen[(ptype, name)] = occurrence + 1
        # pyhcl silently merges a plugin declared in two plugins blocks; SPIRE refuses it.
        if occurrence or ctx.occurrences(path) > 1:
            lines = lines_of(ctx.source, path)
            line = lines[1] if len(lines) > 1 else ctx.line(path)
            raise ConfigError(f'plugin "{ptype}"/"{name}" declared more than once', path=ctx.path, line=line,
                              key=".".join(path))
        try:
            values = _PLUGIN_BLOCK.parse(ctx, path, merge_blocks(ctx, path, body))
        except ConfigError as exc:
            if exc.message.startswith("unknown key"):
                exc.message += "; plugin settings go inside plugin_data { ... }"
            raise
        if values["plugin_cmd"]:
            raise ctx.error(path + ["plugin_cmd"], "external plugins are not supported; only built-in plugins can be used")
        data = _plugin_data(ctx, path + ["plugin_data"], values["plugin_data"])
        data_file = values["plugin_data_file"]
        data_error: Optional[ConfigError] = None
        if data_file is not None:
            if "plugin_data" in values.present:
                raise ctx.error(path + ["plugin_data_file"], "only one of [plugin_data, plugin_data_file] can be used")
            try:
                data = _load_data_file(ctx, path + ["plugin_data_file"], data_file)
            except DataFileUnreadable as exc:
                data_error = exc
            data_file = os.path.abspath(data_file)
        if not values["enabled"]:
            continue
        line = ctx.line(path)
        specs.append((line or 0, order, PluginSpec(ptype, name, copy.deepcopy(data), line, values["plugin_checksum"],
                                                   data_file, data_error)))

    specs.sort(key=lambda t: (t[0], t[1]))
    result = [s for _, _, s in specs]
    _check_counts(ctx, result, rules)
    return result


def _check_counts(ctx: Ctx, specs: list[PluginSpec], rules: dict[str, PluginRule]) -> None:
    """SPIRE's catalog constraints, in its words: 'plugin type "X" constraint not satisfied: ...'."""
    for ptype, rule in rules.items():
        of_type = [s for s in specs if s.type == ptype]
        names = ", ".join(f'"{s.name}"' for s in of_type)
        prefix = f'plugin type "{ptype}" constraint not satisfied: '
        if rule.maximum is not None and len(of_type) > rule.maximum:
            extra = of_type[rule.maximum]
            what = "exactly" if rule.minimum == rule.maximum else "at most"
            raise ConfigError(
                f"{prefix}expected {what} {rule.maximum} but got {len(of_type)} ({names})",
                path=ctx.path, line=extra.line, key=f"plugins.{ptype}",
            )
        if len(of_type) < rule.minimum:
            what = "exactly" if rule.minimum == rule.maximum else "at least"
            raise ctx.error(["plugins", ptype], f"{prefix}expected {what} {rule.minimum} but got 0")
