"""The daemons' configuration at start-up, shared by spire-server and spire-agent: loading
``-config`` with SPIRE's flag overrides, logging set up from it, the ``validate`` command body,
and plugin configuration with located errors."""

from __future__ import annotations

import sys
from typing import Callable, Iterable, Literal, Optional, Protocol, TypeVar, overload

from . import log
from .cli import CommandError, Context
from .config import ConfigError, PluginSpec, SourceInfo, line_of
from .plugin import Plugin, PluginConfigError, PluginContext, lookup


class DaemonConfig(Protocol):
    """What this module reads of ``ServerConfig`` and ``AgentConfig``."""

    log_level: str
    log_format: str
    log_file: str
    log_source_location: bool
    warnings: list[str]
    plugins: list[PluginSpec]
    path: Optional[str]
    source: Optional[SourceInfo]


C = TypeVar("C", bound=DaemonConfig)


def load_config(ctx: Context, loader: Callable[..., C], override_flags: Iterable[str]) -> C:
    """Load ``-config`` with ``-expandEnv`` and the overrides the user set; one-line errors."""
    overrides = {k: ctx.flags[k] for k in override_flags if k in ctx.set_flags}
    if "serverPort" in overrides:
        try:
            overrides["serverPort"] = int(overrides["serverPort"])
        except ValueError:
            raise CommandError(f'invalid value "{overrides["serverPort"]}" for flag -serverPort') from None
    try:
        return loader(ctx.flags["config"], expand_env=ctx.flags["expandEnv"], overrides=overrides)
    except ConfigError as exc:
        raise CommandError(str(exc)) from None
    except OSError as exc:
        raise CommandError(f"could not read config file: {exc}") from None


def start_logging(cfg: DaemonConfig) -> None:
    log.setup(cfg.log_level, cfg.log_format, cfg.log_file or None, source_location=cfg.log_source_location)
    for warning in cfg.warnings:
        log.get("config").warning(warning)


def print_warnings(cfg: DaemonConfig) -> None:
    """For validate, which sets up no logging: the same warnings run would log, on stderr."""
    for warning in cfg.warnings:
        print(f"Warning: {warning}", file=sys.stderr)


class PluginConfigErrors(ConfigError):
    """Every plugin configuration error ``validate`` found, in file order (SPIRE's catalog notes
    each plugin's errors and carries on with the next)."""

    def __init__(self, errors: list[ConfigError]) -> None:
        super().__init__("; ".join(str(e) for e in errors))
        self.errors = errors

    def __str__(self) -> str:
        return "; ".join(str(e) for e in self.errors)


def check_plugins(side: str, specs: Iterable[PluginSpec], ctx: PluginContext, config: Optional[DaemonConfig]) -> None:
    """Check every plugin (``validate``); all their errors together as PluginConfigErrors."""
    errors: list[ConfigError] = []
    for spec in specs:
        try:
            configure_plugin(side, spec, ctx, config, check_only=True)
        except ConfigError as exc:
            errors.append(exc)
    if len(errors) == 1:
        raise errors[0]
    if errors:
        raise PluginConfigErrors(errors)


def validate_config(side: str, load: Callable[[], C], check_plugins: Callable[[C], None]) -> int:
    """``spire-<side> validate``: the file, its warnings and every plugin's configuration,
    checked without starting anything; one line per error found."""
    try:
        cfg = load()
        print_warnings(cfg)
        check_plugins(cfg)
    except PluginConfigErrors as exc:
        for err in exc.errors:
            print(f"SPIRE {side} configuration file is invalid: {err}", file=sys.stderr)
        return 1
    except (CommandError, ConfigError) as exc:
        print(f"SPIRE {side} configuration file is invalid: {exc}", file=sys.stderr)
        return 1
    print(f"SPIRE {side} configuration file is valid.")
    return 0


@overload
def configure_plugin(side: str, spec: PluginSpec, ctx: PluginContext, config: Optional[DaemonConfig],
                     check_only: Literal[False] = False) -> Plugin: ...
@overload
def configure_plugin(side: str, spec: PluginSpec, ctx: PluginContext, config: Optional[DaemonConfig],
                     check_only: Literal[True]) -> None: ...
def configure_plugin(side: str, spec: PluginSpec, ctx: PluginContext, config: Optional[DaemonConfig],
                     check_only: bool = False) -> Optional[Plugin]:
    """Look up and configure (or only check) one plugin; errors name file, line and key."""
    if spec.data_error is not None:
        raise spec.data_error
    try:
        cls = lookup(side, spec.type, spec.name)
        if check_only:
            cls.check_config(dict(spec.data or {}), ctx)
            return None
        return cls.configure(dict(spec.data or {}), ctx)
    except PluginConfigError as exc:
        key = f"plugins.{spec.type}.{spec.name}" + (f".plugin_data.{exc.key}" if exc.key else "")
        source = getattr(config, "source", None)
        line = line_of(source, key) if source else None
        raise ConfigError(str(exc), path=getattr(config, "path", None), line=line or spec.line, key=key) from None
