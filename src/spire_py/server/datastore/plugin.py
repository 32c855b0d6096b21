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
from typing import Any, ClassVar

from spire_py.common.plugin import Plugin, PluginConfigError, PluginContext, register

from .dialects import DATABASE_TYPES, DriverMissingError, TLSFiles
from .errors import DataStoreError
from .store import SQLDataStore

KNOWN_KEYS = (
    "database_type",
    "connection_string",
    "ro_connection_string",
    "max_open_conns",
    "max_idle_conns",
    "conn_max_lifetime",
    "disable_migration",
    "log_sql",
    "client_cert_path",
    "client_key_path",
    "root_ca_path",
)

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


def _int(data: dict[str, Any], key: str) -> int | None:
    v = data.get(key)
    if v is None:
        return None
    if isinstance(v, bool) or not isinstance(v, int) or v < 0:
        raise PluginConfigError(f"{key} must be a non-negative integer", key)
    return v


def _bool(data: dict[str, Any], key: str) -> bool:
    v = data.get(key, False)
    if not isinstance(v, bool):
        raise PluginConfigError(f"{key} must be true or false", key)
    return v


def _str(data: dict[str, Any], key: str) -> str:
    v = data.get(key, "")
    if not isinstance(v, str):
        raise PluginConfigError(f"{key} must be a string", key)
    return v


@register("server")
class SQLDataStorePlugin(Plugin):
    TYPE: ClassVar[str] = "DataStore"
    NAME: ClassVar[str] = "sql"

    @classmethod
    def check_config(cls, data: dict[str, Any], ctx: PluginContext) -> None:
        """Validate plugin_data without opening (or creating) the database."""
        cls._options(data)

    @classmethod
    def configure(cls, data: dict[str, Any], ctx: PluginContext) -> SQLDataStore:  # type: ignore[override]
        """Return the open store itself: the DataStore is a synchronous object the
        server drives from its thread pool, closed with ``close()``."""
        database_type, connection_string, options = cls._options(data)
        try:
            return SQLDataStore(database_type, connection_string, **options)
        except DriverMissingError as exc:
            raise PluginConfigError(f"datastore: {exc}", "database_type") from exc
        except DataStoreError as exc:
            raise PluginConfigError(f"datastore: {exc}", "connection_string") from exc

    @classmethod
    def _options(cls, data: dict[str, Any]) -> tuple[str, str, dict[str, Any]]:
        unknown = sorted(k for k in data if k not in KNOWN_KEYS)
        if unknown:
            raise PluginConfigError(
                f'unknown configuration key "{unknown[0]}"; known keys: {", ".join(KNOWN_KEYS)}',
                unknown[0],
            )
        database_type = _str(data, "database_type")
        if not database_type:
            raise PluginConfigError("database_type must be set", "database_type")
        if database_type not in DATABASE_TYPES:
            raise PluginConfigError(
                f'unsupported database_type "{database_type}"; use one of {", ".join(DATABASE_TYPES)}',
                "database_type",
            )
        connection_string = _str(data, "connection_string")
        if not connection_string:
            raise PluginConfigError("connection_string must be set", "connection_string")
        lifetime = data.get("conn_max_lifetime")
        tls = TLSFiles(
            client_cert_path=_str(data, "client_cert_path"),
            client_key_path=_str(data, "client_key_path"),
            root_ca_path=_str(data, "root_ca_path"),
        )
        if tls.any() and database_type != "mysql":
            key = next(k for k in ("client_cert_path", "client_key_path", "root_ca_path") if data.get(k))
            raise PluginConfigError(f"{key} is only supported for database_type mysql", key)
        if bool(tls.client_cert_path) != bool(tls.client_key_path):
            key = "client_key_path" if tls.client_cert_path else "client_cert_path"
            raise PluginConfigError("client_cert_path and client_key_path must be set together", key)
        return database_type, connection_string, dict(
            max_open_conns=_int(data, "max_open_conns"),
            max_idle_conns=_int(data, "max_idle_conns"),
            conn_max_lifetime=parse_duration(lifetime, "conn_max_lifetime") if lifetime is not None else None,
            ro_connection_string=_str(data, "ro_connection_string") or None,
            disable_migration=_bool(data, "disable_migration"),
            log_sql=_bool(data, "log_sql"),
            tls=tls,
        )
