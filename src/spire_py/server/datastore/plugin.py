"""The "sql" DataStore plugin: checks plugin_data and opens an SQLDataStore.

    DataStore "sql" {
        plugin_data {
            database_type = "sqlite3"
            connection_string = "./.data/datastore.sqlite3"
        }
    }
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any, ClassVar, Optional

from spire_py.common.plugin import (
    BOOL, EXACT_INT, EXACT_STR, Ctx, Field, KeyPath, Kind, Plugin, PluginConfigError, PluginContext, Schema, register,
)

from .dialects import DATABASE_TYPES, DriverMissingError, TLSFiles
from .errors import DataStoreError
from .store import SQLDataStore

_DURATION_PART = re.compile(r"(\d+(?:\.\d*)?|\.\d+)(ns|us|µs|ms|s|m|h)")
_UNIT_SECONDS = {"ns": 1e-9, "us": 1e-6, "µs": 1e-6, "ms": 1e-3, "s": 1.0, "m": 60.0, "h": 3600.0}


def parse_duration(value: Any, key: str) -> float:
    """Seconds from a Go duration ("1h30m", "90s") or a number of seconds."""
    if isinstance(value, bool):
        raise PluginConfigError(f"{key} must be a duration like \"30s\"", key)
    if isinstance(value, (int, float)):
        if value < 0:
            raise PluginConfigError(f"{key} must not be negative", key)
        return float(value)
    if not isinstance(value, str) or not value:
        raise PluginConfigError(f"{key} must be a duration like \"30s\"", key)
    pos, total = 0, 0.0
    for m in _DURATION_PART.finditer(value):
        if m.start() != pos:
            break
        total += float(m.group(1)) * _UNIT_SECONDS[m.group(2)]
        pos = m.end()
    if pos != len(value):
        if value == "0":
            return 0.0
        raise PluginConfigError(f'{key}: invalid duration "{value}"', key)
    return total


class _SecondsOrDuration(Kind):
    """conn_max_lifetime: a Go duration or, as before, a number of seconds."""

    name = "duration"

    def convert(self, ctx: Ctx, path: KeyPath, value: Any) -> Any:
        key = str(path[-1])
        try:
            return parse_duration(value, key)
        except PluginConfigError as exc:
            raise ctx.error(path, str(exc)) from None


@dataclass
class SQLConfig:
    database_type: str
    connection_string: str
    ro_connection_string: str
    max_open_conns: Optional[int]
    max_idle_conns: Optional[int]
    conn_max_lifetime: Optional[float]
    disable_migration: bool
    log_sql: bool
    client_cert_path: str
    client_key_path: str
    root_ca_path: str


_TLS_KEYS = ("client_cert_path", "client_key_path", "root_ca_path")


@register("server")
class SQLDataStorePlugin(Plugin):
    TYPE: ClassVar[str] = "DataStore"
    NAME: ClassVar[str] = "sql"
    CONFIG = Schema([
        Field("database_type", EXACT_STR),
        Field("connection_string", EXACT_STR),
        Field("ro_connection_string", EXACT_STR),
        Field("max_open_conns", EXACT_INT, default=None),
        Field("max_idle_conns", EXACT_INT, default=None),
        Field("conn_max_lifetime", _SecondsOrDuration(), default=None),
        Field("disable_migration", BOOL, default=False),
        Field("log_sql", BOOL, default=False),
        *(Field(key, EXACT_STR) for key in _TLS_KEYS),
    ])
    CONFIG_TYPE = SQLConfig

    @classmethod
    def validate(cls, config: SQLConfig, ctx: PluginContext) -> None:
        """Checks plugin_data without opening (or creating) the database."""
        if not config.database_type:
            raise PluginConfigError("database_type must be set", "database_type")
        if config.database_type not in DATABASE_TYPES:
            raise PluginConfigError(
                f'unsupported database_type "{config.database_type}"; use one of {", ".join(DATABASE_TYPES)}',
                "database_type",
            )
        if not config.connection_string:
            raise PluginConfigError("connection_string must be set", "connection_string")
        for key in ("max_open_conns", "max_idle_conns"):
            value = getattr(config, key)
            if value is not None and value < 0:
                raise PluginConfigError(f"{key} must be a non-negative integer", key)
        tls = _tls(config)
        if tls.any() and config.database_type != "mysql":
            key = next(k for k in _TLS_KEYS if getattr(config, k))
            raise PluginConfigError(f"{key} is only supported for database_type mysql", key)
        if bool(tls.client_cert_path) != bool(tls.client_key_path):
            key = "client_key_path" if tls.client_cert_path else "client_cert_path"
            raise PluginConfigError("client_cert_path and client_key_path must be set together", key)

    @classmethod
    def from_config(cls, config: SQLConfig, ctx: PluginContext) -> SQLDataStore:  # type: ignore[override]
        """Return the open store itself: the DataStore is a synchronous object the
        server drives from its thread pool, closed with ``close()``."""
        try:
            return SQLDataStore(
                config.database_type, config.connection_string,
                max_open_conns=config.max_open_conns,
                max_idle_conns=config.max_idle_conns,
                conn_max_lifetime=config.conn_max_lifetime,
                ro_connection_string=config.ro_connection_string or None,
                disable_migration=config.disable_migration,
                log_sql=config.log_sql,
                tls=_tls(config),
            )
        except DriverMissingError as exc:
            raise PluginConfigError(f"datastore: {exc}", "database_type") from exc
        except DataStoreError as exc:
            raise PluginConfigError(f"datastore: {exc}", "connection_string") from exc


def _tls(config: SQLConfig) -> TLSFiles:
    return TLSFiles(client_cert_path=config.client_cert_path, client_key_path=config.client_key_path,
                    root_ca_path=config.root_ca_path)
