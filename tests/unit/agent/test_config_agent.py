"""spire-agent configuration: every documented key, SPIRE's defaults, its checks, flag overrides."""

import os
import textwrap

import pytest

from spire_py.agent.config import AgentConfig, load_agent_config
from spire_py.common.config import ConfigError
from tests.unit.helpers.paths import CONF_DATA as DATA, ROOT


PLUGINS = """
plugins {
    NodeAttestor "join_token" { plugin_data {} }
    KeyManager "memory" { plugin_data {} }
    WorkloadAttestor "unix" { plugin_data {} }
}
"""

BASE = 'trust_domain = "example.org"\nserver_address = "127.0.0.1"\ninsecure_bootstrap = true'


def write(tmp_path, agent_body, rest=PLUGINS):
    text = "agent {\n" + textwrap.indent(textwrap.dedent(agent_body).strip("\n"), "    ") + "\n}\n" + textwrap.dedent(rest)
    p = tmp_path / "agent.conf"
    p.write_text(text)
    return str(p)


def load(tmp_path, agent_body, rest=PLUGINS, **kw):
    return load_agent_config(write(tmp_path, agent_body, rest), **kw)


def error(tmp_path, agent_body, rest=PLUGINS, **kw) -> ConfigError:
    with pytest.raises(ConfigError) as exc:
        load(tmp_path, agent_body, rest, **kw)
    return exc.value


def test_full_hcl_file_with_every_key_loads():
    cfg = load_agent_config(str(DATA / "agent_full.conf"))
    assert isinstance(cfg, AgentConfig)
    assert (cfg.trust_domain, cfg.server_address, cfg.server_port) == ("example.org", "spire-server.example.org", 8443)
    assert (cfg.data_dir, cfg.socket_path, cfg.admin_socket_path) == (
        "/var/lib/spire/agent", "/run/spire/agent/public/api.sock", "/run/spire/admin/admin.sock")
    assert (cfg.trust_bundle_url, cfg.trust_bundle_format, cfg.insecure_bootstrap) == (
        "https://bundle.example.org/bundle.json", "spiffe", False)
    assert (cfg.rebootstrap_mode, cfg.rebootstrap_delay) == ("auto", 900)
    assert cfg.join_token == "8f2b0e1e-4d05-4a13-a8c5-7f0d1c7a8f00"
    assert (cfg.log_file, cfg.log_level, cfg.log_format, cfg.log_source_location) == (
        "/var/log/spire/agent.log", "DEBUG", "json", True)
    assert cfg.log_selectors == ["k8s:ns", "k8s:sa", "unix:user"]
    assert cfg.allow_unauthenticated_verifiers
    assert cfg.allowed_foreign_jwt_claims == ["email", "groups"]
    assert cfg.authorized_delegates == ["spiffe://example.org/delegate/envoy"]
    assert (cfg.availability_target, cfg.workload_x509_svid_key_type) == (48 * 3600, "ec-p384")
    assert (cfg.x509_svid_cache_max_size, cfg.jwt_svid_cache_max_size) == (2000, 2000)
    assert (cfg.profiling_enabled, cfg.profiling_port, cfg.profiling_freq, cfg.profiling_names) == (True, 6061, 10, ["cpu"])
    assert (cfg.sds.default_svid_name, cfg.sds.default_bundle_name, cfg.sds.default_all_bundles_name,
            cfg.sds.disable_spiffe_cert_validation) == ("my_svid", "my_roots", "everything", True)
    assert (cfg.sync_interval, cfg.jwt_svid_cache_hit_timeout, cfg.use_sync_authorized_entries) == (10, 10, True)
    assert cfg.workload_api_ratelimit["fetch_jwt_svid"] == 500
    assert cfg.broker.socket_path == "/run/spire/broker/api.sock"
    assert cfg.broker.brokers[0]["id"] == "spiffe://example.org/broker"
    assert cfg.broker.brokers[0]["allowed_reference_types"][0]["allow_over_tcp"] is True
    assert cfg.experimental["sync_interval"] == "10s"  # the block as written, for code that reads it raw
    assert [(p.type, p.name) for p in cfg.plugins] == [
        ("NodeAttestor", "join_token"), ("KeyManager", "disk"), ("WorkloadAttestor", "unix"),
        ("WorkloadAttestor", "docker"), ("SVIDStore", "aws_secretsmanager")]
    assert cfg.plugin("KeyManager").data == {"directory": "/var/lib/spire/agent"}
    assert (cfg.health_checks.listener_enabled, cfg.health_checks.bind_port) == (True, 8081)
    assert cfg.telemetry.prometheus.port == 9989 and cfg.telemetry.statsd[0].address == "localhost:8125"


