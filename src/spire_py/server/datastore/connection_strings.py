"""SPIRE's PostgreSQL and MySQL connection strings, turned into driver arguments.

SPIRE hands these strings to Go drivers (lib/pq, go-sql-driver/mysql); we hand
them to psycopg 3 and PyMySQL, keeping the Go drivers' meaning where the two
differ:
- postgres: libpq ``key=value`` pairs or a ``postgres://`` URL (libpq parses
  both). lib/pq's defaults apply when a key is absent: ``host=localhost`` (libpq
  would pick a Unix socket) and ``sslmode=require`` (libpq: prefer).
- mysql: a Go MySQL DSN ``user:pass@tcp(host:3306)/db?parseTime=true``. Go-only
  options (``parseTime``, ``loc``...) have no PyMySQL meaning and are dropped;
  ``timeout``/``readTimeout``/``writeTimeout``, ``tls`` and ``charset`` are mapped.
"""

from __future__ import annotations

import os
import re
from dataclasses import dataclass
from typing import Any
from urllib.parse import parse_qsl, unquote

from sqlalchemy.engine import URL

from .errors import InvalidArgumentError

_URL_SCHEME_RE = re.compile(r"^[A-Za-z][A-Za-z0-9+.-]*://")
_PG_SCHEMES = ("postgres://", "postgresql://")
# lib/pq options libpq does not know (it would refuse the whole string).
_LIBPQ_UNKNOWN = ("binary_parameters", "disable_prepared_binary_result", "krbspn")


class DriverMissingError(InvalidArgumentError):
    """The Python driver for the configured database type is not installed."""


@dataclass
class TLSFiles:
    """Client TLS for MySQL (SPIRE's client_cert_path/client_key_path/root_ca_path)."""

    client_cert_path: str = ""
    client_key_path: str = ""
    root_ca_path: str = ""

    def any(self) -> bool:
        return bool(self.client_cert_path or self.client_key_path or self.root_ca_path)


def _redact_conninfo(conn: str) -> str:
    conn = re.sub(r"(password\s*=\s*)('(?:[^'\\]|\\.)*'|\S+)", r"\1****", conn)
    return re.sub(r"(://[^:/@]*):[^@/]*@", r"\1:****@", conn)


def postgres_connect_args(conn: str) -> dict[str, Any]:
    """Keyword arguments for ``psycopg.connect`` from a SPIRE postgres connection string."""
    if _URL_SCHEME_RE.match(conn) and not conn.startswith(_PG_SCHEMES):
        raise InvalidArgumentError(
            f'postgres connection string: unsupported scheme in "{_redact_conninfo(conn)}"'
        )
    try:
        import psycopg
        from psycopg.conninfo import conninfo_to_dict
    except ModuleNotFoundError as exc:
        raise DriverMissingError(f'database_type "postgres" needs the psycopg package: {exc}') from exc
    for key in _LIBPQ_UNKNOWN:
        conn = re.sub(rf"(?:(?<=\s)|^){key}\s*=\s*('(?:[^'\\]|\\.)*'|\S+)", "", conn)
        conn = re.sub(rf"(?<=[?&]){key}=[^&]*&?", "", conn)
    try:
        params: dict[str, Any] = conninfo_to_dict(conn)
    except psycopg.Error as exc:
        raise InvalidArgumentError(
            f'postgres connection string "{_redact_conninfo(conn)}": {str(exc).strip()}'
        ) from None
    if "host" not in params and "hostaddr" not in params and not os.environ.get("PGHOST"):
        params["host"] = "localhost"
    if "sslmode" not in params and not os.environ.get("PGSSLMODE"):
        params["sslmode"] = "require"
    return params


