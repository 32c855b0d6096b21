"""The generic loader: HCL or JSON, env expansion, located errors, schema helpers, the plugins section."""

import os
import textwrap

import pytest

from spire_py.common.config import (
    BOOL,
    DURATION,
    INT,
    SERVER_PLUGIN_RULES,
    STR,
    STR_LIST,
    Block,
    ConfigError,
    Ctx,
    Field,
    PluginSpec,
    Schema,
    expand_env,
    line_of,
    lines_of,
    load_file,
    parse_plugins,
    parse_text,
)
from spire_py.common.plugin import PluginConfigError, parse_plugin_data
from spire_py.server.config import load_server_config


def write(tmp_path, text, name="server.conf"):
    p = tmp_path / name
    p.write_text(textwrap.dedent(text).lstrip("\n"))
    return str(p)


def plugins_of(text):
    data, source = parse_text(textwrap.dedent(text))
    return parse_plugins(Ctx(source), data.get("plugins"), SERVER_PLUGIN_RULES)


MINIMAL_PLUGINS = """
plugins {
    DataStore "sql" { plugin_data { database_type = "sqlite3" } }
    KeyManager "memory" { plugin_data {} }
}
"""


# --- ConfigError ------------------------------------------------------------------


def test_config_error_reads_path_line_key_message():
    e = ConfigError("bad value", path="/etc/spire/server.conf", line=7, key="server.bind_port")
    assert str(e) == "/etc/spire/server.conf:7: server.bind_port: bad value"
    assert (e.path, e.line, e.key, e.message) == ("/etc/spire/server.conf", 7, "server.bind_port", "bad value")


def test_config_error_leaves_out_unknown_parts():
    assert str(ConfigError("m")) == "m"
    assert str(ConfigError("m", key="k")) == "k: m"
    assert str(ConfigError("m", path="f.conf")) == "f.conf: m"
    assert str(ConfigError("m", path="f.conf", key="k")) == "f.conf: k: m"
    assert str(ConfigError("m", line=3, key="k")) == "line 3: k: m"


# --- format detection and parse errors ----------------------------------------------


def test_hcl_and_json_are_told_apart_by_content(tmp_path):
    data, src = load_file(write(tmp_path, 'server { trust_domain = "a.org" }', "x.json"))
    assert src.format == "hcl" and data == {"server": {"trust_domain": "a.org"}}
    data, src = load_file(write(tmp_path, '\n  {"server": {"trust_domain": "a.org"}}', "x.conf"))
    assert src.format == "json" and data == {"server": {"trust_domain": "a.org"}}


def test_hcl_syntax_error_has_the_parsers_line(tmp_path):
    path = write(tmp_path, """
        server {
            trust_domain = "example.org"
            bind_port =
        }
        """)
    with pytest.raises(ConfigError) as exc:
        load_file(path)
    assert exc.value.line == 4
    assert exc.value.path == path
    assert str(exc.value).startswith(f"{path}:4: invalid HCL:")


def test_hcl_unterminated_string_has_a_line(tmp_path):
    path = write(tmp_path, 'server {\n  trust_domain = "example.org\n}\n')
    with pytest.raises(ConfigError) as exc:
        load_file(path)
    assert exc.value.line is not None


def test_hcl_unexpected_end_of_file_points_at_the_end(tmp_path):
    path = write(tmp_path, 'server {\n  trust_domain = "example.org"\n')
    with pytest.raises(ConfigError) as exc:
        load_file(path)
    assert exc.value.line == 2


def test_json_syntax_error_has_jsons_line(tmp_path):
    path = write(tmp_path, '{\n  "server": {\n    "trust_domain": "example.org",\n  }\n}\n', "server.json")
    with pytest.raises(ConfigError) as exc:
        load_file(path)
    assert exc.value.line == 4
    assert "invalid JSON" in str(exc.value)


def test_missing_file_says_where_it_looked(tmp_path):
    with pytest.raises(ConfigError, match="could not find config file .*please use the -config flag"):
        load_file(str(tmp_path / "nope.conf"))


def test_non_utf8_file_is_a_config_error(tmp_path):
    p = tmp_path / "bin.conf"
    p.write_bytes(b'server {\n trust_domain = "\xff\xfe"\n}')
    with pytest.raises(ConfigError) as exc:
        load_file(str(p))
    assert exc.value.line == 2


