"""Plugins declare their config and register in one line; the catalogs hand them out typed;
the SQL store implements the DataStore Protocol the server is written against."""

from __future__ import annotations

import asyncio
import inspect
from dataclasses import dataclass
from pathlib import Path
from typing import Iterator

import pytest

from spire_py.agent.catalog import AgentCatalog
from spire_py.agent.config import load_agent_config
from spire_py.common.plugin import (
    STR, Field, NoConfig, Plugin, PluginConfigError, PluginContext, Schema, lookup, register, unregister,
)
from spire_py.server.catalog import ServerCatalog
from spire_py.server.cli.main import main as server_main
from spire_py.server.config import load_server_config
from spire_py.server.datastore import SQLDataStore
from spire_py.server.datastore.api import DataStore
from spire_py.server.plugins.nodeattestor.join_token import JoinTokenAttestor

TD = "example.org"


# --- the DataStore Protocol -----------------------------------------------------------


def test_sql_store_satisfies_the_datastore_protocol(tmp_path: Path) -> None:
    store = SQLDataStore("sqlite3", str(tmp_path / "ds.sqlite3"))
    try:
        assert isinstance(store, DataStore)
    finally:
        store.close()


def _protocol_methods() -> list[str]:
    return [name for name, value in vars(DataStore).items() if inspect.isfunction(value) and not name.startswith("_")]


@pytest.mark.parametrize("name", _protocol_methods())
def test_sql_store_method_has_the_protocol_signature(name: str) -> None:
    """Same parameter names, kinds and defaults: a caller written against the Protocol works."""
    want = inspect.signature(getattr(DataStore, name))
    got = inspect.signature(inspect.unwrap(getattr(SQLDataStore, name)))
    shape = [(p.name, p.kind, p.default) for p in want.parameters.values()]
    assert [(p.name, p.kind, p.default) for p in got.parameters.values()] == shape


# --- a plugin is one class and one registration -----------------------------------------
# This is the worked example of docs/plugins.md, registered for these tests only.

LEVELS = ("debug", "info", "warn")


@dataclass
class LogNotifierConfig:
    level: str
    message: str


class LogNotifier(Plugin):
    TYPE = "Notifier"
    NAME = "log"
    CONFIG = Schema([
        Field("level", STR, default="info", choices=LEVELS),
        Field("message", STR, default="bundle updated"),
    ])
    CONFIG_TYPE = LogNotifierConfig

    def __init__(self, level: str, message: str) -> None:
        self.level = level
        self.message = message

    @classmethod
    def validate(cls, config: LogNotifierConfig, ctx: PluginContext) -> None:
        if not config.message.strip():
            raise PluginConfigError("message must not be blank", "message")

    @classmethod
    def from_config(cls, config: LogNotifierConfig, ctx: PluginContext) -> "LogNotifier":
        return cls(config.level, config.message)


@pytest.fixture
def log_notifier() -> Iterator[type[LogNotifier]]:
    register("server")(LogNotifier)
    yield LogNotifier
    unregister("server", "Notifier", "log")


def server_conf(tmp_path: Path, notifier_body: str) -> Path:
    path = tmp_path / "server.conf"
    path.write_text(f"""server {{
    trust_domain = "{TD}"
    data_dir = "{tmp_path}/data"
}}
plugins {{
    DataStore "sql" {{
        plugin_data {{
            database_type = "sqlite3"
            connection_string = "{tmp_path}/data/datastore.sqlite3"
        }}
    }}
    KeyManager "memory" {{ plugin_data {{}} }}
    NodeAttestor "join_token" {{ plugin_data {{}} }}
    Notifier "log" {{
        plugin_data {{
{notifier_body}
        }}
    }}
}}
""")
    return path


def line_of_text(path: Path, text: str) -> int:
    return next(i for i, line in enumerate(path.read_text().splitlines(), 1) if text in line)


@pytest.mark.parametrize("body, key, message", [
    ('            level = "loud"', "level", 'invalid value "loud"; must be one of: debug, info, warn'),
    ('            levle = "info"', "levle", 'unknown configuration key "levle"; known keys: level, message'),
    ('            message = "  "', "message", "message must not be blank"),
    ("            message = true", "message", "expected a string, got the boolean true"),
])
def test_validate_locates_a_new_plugins_config_error(tmp_path: Path, capsys: pytest.CaptureFixture[str],
                                                     log_notifier: type[LogNotifier], body: str, key: str,
                                                     message: str) -> None:
    path = server_conf(tmp_path, body)
    assert server_main(["validate", "-config", str(path)]) == 1
    err = capsys.readouterr().err.strip()
    line = line_of_text(path, body.strip())
    assert err == (f"SPIRE server configuration file is invalid: "
                   f"{path}:{line}: plugins.Notifier.log.plugin_data.{key}: {message}")
    assert not (tmp_path / "data").exists()  # validate creates nothing


def test_a_registered_plugin_is_found_validated_and_loaded(tmp_path: Path, capsys: pytest.CaptureFixture[str],
                                                          log_notifier: type[LogNotifier]) -> None:
    path = server_conf(tmp_path, '            level = "WARN"')
    assert server_main(["validate", "-config", str(path)]) == 0
    assert lookup("server", "Notifier", "log") is LogNotifier
    catalog = ServerCatalog(load_server_config(str(path)))
    catalog.load()
    try:
        (notifier,) = catalog.notifiers()
        assert isinstance(notifier, LogNotifier) and (notifier.level, notifier.message) == ("warn", "bundle updated")
    finally:
        asyncio.run(catalog.close())