# [user[:password]@][net[(addr)]]/dbname[?param=value&...]; the password may hold '@'.
_GO_DSN_RE = re.compile(
    r"^(?:(?P<user>[^:@]*)(?::(?P<password>.*))?@)?"
    r"(?:(?P<net>[a-z0-9]+)(?:\((?P<addr>[^)]*)\))?)?"
    r"/(?P<db>[^?]*)(?:\?(?P<query>.*))?$"
)
_GO_DURATION_RE = re.compile(r"^(\d+(?:\.\d*)?)(ms|s|m|h)$")


def _go_seconds(value: str, key: str) -> int:
    m = _GO_DURATION_RE.match(value)
    if not m:
        raise InvalidArgumentError(f'mysql connection string: {key} must be a duration like "5s", got "{value}"')
    seconds = float(m.group(1)) * {"ms": 0.001, "s": 1, "m": 60, "h": 3600}[m.group(2)]
    return max(1, round(seconds))


def redact_dsn(conn: str) -> str:
    return re.sub(r"^([^:@]*):.*@", r"\1:****@", conn)


def mysql_engine_args(conn: str, tls: TLSFiles | None = None) -> tuple[URL, dict[str, Any]]:
    """(url, connect_args) for PyMySQL from a Go MySQL DSN (what SPIRE takes)."""
    m = _GO_DSN_RE.match(conn)
    if not m:
        raise InvalidArgumentError(
            f'mysql connection string "{redact_dsn(conn)}": expected '
            "user:password@tcp(host:port)/dbname?params"
        )
    net = m.group("net") or "tcp"
    addr = m.group("addr") or ""
    query: dict[str, str] = {"charset": "utf8mb4"}
    connect_args: dict[str, Any] = {}
    host: str | None = None
    port: int | None = None
    if net == "unix":
        query["unix_socket"] = addr or "/tmp/mysql.sock"
    elif net in ("tcp", "tcp6"):
        addr = addr or "127.0.0.1:3306"
        if addr.startswith("["):  # [ipv6]:port
            h, _, p = addr[1:].partition("]")
            host, port_s = h, p.lstrip(":")
        else:
            host, _, port_s = addr.rpartition(":") if ":" in addr else (addr, "", "")
        try:
            port = int(port_s) if port_s else 3306
        except ValueError:
            raise InvalidArgumentError(f'mysql connection string: bad port "{port_s}"') from None
    else:
        raise InvalidArgumentError(f'mysql connection string: unsupported network "{net}"')
    tls_mode = ""
    for k, v in parse_qsl(m.group("query") or "", keep_blank_values=True):
        if k == "charset":
            query["charset"] = v.split(",")[0]
        elif k == "timeout":
            connect_args["connect_timeout"] = _go_seconds(v, k)
        elif k == "readTimeout":
            connect_args["read_timeout"] = _go_seconds(v, k)
        elif k == "writeTimeout":
            connect_args["write_timeout"] = _go_seconds(v, k)
        elif k == "tls":
            tls_mode = v
    ssl_opts: dict[str, Any] = {}
    if tls_mode == "true":
        ssl_opts["verify_mode"] = True
    elif tls_mode in ("skip-verify", "preferred"):
        ssl_opts["verify_mode"] = False
    elif tls_mode not in ("", "false"):
        raise InvalidArgumentError(
            f'mysql connection string: tls "{tls_mode}" is not supported; use true, skip-verify, '
            "preferred or false (and root_ca_path / client_cert_path for custom certificates)"
        )
    if tls is not None and tls.any():
        if tls.root_ca_path:
            ssl_opts["ca"] = tls.root_ca_path
        if tls.client_cert_path:
            ssl_opts["cert"] = tls.client_cert_path
        if tls.client_key_path:
            ssl_opts["key"] = tls.client_key_path
    if ssl_opts:
        connect_args["ssl"] = ssl_opts
    url = URL.create(
        "mysql+pymysql",
        username=unquote(m.group("user")) if m.group("user") else None,
        password=m.group("password") if m.group("password") is not None else None,
        host=host,
        port=port,
        database=m.group("db") or None,
        query=query,
    )
    return url, connect_args