@pytest.mark.parametrize(
    "text",
    [
        "server = 5",
        "server = [1, 2]",
        'server { trust_domain = ["a"] }',
        'server { trust_domain = "example.org" }\nplugins = "x"',
        'server { trust_domain = "example.org" }\nplugins { DataStore = 5 }',
        'server { trust_domain = "example.org" }\nplugins { DataStore "sql" { plugin_data = "x" } }',
        'server { trust_domain = "example.org" }\nplugins { DataStore "sql" { enabled = "no" } }',
        'server { trust_domain = "example.org" ca_subject = "x" }',
        'server { trust_domain = "example.org" federation { federates_with = 3 } }',
        'server { trust_domain = "example.org" }\ntelemetry { DogStatsd = "x" }',
        'server { trust_domain = "example.org" }\nhealth_checks = [1]',
        '{"server": null}',
        '{"server": {"trust_domain": 1.5}}',
        "[1, 2]",
        "{{{{",
        "}",
        "\x00\x01",
        "server { trust_domain = <<EOF\nexample.org\n",
    ],
)
def test_user_mistakes_are_config_errors_never_tracebacks(tmp_path, text):
    path = write(tmp_path, text)
    with pytest.raises(ConfigError):
        load_server_config(path)


# --- environment expansion -----------------------------------------------------------


def test_expand_env_follows_go_os_expand():
    env = {"TD": "example.org", "PORT": "8081"}
    assert expand_env("$TD:${PORT}", env) == "example.org:8081"
    assert expand_env("x${UNSET}y$UNSET.z", env) == "xy.z"
    assert expand_env("cost $$5", env) == "cost $5"
    assert expand_env("trailing $", env) == "trailing $"
    assert expand_env("a $ b", env) == "a $ b"
    assert expand_env("${}x", env) == "x"


def test_expand_env_applies_before_parsing_only_when_asked(tmp_path, monkeypatch):
    monkeypatch.setenv("SPIRE_TD", "env.example.org")
    monkeypatch.setenv("SPIRE_DB", "postgres")
    monkeypatch.delenv("SPIRE_UNSET", raising=False)
    path = write(tmp_path, """
        server {
            trust_domain = "${SPIRE_TD}"
            jwt_issuer = "x$SPIRE_UNSET"
        }
        plugins {
            DataStore "sql" { plugin_data { database_type = "$SPIRE_DB" } }
            KeyManager "memory" { plugin_data {} }
        }
        """)
    cfg = load_server_config(path, expand_env=True)
    assert cfg.trust_domain == "env.example.org"
    assert cfg.jwt_issuer == "x"
    assert cfg.plugin("DataStore").data == {"database_type": "postgres"}
    with pytest.raises(ConfigError, match="trust_domain"):
        load_server_config(path)  # "${SPIRE_TD}" is not a valid trust domain


# --- key lines -------------------------------------------------------------------------


NESTED = """
server {
    trust_domain = "example.org"
    data_dir = "/var/lib/spire"
}
plugins {
    DataStore "sql" {
        plugin_data {
            connection_string = "a"
            keys_path = "decoy"
        }
    }
    KeyManager "disk" {
        plugin_data {
            keys_path = "/var/lib/spire/keys.json"
        }
    }
}
telemetry {
    DogStatsd = [
        { address = "a:1" },
        { address = "b:2" },
    ]
}
"""


def test_line_of_tracks_block_nesting():
    _, src = parse_text(NESTED.lstrip("\n"))
    assert line_of(src, "server.data_dir") == 3
    assert line_of(src, "plugins.DataStore.sql.plugin_data.keys_path") == 9
    assert line_of(src, "plugins.KeyManager.disk.plugin_data.keys_path") == 14
    assert line_of(src, ("plugins", "KeyManager", "disk")) == 12
    assert line_of(src, "telemetry.DogStatsd[1].address") == 21


def test_line_of_falls_back_to_the_enclosing_block():
    _, src = parse_text(NESTED.lstrip("\n"))
    assert line_of(src, "plugins.KeyManager.disk.plugin_data.missing_key") == 13
    assert line_of(src, "nothing.at.all") is None
    assert line_of(None, "server") is None


def test_line_of_in_json():
    text = '{\n "plugins": {\n  "KeyManager": [\n   {"disk": {\n     "plugin_data": {\n      "keys_path": "x"\n}}}]}}'
    _, src = parse_text(text)
    assert src.format == "json"
    assert line_of(src, "plugins.KeyManager.disk.plugin_data.keys_path") == 6


