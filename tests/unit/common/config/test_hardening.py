"""Hostile or mistaken config files and CLI plumbing: one-line errors, never a traceback.

Deep nesting, a closed output pipe, a policy engine we cannot honour, and settings
accepted without effect (warned about by validate and run).
"""

import json
import os
import re
import signal
import subprocess
import sys
import textwrap

import pytest

from spire_py.agent.cli.main import main as agent_main
from spire_py.common.config import ConfigError, parse_text
from spire_py.common.config.source import MAX_DEPTH
from spire_py.server.catalog import ServerCatalog
from spire_py.server.cli.main import main as server_main
from spire_py.server.config import load_server_config, server_config_from

SERVER_PLUGINS = """
plugins {
    DataStore "sql" { plugin_data { database_type = "sqlite3" connection_string = "%(dir)s/ds.sqlite3" } }
    KeyManager "memory" { plugin_data {} }
    NodeAttestor "join_token" { plugin_data {} }
}
"""
AGENT_PLUGINS = """
plugins {
    NodeAttestor "join_token" { plugin_data {} }
    KeyManager "memory" { plugin_data {} }
    WorkloadAttestor "unix" { plugin_data {} }
}
"""


def write(path, head, body, tail):
    lines = head + ["    " + line for line in textwrap.dedent(body).strip("\n").splitlines()] + ["}"]
    path.write_text("\n".join(lines) + "\n" + tail)
    return str(path)


def server_conf(tmp_path, body="", plugins=SERVER_PLUGINS):
    """The body's first line is line 5."""
    head = ["server {", '    trust_domain = "example.org"', f'    data_dir = "{tmp_path}/data"',
            f'    socket_path = "{tmp_path}/api.sock"']
    return write(tmp_path / "server.conf", head, body, plugins % {"dir": tmp_path})


def agent_conf(tmp_path, body="", plugins=AGENT_PLUGINS):
    """The body's first line is line 7."""
    head = ["agent {", '    trust_domain = "example.org"', f'    data_dir = "{tmp_path}/data"',
            f'    socket_path = "{tmp_path}/agent/api.sock"', '    server_address = "127.0.0.1"',
            "    insecure_bootstrap = true"]
    return write(tmp_path / "agent.conf", head, body, plugins)


MAINS = {"server": server_main, "agent": agent_main}


def load_server_config_from_text(text):
    return server_config_from(*parse_text(text, "f.json"))


def cli(side):
    """spire-server / spire-agent as a separate process."""
    return [sys.executable, "-c", f"import sys; from spire_py.{side}.cli.main import main; sys.exit(main())"]


# --- deep nesting --------------------------------------------------------------------


def deep_json(side, depth=1000):
    return '{"%s": ' % side + '{"a": ' * depth + "1" + "}" * depth + "}"


def deep_hcl(side, depth=2500):
    return f"{side} " + "{ a = " * depth + "1" + " }" * depth + "\n"


@pytest.mark.parametrize("side", ["server", "agent"])
@pytest.mark.parametrize("fmt", ["json", "hcl"])
@pytest.mark.parametrize("command", ["validate", "run"])
def test_deep_nesting_is_a_one_line_error(tmp_path, capsys, side, fmt, command):
    path = tmp_path / f"deep.{fmt}"
    path.write_text(deep_json(side) if fmt == "json" else deep_hcl(side))
    assert MAINS[side]([command, "-config", str(path)]) == 1
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "Traceback" not in err
    assert err.rstrip().endswith(f"{path}: nesting too deep (more than {MAX_DEPTH} levels)")


def test_hcl_labels_nest_without_braces_and_count_too():
    with pytest.raises(ConfigError, match="nesting too deep"):
        parse_text("server { " + "a " * 300 + "{ x = 1 } }", "f.conf")


def nested(depth):
    value = 1
    for _ in range(depth):
        value = {"a": value}
    return value