def test_schema_and_dataclass_must_agree() -> None:
    class Broken(Plugin):
        TYPE, NAME = "Notifier", "broken"
        CONFIG = Schema([Field("level", STR)])
        CONFIG_TYPE = NoConfig

    with pytest.raises(TypeError, match="CONFIG keys"):
        register("server")(Broken)
    with pytest.raises(PluginConfigError, match='unknown Notifier plugin "broken"'):  # k8sbundle is one
        lookup("server", "Notifier", "broken")


# --- the catalogs ----------------------------------------------------------------------


async def test_server_catalog_hands_out_typed_plugins_and_closes_them(tmp_path: Path) -> None:
    path = tmp_path / "server.conf"
    path.write_text(f"""server {{
    trust_domain = "{TD}"
    data_dir = "{tmp_path}/data"
}}
plugins {{
    NodeAttestor "join_token" {{ plugin_data {{}} }}
    KeyManager "memory" {{ plugin_data {{}} }}
    DataStore "sql" {{ plugin_data {{ database_type = "sqlite3"
        connection_string = "{tmp_path}/data/datastore.sqlite3" }} }}
}}
""")
    catalog = ServerCatalog(load_server_config(str(path)))
    catalog.check()
    catalog.load()
    datastore = catalog.data_store()
    assert isinstance(datastore, DataStore)
    closed: list[str] = []
    # The catalog hands out the store wrapped for telemetry and closes the plugin itself.
    store = datastore._inner  # type: ignore[attr-defined]
    close_store = store.close
    store.close = lambda: (closed.append("datastore"), close_store())[-1]
    assert catalog.key_manager().generate_key("k", "ec-p256") is not None
    attestor = catalog.node_attestor_named("join_token")
    # Listed before the DataStore in the file, configured after it, and given it through the context.
    assert isinstance(attestor, JoinTokenAttestor) and attestor.datastore is datastore
    assert catalog.node_attestor_named("x509pop") is None
    assert catalog.upstream_authority() is None
    assert catalog.notifiers() == catalog.bundle_publishers() == catalog.telemetry_sinks() == []
    await catalog.close()
    assert closed == ["datastore"]


async def test_agent_catalog_hands_out_typed_plugins(tmp_path: Path) -> None:
    path = tmp_path / "agent.conf"
    path.write_text(f"""agent {{
    trust_domain = "{TD}"
    server_address = "127.0.0.1"
    insecure_bootstrap = true
    data_dir = "{tmp_path}"
    join_token = "abc"
}}
plugins {{
    NodeAttestor "join_token" {{ plugin_data {{}} }}
    KeyManager "memory" {{ plugin_data {{}} }}
    WorkloadAttestor "unix" {{ plugin_data {{ discover_workload_path = true }} }}
}}
""")
    catalog = AgentCatalog(load_agent_config(str(path)))
    catalog.check()
    catalog.load()
    assert await catalog.node_attestor().payload() == b"abc"
    assert catalog.key_manager().get_key("none") is None
    (unix,) = catalog.workload_attestors()
    assert getattr(unix, "discover_workload_path") is True
    assert catalog.svid_stores() == catalog.telemetry_sinks() == []
    await catalog.close()


# --- validate reports every plugin's error -------------------------------------------------

# SPIRE's own sample (test/integration/suites/spire-server-cli/conf/server/server_bad.conf): a
# missing plugin_data_file and a disk UpstreamAuthority without its files; both are reported.
SERVER_BAD_CONF = """\
server {
    bind_address = "0.0.0.0"
    bind_port = "8081"
    trust_domain = "domain.test"
    data_dir = "DATA"
    log_level = "DEBUG"
    ca_ttl = "1h"
    default_x509_svid_ttl = "10m"
}

plugins {
    DataStore "sql" {
        plugin_data {
            database_type = "sqlite3"
            connection_string = "DATA/datastore.sqlite3"
        }
    }
    KeyManager "memory" {
        plugin_data = {}
    }

  NodeAttestor "x509pop" {
    # should trigger error due to file not found
    plugin_data_file = "conf/server/x509pop.conf"
  }

  UpstreamAuthority "disk" {
      plugin_data {
        # should trigger validation error due to missing fields
      }
  }
}
"""


def test_validate_reports_every_plugin_error_of_spire_s_bad_sample(tmp_path: Path, capsys: pytest.CaptureFixture[str],
                                                                   monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    path = tmp_path / "server_bad.conf"
    path.write_text(SERVER_BAD_CONF.replace("DATA", str(tmp_path / "data")))
    assert server_main(["validate", "-config", str(path)]) == 1
    lines = capsys.readouterr().err.splitlines()
    prefix = f"SPIRE server configuration file is invalid: {path}:"
    assert len(lines) == 2 and all(line.startswith(prefix) for line in lines)
    assert lines[0].endswith("plugins.NodeAttestor.x509pop.plugin_data_file: failed to read plugin configuration: "
                             "open conf/server/x509pop.conf: no such file or directory")
    assert lines[1].endswith("'cert_file_path' and 'key_file_path' must be set and not empty")
    assert not (tmp_path / "data").exists()