def test_line_of_keys_with_dots_in_labels():
    text = 'server {\n federation {\n  federates_with "domain1.test" {\n   bundle_endpoint_url = "x"\n  }\n }\n}\n'
    _, src = parse_text(text)
    assert line_of(src, "server.federation.federates_with.domain1.test.bundle_endpoint_url") == 4


def test_lines_of_lists_every_occurrence():
    _, src = parse_text('a { b = 1 }\na { b = 2 }\n')
    assert lines_of(src, "a.b") == [1, 2]


def test_comments_strings_and_heredocs_do_not_confuse_the_locator():
    text = textwrap.dedent("""\
        # server { fake = 1 }
        /* plugins {
           } */
        server {
            a = "{ not a block }"  // x = 1
            b = <<EOT
        c = 2 {
        EOT
            c = 3
        }
        """)
    _, src = parse_text(text)
    assert line_of(src, "server.a") == 5
    assert line_of(src, "server.c") == 9
    assert lines_of(src, "server.fake") == []


# --- schema helpers -------------------------------------------------------------------


SCHEMA = Schema(
    [
        Field("name", STR, required=True),
        Field("port", INT, default=80),
        Field("on", BOOL, default=False),
        Field("ttl", DURATION, default=60),
        Field("ids", STR_LIST),
        Field("mode", STR, default="a", choices=("a", "b")),
        Field("sub", Block(Schema([Field("x", INT, default=1)]))),
    ]
)


def parse_block(text):
    data, src = parse_text(textwrap.dedent(text))
    ctx = Ctx(src)
    return SCHEMA.parse(ctx, ["blk"], data.get("blk")), ctx


def test_schema_applies_types_and_defaults():
    v, _ = parse_block('blk {\n name = "n"\n port = "8080"\n ttl = "1m"\n mode = "B"\n sub { x = 2 }\n}')
    assert v == {"name": "n", "port": 8080, "on": False, "ttl": 60, "ids": [], "mode": "b", "sub": {"x": 2}}
    assert v.present == {"name", "port", "ttl", "mode", "sub"}


def test_schema_unknown_key_names_it_and_lists_the_known_ones_sorted():
    with pytest.raises(ConfigError) as exc:
        parse_block('blk {\n name = "n"\n prot = 1\n}')
    assert exc.value.key == "blk.prot"
    assert exc.value.line == 3
    assert exc.value.message == 'unknown key "prot"; known keys: ids, mode, name, on, port, sub, ttl'


@pytest.mark.parametrize(
    "line,message",
    [
        ('port = "http"', 'expected an integer, got the string "http"'),
        ("port = 1.5", "expected an integer, got the number 1.5"),
        ('on = "true"', "expected true or false"),
        ("mode = true", "expected a string, got the boolean true"),
        ('ids = "a"', "expected a list of strings"),
        ('ttl = "5 minutes"', 'invalid duration "5 minutes"'),
        ("ttl = 300", 'invalid duration "300": missing unit'),
        ('mode = "c"', 'invalid value "c"; must be one of: a, b'),
        ('sub = "x"', "expected a block"),
    ],
)
def test_schema_type_errors_are_located(line, message):
    with pytest.raises(ConfigError) as exc:
        parse_block(f'blk {{\n name = "n"\n {line}\n}}')
    assert message in exc.value.message
    assert exc.value.line == 3
    assert exc.value.key == "blk." + line.split(" ")[0]


def test_schema_missing_required_key_points_at_the_block():
    with pytest.raises(ConfigError) as exc:
        parse_block("\n\nblk {\n port = 1\n}")
    assert exc.value.key == "blk.name"
    assert exc.value.line == 3
    assert exc.value.message == "must be configured"


def test_go_integer_syntax_is_accepted():
    v, _ = parse_block('blk {\n name = 1\n port = "0x1F"\n}')
    assert v["name"] == "1" and v["port"] == 31


def test_repeated_blocks_merge_like_spire():
    v, _ = parse_block('blk {\n name = "n"\n sub { x = 2 }\n}\nblk { port = 9 }')
    assert (v["name"], v["port"], v["sub"]["x"]) == ("n", 9, 2)