def test_nesting_at_the_limit_still_loads():
    data, _ = parse_text(json.dumps(nested(MAX_DEPTH)))
    assert data == nested(MAX_DEPTH)
    parse_text("a = " + "{ b = " * (MAX_DEPTH - 1) + "1" + " }" * (MAX_DEPTH - 1))  # the file itself is a level
    with pytest.raises(ConfigError, match="nesting too deep"):
        parse_text(json.dumps(nested(MAX_DEPTH + 1)))
    with pytest.raises(ConfigError, match="nesting too deep"):
        parse_text("a = " + "{ b = " * MAX_DEPTH + "1" + " }" * MAX_DEPTH)


def test_deep_plugin_data_file_names_its_file(tmp_path):
    deep = tmp_path / "data.json"
    deep.write_text('{"a": ' * 500 + "1" + "}" * 500)
    plugins = SERVER_PLUGINS.replace('NodeAttestor "join_token" { plugin_data {} }',
                                     f'NodeAttestor "join_token" {{ plugin_data_file = "{deep}" }}')
    with pytest.raises(ConfigError) as exc:
        load_server_config(server_conf(tmp_path, plugins=plugins))
    assert f"in plugin_data_file: {deep}: nesting too deep" in str(exc.value)


# --- a reader that goes away ------------------------------------------------------------

BIG_OUTPUT = """
import sys
from spire_py.common.cli import App
app = App("spire-test", "0")

@app.command("show", "prints a lot")
def show(ctx):
    for i in range(200000):
        ctx.out(f"entry {i}")

sys.exit(app.main(["show"]))
"""