def test_json_file_loads_like_hcl():
    cfg = load_agent_config(str(DATA / "agent.json"))
    assert cfg.source.format == "json"
    assert (cfg.server_address, cfg.server_port, cfg.trust_bundle_path) == ("127.0.0.1", 8081, "./conf/agent/bundle.crt")
    assert [p.name for p in cfg.plugins_of("WorkloadAttestor")] == ["unix", "docker"]


def test_embedded_default_agent_conf_loads():
    cfg = load_agent_config(str(ROOT / "conf/agent/agent.conf"))
    assert (cfg.trust_domain, cfg.server_address, cfg.server_port) == ("example.org", "127.0.0.1", 8081)
    assert cfg.socket_path == "/tmp/spire-agent/public/api.sock"
    assert cfg.insecure_bootstrap
    assert {(p.type, p.name) for p in cfg.plugins} == {
        ("NodeAttestor", "join_token"), ("KeyManager", "disk"), ("WorkloadAttestor", "unix")}
    assert cfg.plugin("KeyManager").data == {"directory": "./.data"}


def test_spire_defaults(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    cfg = load(tmp_path, BASE)
    assert (cfg.server_port, cfg.data_dir, cfg.socket_path) == (8081, str(tmp_path), "/tmp/spire-agent/public/api.sock")
    assert (cfg.trust_bundle_format, cfg.rebootstrap_mode, cfg.rebootstrap_delay) == ("pem", "never", 600)
    assert (cfg.log_level, cfg.log_format) == ("INFO", "text")
    assert (cfg.sds.default_svid_name, cfg.sds.default_bundle_name, cfg.sds.default_all_bundles_name) == (
        "default", "ROOTCA", "ALL")
    assert cfg.workload_x509_svid_key_type == "ec-p256"
    assert cfg.sync_interval is None and cfg.use_sync_authorized_entries and cfg.broker is None
    assert not cfg.health_checks.listener_enabled


def test_relative_data_dir_resolves_against_the_working_directory(tmp_path, monkeypatch):
    path = write(tmp_path, BASE + '\ndata_dir = "./.data"')
    monkeypatch.chdir("/")
    assert load_agent_config(path).data_dir == "/.data"


@pytest.mark.parametrize(
    "body,key,message",
    [
        ('trust_domain = "example.org"\ninsecure_bootstrap = true', "agent.server_address", "must be configured"),
        ('server_address = "x"\ninsecure_bootstrap = true', "agent.trust_domain", "must be configured"),
        ('trust_domain = "example.org"\nserver_address = "x"', "agent",
         "trust_bundle_path, trust_bundle_url, or trust_bundle_spiffe_workload_api must be configured unless insecure_bootstrap is set"),
        (BASE + '\ntrust_bundle_path = "b.pem"', "agent.insecure_bootstrap",
         "only one of insecure_bootstrap or trust_bundle_path can be specified"),
        (BASE + '\ntrust_bundle_url = "https://x/b"', "agent.insecure_bootstrap",
         "only one of insecure_bootstrap or trust_bundle_url can be specified"),
        ('trust_domain = "example.org"\nserver_address = "x"\ntrust_bundle_path = "b"\ntrust_bundle_url = "https://x/b"',
         "agent.trust_bundle_url", "only one of trust_bundle_url or trust_bundle_path"),
        ('trust_domain = "example.org"\nserver_address = "x"\ntrust_bundle_url = "http://x/b"',
         "agent.trust_bundle_url", "trust bundle URL must start with https://"),
        (BASE + '\ntrust_bundle_format = "der"', "agent.trust_bundle_format", "must be one of: pem, spiffe"),
        (BASE + '\njoin_token = "a"\njoin_token_file = "b"', "agent.join_token_file", "only one of join_token or join_token_file"),
        (BASE + '\nrebootstrap_mode = "auto"', "agent.rebootstrap_mode", "insecure_bootstrap option can not be used with rebootstrapping"),
        (BASE + '\nrebootstrap_mode = "sometimes"', "agent.rebootstrap_mode", "must be one of: never, auto, always"),
        (BASE + '\navailability_target = "12h"', "agent.availability_target", "must be at least 24h"),
        (BASE + '\nx509_svid_cache_max_size = -1', "agent.x509_svid_cache_max_size", "must not be negative"),
        (BASE + '\nworkload_x509_svid_key_type = "rsa-4096"', "agent.workload_x509_svid_key_type", "must be one of"),
        (BASE + '\nauthorized_delegates = ["spiffe://other.org/d"]', "agent.authorized_delegates[0]", "not a member of trust domain"),
        (BASE + '\nserver_port = "x"', "agent.server_port", "expected an integer"),
        (BASE + '\nsds { default_svid_name = 5.5 }', "agent.sds.default_svid_name", "expected a string"),
        (BASE + '\nexperimental { jwt_svid_cache_hit_timeout = "1m" }', "agent.experimental.jwt_svid_cache_hit_timeout", "less than 30s"),
        (BASE + '\nexperimental { ratelimit { fetch_x509_svids = 1 } }', "agent.experimental.ratelimit.fetch_x509_svids", "unknown key"),
        (BASE + '\nexperimental { sync_interval = "5" }', "agent.experimental.sync_interval", "missing unit"),
        (BASE + '\nsever_address = "x"', "agent.sever_address", 'unknown key "sever_address"'),
    ],
)
def test_agent_checks(tmp_path, body, key, message):
    e = error(tmp_path, body)
    assert e.key == key
    assert message in e.message
    assert e.line is not None


def test_admin_socket_cannot_share_the_workload_api_directory(tmp_path):
    e = error(tmp_path, BASE + '\nsocket_path = "/run/spire/api.sock"\nadmin_socket_path = "/run/spire/admin.sock"')
    assert e.key == "agent.admin_socket_path" and "same directory" in e.message


@pytest.mark.parametrize(
    "plugins,message",
    [
        ('plugins {\n NodeAttestor "join_token" {}\n KeyManager "memory" {}\n}',
         'plugin type "WorkloadAttestor" constraint not satisfied: expected at least 1 but got 0'),
        ('plugins {\n NodeAttestor "join_token" {}\n NodeAttestor "x509pop" {}\n KeyManager "memory" {}\n WorkloadAttestor "unix" {}\n}',
         'plugin type "NodeAttestor" constraint not satisfied: expected exactly 1 but got 2'),
        ('plugins {\n KeyManager "memory" {}\n WorkloadAttestor "unix" {}\n}',
         'plugin type "NodeAttestor" constraint not satisfied: expected exactly 1 but got 0'),
        ('plugins {\n NodeAttestor "join_token" {}\n KeyManager "memory" {}\n WorkloadAttestor "unix" {}\n DataStore "sql" {}\n}',
         'unknown plugin type "DataStore"'),
    ],
)
def test_agent_plugin_counts(tmp_path, plugins, message):
    e = error(tmp_path, BASE, plugins)
    assert message in e.message


def test_join_token_file_is_read(tmp_path):
    (tmp_path / "token").write_text("  abc-123\n")
    cfg = load(tmp_path, BASE + f'\njoin_token_file = "{tmp_path}/token"')
    assert cfg.join_token == "abc-123"


def test_empty_join_token_file_is_refused(tmp_path):
    (tmp_path / "token").write_text("\n")
    e = error(tmp_path, BASE + f'\njoin_token_file = "{tmp_path}/token"')
    assert e.message == "join token file is empty"


def test_trust_bundle_over_a_unix_socket_needs_plain_http(tmp_path):
    cfg = load(tmp_path, 'trust_domain = "example.org"\nserver_address = "x"\ntrust_bundle_url = "http://localhost/b"\n'
                         'trust_bundle_unix_socket = "/run/bundle.sock"')
    assert cfg.trust_bundle_unix_socket == "/run/bundle.sock"


def test_trust_bundle_from_a_workload_api(tmp_path):
    cfg = load(tmp_path, 'trust_domain = "example.org"\nserver_address = "x"\n'
                         'trust_bundle_spiffe_workload_api = "unix:///run/spire/upstream.sock"')
    assert cfg.trust_bundle_spiffe_workload_api == "unix:///run/spire/upstream.sock"


def test_retry_bootstrap_is_accepted_with_a_warning(tmp_path):
    cfg = load(tmp_path, BASE + "\nretry_bootstrap = true")
    assert any("retry_bootstrap" in w for w in cfg.warnings)


def test_overrides_win_over_the_file(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    cfg = load(tmp_path, 'trust_domain = "example.org"\nserver_address = "file"\ntrust_bundle_path = "file.pem"',
               overrides={"serverAddress": "10.0.0.9", "serverPort": 9443, "socketPath": "/tmp/a.sock",
                          "trustDomain": "flag.org", "trustBundle": "flag.pem", "joinToken": "tok",
                          "logLevel": "error", "dataDir": "d"})
    assert (cfg.server_address, cfg.server_port, cfg.socket_path, cfg.trust_domain) == (
        "10.0.0.9", 9443, "/tmp/a.sock", "flag.org")
    assert (cfg.trust_bundle_path, cfg.join_token, cfg.log_level, cfg.data_dir) == (
        "flag.pem", "tok", "ERROR", str(tmp_path / "d"))


def test_insecure_bootstrap_flag(tmp_path):
    body = 'trust_domain = "example.org"\nserver_address = "x"'
    assert load(tmp_path, body, overrides={"insecureBootstrap": True}).insecure_bootstrap
    # As in SPIRE, -insecureBootstrap=false does not undo the file's true.
    assert load(tmp_path, BASE, overrides={"insecureBootstrap": False}).insecure_bootstrap
    e = error(tmp_path, body + '\ntrust_bundle_path = "b.pem"', overrides={"insecureBootstrap": True})
    assert "-insecureBootstrap flag" in e.message and e.line is None


def test_trust_bundle_url_flag(tmp_path):
    cfg = load(tmp_path, 'trust_domain = "example.org"\nserver_address = "x"',
               overrides={"trustBundleUrl": "https://b.example.org/bundle"})
    assert cfg.trust_bundle_url == "https://b.example.org/bundle"


def test_expand_env(tmp_path, monkeypatch):
    monkeypatch.setenv("JOIN_TOKEN", "from-env")
    cfg = load(tmp_path, BASE + '\njoin_token = "$JOIN_TOKEN"', expand_env=True)
    assert cfg.join_token == "from-env"
    assert load(tmp_path, BASE + '\njoin_token = "$JOIN_TOKEN"').join_token == "$JOIN_TOKEN"


def test_no_agent_section(tmp_path):
    p = tmp_path / "agent.conf"
    p.write_text(PLUGINS)
    with pytest.raises(ConfigError) as exc:
        load_agent_config(str(p))
    assert exc.value.key == "agent.trust_domain"


def test_agent_config_keeps_its_source_for_plugin_error_lines(tmp_path):
    from spire_py.common.config import line_of

    cfg = load(tmp_path, BASE, 'plugins {\n NodeAttestor "join_token" {}\n KeyManager "disk" {\n  plugin_data {\n'
                               '   directory = "/x"\n  }\n }\n WorkloadAttestor "unix" {}\n}\n')
    assert line_of(cfg.source, "plugins.KeyManager.disk.plugin_data.directory") == 10
    assert os.path.basename(cfg.path) == "agent.conf"