def test_scalar_set_twice_keeps_the_last_with_a_warning():
    v, ctx = parse_block('blk {\n name = "a"\n name = "b"\n}')
    assert v["name"] == "b"
    assert any("set more than once" in w for w in ctx.warnings)


def test_unknown_keys_only_warn_in_lenient_blocks():
    data, src = parse_text('x { a = 1\n zzz = 2 }')
    ctx = Ctx(src)
    v = Schema([Field("a", INT)], unknown="warn").parse(ctx, ["x"], data["x"])
    assert v["a"] == 1
    assert len(ctx.warnings) == 1 and 'unknown key "zzz"' in ctx.warnings[0] and ctx.warnings[0].startswith("line 2: x.zzz:")


# --- plugins section --------------------------------------------------------------------


def test_plugins_all_hcl_forms():
    specs = plugins_of("""
        plugins {
            DataStore "sql" { plugin_data { database_type = "sqlite3" } }
            KeyManager "memory" { plugin_data = {} }
            NodeAttestor "join_token" {}
            NodeAttestor "x509pop" plugin_data { ca_bundle_path = "/ca.pem" }
            NodeAttestor { k8s_psat { plugin_data { cluster = "c" } } }
        }
        """)
    assert [(s.type, s.name, s.data) for s in specs] == [
        ("DataStore", "sql", {"database_type": "sqlite3"}),
        ("KeyManager", "memory", {}),
        ("NodeAttestor", "join_token", {}),
        ("NodeAttestor", "x509pop", {"ca_bundle_path": "/ca.pem"}),
        ("NodeAttestor", "k8s_psat", {"cluster": "c"}),
    ]
    assert [s.line for s in specs] == [3, 4, 5, 6, 7]
    assert all(isinstance(s, PluginSpec) for s in specs)
    assert specs[0].key == "plugins.DataStore.sql"


def test_plugins_json_list_and_object_forms():
    specs = plugins_of("""
        {"plugins": {
            "DataStore": [{"sql": {"plugin_data": {"database_type": "sqlite3"}}}],
            "KeyManager": {"memory": {"plugin_data": {}}},
            "NodeAttestor": [{"join_token": {}}, {"x509pop": {"plugin_data": {"a": 1}}}]
        }}
        """)
    assert [(s.type, s.name) for s in specs] == [
        ("DataStore", "sql"), ("KeyManager", "memory"), ("NodeAttestor", "join_token"), ("NodeAttestor", "x509pop")]
    assert specs[3].data == {"a": 1}


def test_plugins_spread_over_two_blocks_are_all_kept():
    specs = plugins_of(MINIMAL_PLUGINS + '\nplugins { Notifier "k8sbundle" {} }\n')
    assert [s.type for s in specs] == ["DataStore", "KeyManager", "Notifier"]


def test_disabled_plugins_are_dropped_before_counting():
    specs = plugins_of("""
        plugins {
            DataStore "sql" {}
            KeyManager "memory" {}
            KeyManager "disk" { enabled = false }
        }
        """)
    assert [s.name for s in specs] == ["sql", "memory"]


def test_two_datastores_is_an_error_naming_the_type_at_the_second():
    with pytest.raises(ConfigError) as exc:
        plugins_of("""
            plugins {
                DataStore "sql" {}
                DataStore "other" {}
                KeyManager "memory" {}
            }
            """)
    assert exc.value.key == "plugins.DataStore"
    assert exc.value.line == 4
    assert 'plugin type "DataStore" constraint not satisfied: expected exactly 1 but got 2' in exc.value.message


def test_no_keymanager_is_an_error_naming_the_type():
    with pytest.raises(ConfigError) as exc:
        plugins_of('\nplugins {\n DataStore "sql" {}\n}\n')
    assert exc.value.key == "plugins.KeyManager"
    assert exc.value.line == 2
    assert "KeyManager" in exc.value.message and "expected exactly 1 but got 0" in exc.value.message


def test_two_upstream_authorities_is_an_error():
    with pytest.raises(ConfigError, match='"UpstreamAuthority" constraint not satisfied: expected at most 1'):
        plugins_of(MINIMAL_PLUGINS + 'plugins {\n UpstreamAuthority "disk" {}\n UpstreamAuthority "vault" {}\n}')