def test_output_piped_into_head_ends_quietly_by_sigpipe():
    # spire-server entry show | head -1, with a real pipe between two processes.
    writer = subprocess.Popen([sys.executable, "-c", BIG_OUTPUT], stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    head = subprocess.run(["head", "-1"], stdin=writer.stdout, capture_output=True, check=True)
    writer.stdout.close()
    err = writer.stderr.read()
    writer.wait()
    assert head.stdout == b"entry 0\n"
    assert err == b""  # no BrokenPipeError traceback
    assert writer.returncode == -signal.SIGPIPE  # as a Go CLI: a shell shows nothing, pipefail gives 141


def test_cli_whose_output_reader_left_before_it_wrote_ends_quietly(tmp_path):
    # The buffered line would only fail at the interpreter's exit flush; it must not print there either.
    proc = subprocess.Popen(
        [*cli("server"), "validate", "-config", server_conf(tmp_path)],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    proc.stdout.close()
    err = proc.stderr.read()
    proc.wait()
    assert err == b""
    assert proc.returncode == -signal.SIGPIPE


def test_broken_pipe_from_elsewhere_is_not_swallowed(capsys):
    from spire_py.common.cli import App

    app = App("spire-test", "0")

    @app.command("talk", "a peer hangs up")
    def talk(ctx):
        raise BrokenPipeError(32, "Broken pipe")

    with pytest.raises(BrokenPipeError):
        app.main(["talk"])


# --- OPA policy engine --------------------------------------------------------------


def test_auth_opa_policy_engine_is_refused_naming_file_line_and_key(tmp_path, capsys):
    path = server_conf(tmp_path, """
        experimental {
            auth_opa_policy_engine {
                local {
                    rego_path = "./conf/server/policy.rego"
                }
            }
        }
    """)
    assert server_main(["validate", "-config", path]) == 1
    err = capsys.readouterr().err
    assert err.startswith(f"SPIRE server configuration file is invalid: {path}:6: "
                          "server.experimental.auth_opa_policy_engine: auth_opa_policy_engine is not supported "
                          "by spire_py:")
    assert err.rstrip().endswith("remove it to use the default authorization policy")


def test_even_an_empty_auth_opa_policy_engine_is_refused(tmp_path):
    with pytest.raises(ConfigError, match="auth_opa_policy_engine is not supported"):
        load_server_config(server_conf(tmp_path, "experimental { auth_opa_policy_engine {} }"))


@pytest.mark.parametrize("side", ["server", "agent"])
def test_require_pq_kem_true_is_refused_where_it_is_written(tmp_path, capsys, side):
    # Fail closed: OpenSSL through Python's ssl cannot limit the key exchange to ML-KEM groups.
    path, line = (server_conf(tmp_path, "experimental {\n    require_pq_kem = true\n}"), 6) if side == "server" else (
        agent_conf(tmp_path, "experimental {\n    require_pq_kem = true\n}"), 8)
    assert MAINS[side](["validate", "-config", path]) == 1
    assert capsys.readouterr().err == (
        f"SPIRE {side} configuration file is invalid: {path}:{line}: {side}.experimental.require_pq_kem: "
        "require_pq_kem is not supported by spire_py: the TLS stack cannot require a post-quantum key exchange; "
        "remove it or set it to false\n")
    false = (server_conf if side == "server" else agent_conf)(tmp_path, "experimental { require_pq_kem = false }")
    assert MAINS[side](["validate", "-config", false]) == 0


@pytest.mark.parametrize("side", ["server", "agent"])
def test_feature_flags_are_checked_as_spire_loads_them(tmp_path, capsys, side):
    conf = server_conf if side == "server" else agent_conf
    line = 6 if side == "server" else 8
    path = conf(tmp_path, 'experimental {\n    feature_flags = ["zeta", "i_am_a_test_flag", "alpha"]\n}')
    assert MAINS[side](["validate", "-config", path]) == 1
    assert capsys.readouterr().err == (
        f"SPIRE {side} configuration file is invalid: {path}:{line}: {side}.experimental.feature_flags: "
        "error loading feature flags: unknown feature flag(s): [alpha zeta]\n")
    path = conf(tmp_path, 'experimental {\n    feature_flags = ["i_am_a_test_flag", "wit-svid"]\n}')
    assert MAINS[side](["validate", "-config", path]) == 0
    # WIT-SVIDs are a server feature spire_py does not issue; the agent reads no flag, as SPIRE's
    warned = (f'Warning: {path}:{line}: server.experimental.feature_flags: feature flag "wit-svid" is not acted on '
              "by spire_py yet: WIT-SVIDs are not issued\n")
    assert capsys.readouterr().err == (warned if side == "server" else "")


# --- settings without effect --------------------------------------------------------


def test_server_validate_warns_about_an_unacted_key_and_still_passes(tmp_path, capsys):
    path = server_conf(tmp_path, "profiling_enabled = true")
    assert server_main(["validate", "-config", path]) == 0
    out, err = capsys.readouterr()
    assert out == "SPIRE server configuration file is valid.\n"
    assert err == (f"Warning: {path}:5: server.profiling_enabled: "
                   "not acted on by spire_py yet: the setting is accepted but has no effect\n")


def test_agent_validate_warns_about_an_unacted_key_and_still_passes(tmp_path, capsys):
    path = agent_conf(tmp_path, 'profiling_enabled = true')
    assert agent_main(["validate", "-config", path]) == 0
    out, err = capsys.readouterr()
    assert out == "SPIRE agent configuration file is valid.\n"
    assert err == (f"Warning: {path}:7: agent.profiling_enabled: "
                   "not acted on by spire_py yet: the setting is accepted but has no effect\n")


def test_a_default_value_is_no_setting_and_earns_no_warning(tmp_path, capsys):
    path = server_conf(tmp_path, "profiling_enabled = false\nexperimental { cache_reload_interval = \"5s\" }")
    assert server_main(["validate", "-config", path]) == 0
    assert capsys.readouterr().err == ""


@pytest.mark.parametrize("side", ["server", "agent"])
def test_run_logs_the_unacted_warning(tmp_path, side):
    # A plugin mistake stops run right after logging starts: nothing is served, the warning is logged
    # (with log_source_location, as SPIRE's hook does, with the file:line and function that logged it).
    body = "profiling_enabled = true\nlog_source_location = true"
    if side == "server":
        path = server_conf(tmp_path, body, SERVER_PLUGINS.replace('KeyManager "memory"', 'KeyManager "disk"'))
        line = 5
    else:
        path = agent_conf(tmp_path, body, AGENT_PLUGINS.replace('KeyManager "memory"', 'KeyManager "disk"'))
        line = 7
    proc = subprocess.run([*cli(side), "run", "-config", path],
                          capture_output=True, text=True, cwd=tmp_path, env={**os.environ, "PYTHONWARNINGS": "ignore"})
    assert proc.returncode == 1
    assert re.search(f'level=warning msg="{re.escape(path)}:{line}: {side}.profiling_enabled: '
                     'not acted on by spire_py yet: the setting is accepted but has no effect" file="daemon_config.py:[0-9]+" '
                     "func=spire_py.common.daemon_config.start_logging subsystem_name=config", proc.stderr)
    assert "log_source_location" not in proc.stderr  # acted on: not warned
    assert proc.stderr.rstrip().splitlines()[-1].startswith(f"Error: {path}:")


def test_control_characters_from_the_file_are_escaped_so_errors_stay_one_line(tmp_path):
    path = tmp_path / "server.json"
    path.write_text(json.dumps({"server": {"trust_domain": "example.org"}, "evil\n\x1b[2J": {}}))
    with pytest.raises(ConfigError) as exc:
        load_server_config(str(path))
    assert str(exc.value) == (f'{path}:1: evil\\n\\x1b[2J: unknown section "evil\\n\\x1b[2J"; '
                              "known sections: health_checks, plugins, server, telemetry")


@pytest.mark.parametrize("text, key", [
    ('{"server": {"data_dir": "/var/\\u0000x"}}', "server.data_dir"),
    ('plugins { NodeAttestor "sshpop" { plugin_data { cert_authorities = ["a", "b\x00"] } } }',
     "plugins.NodeAttestor.sshpop.plugin_data.cert_authorities[1]"),
])
def test_a_nul_character_anywhere_is_a_config_error_naming_the_key(text, key):
    # open() would raise ValueError on such a path, deep inside a plugin.
    with pytest.raises(ConfigError) as exc:
        parse_text(text, "f.conf")
    assert str(exc.value).startswith("f.conf:1: " + key + ": must not contain a NUL character")


@pytest.mark.parametrize("text, line", [
    ('{"server": {"bind_port": 1' + "0" * 5000 + "}}", 1),
    ("server {\n  bind_port = 1" + "0" * 5000 + "\n}", 2),
])
def test_a_number_too_long_for_python_is_a_config_error_in_both_formats(text, line):
    with pytest.raises(ConfigError) as exc:
        parse_text(text, "f.conf")
    assert str(exc.value) == f"f.conf:{line}: number with more than {sys.get_int_max_str_digits()} digits"


def test_a_lone_surrogate_is_escaped_in_errors():
    with pytest.raises(ConfigError) as exc:
        load_server_config_from_text('{"\\ud800": {}}')
    assert str(exc.value).startswith('f.json:1: \\ud800: unknown section "\\ud800"')
    str(exc.value).encode("utf-8")


@pytest.mark.skipif(not os.path.exists("/dev/zero"), reason="needs /dev/zero")
@pytest.mark.parametrize("side", ["server", "agent"])
def test_an_endless_config_file_is_refused_after_a_bounded_read(capsys, side):
    assert MAINS[side](["validate", "-config", "/dev/zero"]) == 1
    assert capsys.readouterr().err == (f"SPIRE {side} configuration file is invalid: "
                                       'unable to read configuration at "/dev/zero": file larger than 16 MiB\n')


@pytest.mark.skipif(not os.path.exists("/dev/zero"), reason="needs /dev/zero")
def test_an_endless_plugin_data_file_is_refused_naming_the_key(tmp_path):
    plugins = SERVER_PLUGINS.replace('NodeAttestor "join_token" { plugin_data {} }',
                                     'NodeAttestor "join_token" { plugin_data_file = "/dev/zero" }')
    cfg = load_server_config(server_conf(tmp_path, plugins=plugins))  # reported when plugins are checked
    with pytest.raises(ConfigError) as exc:
        ServerCatalog(cfg).check()
    assert str(exc.value).endswith('plugins.NodeAttestor.join_token.plugin_data_file: failed to read plugin '
                                   'configuration: open /dev/zero: file larger than 16 MiB')
