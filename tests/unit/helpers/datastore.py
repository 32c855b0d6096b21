"""Builders and scratch databases for the DataStore tests (their fixtures are in
tests/unit/server/datastore/conftest.py).

The ``store`` fixture runs each test on sqlite3; set SPIRE_PY_TEST_POSTGRES or
SPIRE_PY_TEST_MYSQL to a connection string (SPIRE syntax) of a scratch database
to run the same tests there too (scripts/databases.sh sets both). When the user
may create databases, each test run works in one of its own (spire_unit_<random>,
dropped at exit), so runs sharing a server do not disturb each other.
"""

from __future__ import annotations

import atexit
import datetime
import os
import re
import uuid

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID
from sqlalchemy import inspect, text

from spire_py.common.registration import Entry, Selector
from spire_py.server.datastore import JWTKey, SQLDataStore

TD = "spiffe://example.org"
FED = "spiffe://fed.example"
NOW = 1_700_000_000

BACKENDS = ["sqlite3"] + [
    name for name, var in (("postgres", "SPIRE_PY_TEST_POSTGRES"), ("mysql", "SPIRE_PY_TEST_MYSQL")) if os.environ.get(var)
]


_ENV = {"postgres": "SPIRE_PY_TEST_POSTGRES", "mysql": "SPIRE_PY_TEST_MYSQL"}
_RUN_DBS: dict[str, str] = {}


def _admin(kind: str, sql: str) -> None:
    conn = os.environ[_ENV[kind]]
    if kind == "postgres":
        import psycopg

        from spire_py.server.datastore.connection_strings import postgres_connect_args

        with psycopg.connect(**postgres_connect_args(conn), autocommit=True) as c:
            c.execute(sql)  # type: ignore[arg-type]
        return
    import pymysql

    from spire_py.server.datastore.connection_strings import mysql_engine_args

    url, args = mysql_engine_args(conn)
    with pymysql.connect(host=url.host, port=url.port, user=url.username, password=url.password or "", **args) as c:
        with c.cursor() as cur:
            cur.execute(sql)


def server_conn(kind: str) -> str:
    """This run's database on the postgres/mysql server (created on first use)."""
    if kind not in _RUN_DBS:
        conn = os.environ[_ENV[kind]]
        name = f"spire_unit_{uuid.uuid4().hex[:10]}"
        try:
            _admin(kind, f"CREATE DATABASE {name}")
        except Exception:  # noqa: BLE001 - no right to create one: use the given database
            _RUN_DBS[kind] = conn
        else:
            if kind == "postgres":
                _RUN_DBS[kind] = re.sub(r"dbname=\S+", f"dbname={name}", conn)
            else:
                _RUN_DBS[kind] = re.sub(r"\)/[^?]*", f")/{name}", conn)
            force = " WITH (FORCE)" if kind == "postgres" else ""
            atexit.register(lambda: _drop_quietly(kind, f"DROP DATABASE IF EXISTS {name}{force}"))
    return _RUN_DBS[kind]


def _drop_quietly(kind: str, sql: str) -> None:
    try:
        _admin(kind, sql)
    except Exception:  # noqa: BLE001 - a left-over scratch database is harmless
        pass


def reset_server_db(kind: str, conn: str, drop: bool = True) -> None:
    """Empty a scratch postgres/mysql database so each test starts from nothing.

    With ``drop=False`` a schema already at head is kept and only its rows go,
    which is much quicker than migrating again (MySQL DDL is slow).
    """
    from spire_py.server.datastore.dialects import PoolSettings, create_store_engine
    from spire_py.server.datastore.migrate import current_revision, head_revision

    engine = create_store_engine(kind, conn, PoolSettings())
    with engine.begin() as c:
        names = inspect(c).get_table_names()
        if kind == "mysql":
            c.execute(text("SET FOREIGN_KEY_CHECKS=0"))
        if not drop and "alembic_version" in names and current_revision(c) == head_revision():
            data = [n for n in names if n != "alembic_version"]
            if kind == "postgres":
                c.execute(text(f"TRUNCATE {', '.join(data)} RESTART IDENTITY"))
            else:
                for name in data:
                    c.execute(text(f"DELETE FROM {name}"))
        else:
            for name in names:
                c.execute(text(f"DROP TABLE IF EXISTS {name}" + (" CASCADE" if kind == "postgres" else "")))
    engine.dispose()


def open_store(kind: str, tmp_path: os.PathLike[str], **kw: object) -> SQLDataStore:
    if kind == "sqlite3":
        return SQLDataStore("sqlite3", os.path.join(tmp_path, "data", "datastore.sqlite3"), **kw)  # type: ignore[arg-type]
    return SQLDataStore(kind, server_conn(kind), **kw)  # type: ignore[arg-type]


def sel(*pairs: str) -> list[Selector]:
    return [Selector(*p.split(":", 1)) for p in pairs]


def entry(spiffe: str = "/w", parent: str = "/agent", sels: tuple[str, ...] = ("unix:uid:1000",), **kw: object) -> Entry:
    return Entry(spiffe_id=TD + spiffe, parent_id=TD + parent, selectors=sel(*sels), **kw)  # type: ignore[arg-type]


def make_cert(not_after: int, cn: str = "ca") -> bytes:
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, cn)])
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(datetime.datetime.fromtimestamp(NOW - 86400, datetime.timezone.utc))
        .not_valid_after(datetime.datetime.fromtimestamp(not_after, datetime.timezone.utc))
        .sign(key, hashes.SHA256())
    )
    return cert.public_bytes(serialization.Encoding.DER)


def jwt_key(kid: str, expires_at: int) -> JWTKey:
    pub = ec.generate_private_key(ec.SECP256R1()).public_key()
    der = pub.public_bytes(serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo)
    return JWTKey(key_id=kid, public_key=der, expires_at=expires_at)