def test_same_plugin_declared_twice_is_an_error():
    with pytest.raises(ConfigError, match='plugin "KeyManager"/"memory" declared more than once') as exc:
        plugins_of(MINIMAL_PLUGINS + 'plugins {\n KeyManager "memory" { enabled = false }\n}')
    assert exc.value.line == 7


def test_plugin_cmd_is_refused_with_its_line():
    with pytest.raises(ConfigError) as exc:
        plugins_of("""
            plugins {
                DataStore "sql" {}
                KeyManager "memory" {}
                NodeAttestor "custom" {
                    plugin_cmd = "/opt/plugins/custom"
                    plugin_checksum = "abc"
                }
            }
            """)
    assert exc.value.key == "plugins.NodeAttestor.custom.plugin_cmd"
    assert exc.value.line == 6
    assert "external plugins are not supported" in exc.value.message


def test_plugin_settings_outside_plugin_data_get_a_hint():
    with pytest.raises(ConfigError) as exc:
        plugins_of('plugins {\n DataStore "sql" {\n  database_type = "sqlite3"\n }\n KeyManager "memory" {}\n}')
    assert exc.value.key == "plugins.DataStore.sql.database_type"
    assert exc.value.line == 3
    assert "plugin_data { ... }" in exc.value.message


def test_unknown_plugin_type_lists_the_known_ones():
    with pytest.raises(ConfigError, match='unknown plugin type "WorkloadAttestor"; known types: BundlePublisher, '):
        plugins_of(MINIMAL_PLUGINS + 'plugins {\n WorkloadAttestor "unix" {}\n}')


def test_plugin_data_file_is_read(tmp_path, monkeypatch):
    (tmp_path / "sql.hcl").write_text('database_type = "sqlite3"\nconnection_string = "x.db"\n')
    monkeypatch.chdir(tmp_path)
    specs = plugins_of('plugins {\n DataStore "sql" { plugin_data_file = "sql.hcl" }\n KeyManager "memory" {}\n}')
    assert specs[0].data == {"database_type": "sqlite3", "connection_string": "x.db"}
    assert specs[0].data_file == str(tmp_path / "sql.hcl")


def test_plugin_data_and_plugin_data_file_are_exclusive():
    with pytest.raises(ConfigError, match=r"only one of \[plugin_data, plugin_data_file\] can be used"):
        plugins_of('plugins {\n DataStore "sql" {\n plugin_data {}\n plugin_data_file = "x"\n }\n KeyManager "memory" {}\n}')


def test_unreadable_plugin_data_file_is_located(tmp_path):
    # Kept on the spec and raised when the plugin is checked, so validate reports it with the others.
    specs = plugins_of(f'plugins {{\n DataStore "sql" {{\n  plugin_data_file = "{tmp_path}/none.hcl"\n }}\n KeyManager "memory" {{}}\n}}')
    err = specs[0].data_error
    assert err is not None and err.key == "plugins.DataStore.sql.plugin_data_file" and err.line == 3
    assert err.message == f"failed to read plugin configuration: open {tmp_path}/none.hcl: no such file or directory"


def test_missing_plugins_section_is_an_error(tmp_path):
    with pytest.raises(ConfigError, match="plugins section must be configured"):
        load_server_config(write(tmp_path, 'server { trust_domain = "example.org" }'))


def test_plugin_errors_raised_later_can_be_located(tmp_path):
    """The host turns a PluginConfigError(key=...) into file:line with line_of."""
    path = write(tmp_path, NESTED)
    cfg = load_server_config(path)
    km = cfg.plugin("KeyManager")
    line = line_of(cfg.source, f"{km.key}.plugin_data.keys_path")
    assert line is not None and "keys_path" in open(path).read().splitlines()[line - 1]
    assert os.path.samefile(cfg.path, path)


def test_plugins_can_check_plugin_data_with_the_same_schema_rules():
    schema = Schema([Field("directory", STR, required=True), Field("ttl", DURATION, default=60)])
    assert parse_plugin_data(schema, {"directory": "/d", "ttl": "1m"}) == {"directory": "/d", "ttl": 60}
    with pytest.raises(PluginConfigError) as exc:
        parse_plugin_data(schema, {"directory": "/d", "dir": "x"})
    assert exc.value.key == "dir" and 'unknown configuration key "dir"' in str(exc.value)
    with pytest.raises(PluginConfigError) as exc:
        parse_plugin_data(schema, {})
    assert exc.value.key == "directory"
