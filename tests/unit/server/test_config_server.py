"""spire-server configuration: every documented key, SPIRE's defaults, its checks, flag overrides."""

import os
import textwrap

import pytest

from spire_py.common.config import ConfigError
from spire_py.common.config.unacted import MESSAGE as UNACTED_MESSAGE
from spire_py.server.config import ServerConfig, load_server_config
from tests.unit.helpers.paths import CONF_DATA as DATA, ROOT


PLUGINS = """
plugins {
    DataStore "sql" { plugin_data { database_type = "sqlite3" } }
    KeyManager "memory" { plugin_data {} }
}
"""


def write(tmp_path, server_body, rest=PLUGINS, name="server.conf"):
    text = "server {\n" + textwrap.indent(textwrap.dedent(server_body).strip("\n"), "    ") + "\n}\n" + textwrap.dedent(rest)
    p = tmp_path / name
    p.write_text(text)
    return str(p)


def load(tmp_path, server_body, rest=PLUGINS, **kw):
    return load_server_config(write(tmp_path, server_body, rest), **kw)


def error(tmp_path, server_body, rest=PLUGINS, **kw) -> ConfigError:
    with pytest.raises(ConfigError) as exc:
        load(tmp_path, server_body, rest, **kw)
    return exc.value


# --- loading whole files -------------------------------------------------------------


def test_full_hcl_file_with_every_key_loads():
    cfg = load_server_config(str(DATA / "server_full.conf"))
    # Only "not acted on yet" warnings (common/config/unacted.py), one per such key set, and ACME's refusal.
    assert cfg.warnings and all(w.endswith(UNACTED_MESSAGE) or "ACME is not supported" in w for w in cfg.warnings)
    assert cfg.trust_domain == "example.org"
    assert (cfg.bind_address, cfg.bind_port) == ("10.0.0.1", 8443)
    assert cfg.socket_path == "/run/spire/server/api.sock"
    assert cfg.data_dir == "/var/lib/spire/server"
    assert (cfg.log_file, cfg.log_level, cfg.log_format, cfg.log_source_location) == (
        "/var/log/spire/server.log", "WARN", "json", True)
    assert cfg.admin_ids == ["spiffe://example.org/admin/alice", "spiffe://example.org/admin/bob"]
    assert (cfg.agent_ttl, cfg.ca_ttl, cfg.default_x509_svid_ttl, cfg.default_jwt_svid_ttl) == (
        86400, 7 * 86400, 4 * 3600, 600)
    assert (cfg.ca_key_type, cfg.jwt_key_type) == ("rsa-2048", "ec-p384")
    assert (cfg.ca_subject.country, cfg.ca_subject.organization, cfg.ca_subject.common_name) == (
        ["FR"], ["Acme"], "Acme CA")
    assert cfg.audit_log_enabled and not cfg.disable_jwt_svids
    assert cfg.jwt_issuer == "https://oidc.example.org"
    assert cfg.max_attested_node_info_staleness == 30
    assert (cfg.profiling_enabled, cfg.profiling_port, cfg.profiling_freq, cfg.profiling_names) == (
        True, 6060, 30, ["heap", "goroutine"])
    assert cfg.proxy_protocol_trusted_cidrs == ["10.0.0.0/8", "fd00::/8"]
    assert (cfg.prune_attested_nodes_expired_for, cfg.prune_attested_nodes_batch_size, cfg.prune_tofu_nodes) == (
        720 * 3600, 500, True)
    assert (cfg.ratelimit.attestation, cfg.ratelimit.signing) == (False, True)
    # experimental: typed, and kept as written
    assert cfg.agent_spiffe_id_as_selector and cfg.events_based_cache
    assert (cfg.cache_reload_interval, cfg.full_cache_reload_interval, cfg.prune_events_older_than,
            cfg.event_timeout) == (10, 12 * 3600, 6 * 3600, 1200)
    assert (cfg.wit_key_type, cfg.wit_issuer, cfg.feature_flags) == ("ec-p256", "https://wit.example.org", ["i_am_a_test_flag"])
    assert cfg.experimental["cache_reload_interval"] == "10s"
    # federation
    be = cfg.federation.bundle_endpoint
    assert (be.address, be.port, be.refresh_hint, be.profile) == ("0.0.0.0", 8444, 600, "https_web")
    assert (be.acme.directory_url, be.acme.domain_name, be.acme.email, be.acme.tos_accepted) == (
        "https://acme.example.org/directory", "bundle.example.org", "ops@example.org", True)
    fw = cfg.federation.federates_with
    assert list(fw) == ["domain1.test", "domain2.test"]
    assert (fw["domain1.test"].profile, fw["domain1.test"].endpoint_spiffe_id) == (
        "https_spiffe", "spiffe://domain1.test/spire/server")
    assert (fw["domain2.test"].profile, fw["domain2.test"].bundle_endpoint_url) == (
        "https_web", "https://bundle.domain2.test/bundle.json")
    # plugins, in file order, the disabled one dropped
    assert [(p.type, p.name) for p in cfg.plugins] == [
        ("DataStore", "sql"), ("KeyManager", "disk"), ("UpstreamAuthority", "disk"), ("NodeAttestor", "join_token"),
        ("NodeAttestor", "x509pop"), ("NodeAttestor", "k8s_psat"), ("Notifier", "k8sbundle"),
        ("BundlePublisher", "aws_s3"), ("CredentialComposer", "uniqueid")]
    assert cfg.plugin("DataStore").data["max_open_conns"] == 50
    assert cfg.plugin("KeyManager").line == 90
    assert [p.name for p in cfg.plugins_of("NodeAttestor")] == ["join_token", "x509pop", "k8s_psat"]
    assert cfg.plugin("SomethingElse") is None
    # health checks and telemetry
    hc = cfg.health_checks
    assert (hc.listener_enabled, hc.bind_address, hc.bind_port, hc.live_path, hc.ready_path) == (
        True, "0.0.0.0", 8080, "/alive", "/isready")
    t = cfg.telemetry
    assert (t.prometheus.host, t.prometheus.port, t.prometheus.tls.cert_file) == (
        "127.0.0.1", 9988, "/etc/spire/metrics.crt")
    assert [d.address for d in t.dogstatsd] == ["localhost:8125", "collector.example.org:1337"]
    assert [s.address for s in t.statsd] == ["localhost:1337"]
    assert [(m.address, m.env) for m in t.m3] == [("localhost:9000", "dev"), ("collector.example.org:9000", "prod")]
    assert t.inmem and t.metric_prefix == "spire"
    assert (t.enable_trust_domain_label, t.enable_hostname_label) == (True, False)
    assert (t.allowed_prefixes, t.blocked_prefixes, t.allowed_labels, t.blocked_labels) == (
        ["spire_server"], ["spire_server.datastore"], ["method"], ["trust_domain"])


def test_json_file_loads_like_hcl(monkeypatch):
    monkeypatch.chdir(DATA)
    cfg = load_server_config("server.json")
    assert cfg.source.format == "json"
    assert (cfg.trust_domain, cfg.bind_port, cfg.data_dir) == ("example.org", 8081, str(DATA / ".data"))
    assert [(p.type, p.name) for p in cfg.plugins] == [
        ("DataStore", "sql"), ("NodeAttestor", "join_token"), ("NodeAttestor", "x509pop"), ("KeyManager", "memory")]
    assert cfg.plugin("NodeAttestor").line == 23
    assert cfg.federation.federates_with["domain1.test"].endpoint_spiffe_id == "spiffe://domain1.test/spire/server"
    assert cfg.health_checks.listener_enabled and cfg.health_checks.bind_port == 8080
    assert cfg.telemetry.prometheus.port == 9988


def test_embedded_default_server_conf_loads():
    cfg = load_server_config(str(ROOT / "conf/server/server.conf"))
    assert (cfg.trust_domain, cfg.bind_address, cfg.bind_port, cfg.log_level) == ("example.org", "127.0.0.1", 8081, "DEBUG")
    assert cfg.socket_path == "/tmp/spire-server/private/api.sock"
    assert cfg.plugin("DataStore").data == {"database_type": "sqlite3", "connection_string": "./.data/datastore.sqlite3"}
    assert {(p.type, p.name) for p in cfg.plugins} == {
        ("DataStore", "sql"), ("NodeAttestor", "join_token"), ("KeyManager", "memory")}
    assert cfg.warnings == []


def test_spire_defaults(tmp_path):
    cfg = load(tmp_path, 'trust_domain = "example.org"')
    assert isinstance(cfg, ServerConfig)
    assert (cfg.bind_address, cfg.bind_port) == ("0.0.0.0", 8081)
    assert cfg.socket_path == "/tmp/spire-server/private/api.sock"
    assert (cfg.log_level, cfg.log_format, cfg.log_file) == ("INFO", "text", "")
    assert (cfg.ca_key_type, cfg.jwt_key_type) == ("ec-p256", "ec-p256")
    assert (cfg.ca_subject.country, cfg.ca_subject.organization, cfg.ca_subject.common_name) == (["US"], ["SPIFFE"], "")
    assert (cfg.ca_ttl, cfg.default_x509_svid_ttl, cfg.default_jwt_svid_ttl, cfg.agent_ttl) == (86400, 3600, 300, None)
    assert (cfg.ratelimit.attestation, cfg.ratelimit.signing) == (True, True)
    assert cfg.federation.bundle_endpoint is None and cfg.federation.federates_with == {}
    hc = cfg.health_checks
    assert (hc.listener_enabled, hc.bind_address, hc.bind_port, hc.live_path, hc.ready_path) == (
        False, "localhost", 80, "/live", "/ready")
    assert cfg.telemetry.prometheus is None and cfg.telemetry.dogstatsd == []
    assert cfg.cache_reload_interval == 5 and cfg.experimental == {}


def test_relative_data_dir_resolves_against_the_working_directory(tmp_path, monkeypatch):
    path = write(tmp_path, 'trust_domain = "example.org"\ndata_dir = "./.data"\nsocket_path = "run/api.sock"')
    elsewhere = tmp_path / "cwd"
    elsewhere.mkdir()
    monkeypatch.chdir(elsewhere)
    cfg = load_server_config(path)
    assert cfg.data_dir == os.path.join(str(elsewhere), ".data")
    assert cfg.socket_path == os.path.join(str(elsewhere), "run/api.sock")


# --- checks ----------------------------------------------------------------------------


def test_unknown_key_names_file_line_key_and_the_known_keys(tmp_path):
    e = error(tmp_path, 'trust_domain = "example.org"\nbind_prot = 8081')
    assert (e.line, e.key) == (3, "server.bind_prot")
    assert e.path.endswith("server.conf")
    assert str(e).startswith(f"{e.path}:3: server.bind_prot: unknown key \"bind_prot\"; known keys: admin_ids, agent_ttl,")
    assert "bind_port" in e.message and "trust_domain" in e.message


def test_unknown_top_level_section(tmp_path):
    e = error(tmp_path, 'trust_domain = "example.org"', PLUGINS + "\nagent {}\n")
    assert e.key == "agent" and "unknown section" in e.message


def test_trust_domain_is_required(tmp_path):
    e = error(tmp_path, 'bind_port = 8081')
    assert (e.key, e.line, e.message) == ("server.trust_domain", 1, "must be configured")


@pytest.mark.parametrize("td", ["Example.org", "exa mple.org", "spiffe://", "example.org/path?x"])
def test_bad_trust_domain(tmp_path, td):
    e = error(tmp_path, f'bind_port = 8081\ntrust_domain = "{td}"')
    assert (e.key, e.line) == ("server.trust_domain", 3)
    assert f'could not parse trust_domain "{td}"' in e.message


def test_trust_domain_may_be_written_as_a_spiffe_id(tmp_path):
    assert load(tmp_path, 'trust_domain = "spiffe://example.org"').trust_domain == "example.org"


def test_bad_duration(tmp_path):
    e = error(tmp_path, 'trust_domain = "example.org"\nca_ttl = "1d"')
    assert (e.key, e.line) == ("server.ca_ttl", 3)
    assert 'invalid duration "1d": unknown unit "d"' in e.message


def test_bare_number_is_not_a_duration_as_in_spire(tmp_path):
    e = error(tmp_path, 'trust_domain = "example.org"\ndefault_x509_svid_ttl = 3600')
    assert e.key == "server.default_x509_svid_ttl" and "missing unit" in e.message


@pytest.mark.parametrize(
    "line,key,message",
    [
        ('bind_port = "eighty"', "server.bind_port", "expected an integer"),
        ("bind_port = 70000", "server.bind_port", "invalid port 70000"),
        ('audit_log_enabled = "true"', "server.audit_log_enabled", "expected true or false"),
        ('admin_ids = "spiffe://example.org/admin"', "server.admin_ids", "expected a list of strings"),
        ('admin_ids = ["example.org/admin"]', "server.admin_ids", 'invalid SPIFFE ID "example.org/admin"'),
        ('ca_key_type = "ec-p521"', "server.ca_key_type", "must be one of: rsa-2048, rsa-4096, ec-p256, ec-p384"),
        ('log_level = "verbose"', "server.log_level", 'invalid log level "verbose"'),
        ('log_format = "xml"', "server.log_format", "must be one of: text, json"),
        ('proxy_protocol_trusted_cidrs = ["10.0.0.0/33"]', "server.proxy_protocol_trusted_cidrs", "invalid CIDR"),
        ('ca_subject { country = "US" }', "server.ca_subject.country", "expected a list of strings"),
        ('ca_subject { state = ["CA"] }', "server.ca_subject.state", "unknown key"),
        ('ratelimit { attestation = "no" }', "server.ratelimit.attestation", "expected true or false"),
        ('ratelimit { burst = 5 }', "server.ratelimit.burst", "unknown key"),
    ],
)
def test_wrong_types_and_values(tmp_path, line, key, message):
    e = error(tmp_path, f'trust_domain = "example.org"\n{line}')
    assert e.key == key
    assert e.line == 3
    assert message in e.message


def test_log_level_is_case_insensitive_and_normalised(tmp_path):
    assert load(tmp_path, 'trust_domain = "example.org"\nlog_level = "debug"').log_level == "DEBUG"
    assert load(tmp_path, 'trust_domain = "example.org"\nlog_level = "Warning"').log_level == "WARN"


def test_jwt_key_type_defaults_to_ca_key_type(tmp_path):
    cfg = load(tmp_path, 'trust_domain = "example.org"\nca_key_type = "rsa-4096"')
    assert (cfg.ca_key_type, cfg.jwt_key_type, cfg.wit_key_type) == ("rsa-4096", "rsa-4096", "rsa-4096")


def test_default_svid_ttl_is_a_deprecated_alias(tmp_path):
    cfg = load(tmp_path, 'trust_domain = "example.org"\ndefault_svid_ttl = "2h"')
    assert cfg.default_x509_svid_ttl == 7200
    assert any("default_svid_ttl is deprecated" in w for w in cfg.warnings)
    cfg = load(tmp_path, 'trust_domain = "example.org"\ndefault_svid_ttl = "2h"\ndefault_x509_svid_ttl = "30m"')
    assert cfg.default_x509_svid_ttl == 1800


def test_ttl_too_long_for_the_ca_warns_like_spire(tmp_path):
    cfg = load(tmp_path, 'trust_domain = "example.org"\nca_ttl = "12h"\ndefault_x509_svid_ttl = "4h"')
    assert any("default_x509_svid_ttl is too high for the configured ca_ttl value" in w and "2h or less" in w
               for w in cfg.warnings)


def test_empty_ca_subject_uses_the_default_with_a_warning(tmp_path):
    cfg = load(tmp_path, 'trust_domain = "example.org"\nca_subject {}')
    assert cfg.ca_subject.organization == ["SPIFFE"]
    assert any("ca_subject is set but empty" in w for w in cfg.warnings)


def test_ca_subject_given_twice_merges(tmp_path):
    cfg = load(tmp_path, 'trust_domain = "example.org"\nca_subject { country = ["DE"] }\nca_subject { common_name = "x" }')
    assert (cfg.ca_subject.country, cfg.ca_subject.organization, cfg.ca_subject.common_name) == (["DE"], [], "x")


def test_unknown_experimental_keys_warn_as_spire_ignores_them(tmp_path):
    cfg = load(tmp_path, 'trust_domain = "example.org"\nexperimental {\n    future_knob = true\n}')
    assert cfg.experimental == {"future_knob": True}
    assert any("server.experimental.future_knob" in w and ":4:" in w for w in cfg.warnings)


def test_experimental_values_are_still_type_checked(tmp_path):
    e = error(tmp_path, 'trust_domain = "example.org"\nexperimental {\n    cache_reload_interval = "soon"\n}')
    assert (e.key, e.line) == ("server.experimental.cache_reload_interval", 4)


def test_event_timeout_and_sql_transaction_timeout_are_exclusive(tmp_path):
    e = error(tmp_path, 'trust_domain = "example.org"\nexperimental {\n event_timeout = "1m"\n sql_transaction_timeout = "1m"\n}')
    assert "only set event_timeout" in e.message


def test_named_pipe_is_refused_on_posix(tmp_path):
    e = error(tmp_path, 'trust_domain = "example.org"\nexperimental { named_pipe_name = "\\\\spire\\\\api" }')
    assert "please use socket_path instead" in e.message


# --- federation ----------------------------------------------------------------------------


@pytest.mark.parametrize(
    "federation,key,message",
    [
        ('federates_with "d.test" {\n bundle_endpoint_url = "http://d.test"\n bundle_endpoint_profile "https_web" {}\n}',
         "server.federation.federates_with.d.test.bundle_endpoint_url", "must use the HTTPS protocol"),
        ('federates_with "d.test" {\n bundle_endpoint_url = "https://d.test"\n}',
         "server.federation.federates_with.d.test", "missing bundle endpoint configuration"),
        ('federates_with "d.test" {\n bundle_endpoint_url = "https://d.test"\n bundle_endpoint_profile "https_spiffe" {\n endpoint_spiffe_id = "nope"\n }\n}',
         "server.federation.federates_with.d.test.bundle_endpoint_profile.https_spiffe.endpoint_spiffe_id",
         "could not get endpoint SPIFFE ID"),
        ('federates_with "D.TEST" {\n bundle_endpoint_url = "https://d.test"\n bundle_endpoint_profile "https_web" {}\n}',
         "server.federation.federates_with.D.TEST", "could not parse trust_domain"),
        ('bundle_endpoint {\n port = 8443\n profile "https_web" {}\n}',
         "server.federation.bundle_endpoint.profile.https_web", "'acme' or 'serving_cert_file' is required"),
        ('bundle_endpoint {\n profile "https_web" {\n acme { email = "a@b" }\n }\n}',
         "server.federation.bundle_endpoint.profile.https_web.acme.domain_name", "must be configured"),
        ('bundle_endpoint {\n profile "ftp" {}\n}',
         "server.federation.bundle_endpoint.profile.ftp", "unknown bundle endpoint profile"),
        ('bundle_endpoint {\n address = "0.0.0.0"\n hostname = "x"\n}',
         "server.federation.bundle_endpoint.hostname", "unknown key"),
    ],
)
def test_federation_checks(tmp_path, federation, key, message):
    e = error(tmp_path, 'trust_domain = "example.org"\nfederation {\n' + federation + "\n}")
    assert e.key == key
    assert message in e.message
    assert e.line is not None


def test_bundle_endpoint_serving_cert_file_profile(tmp_path):
    cfg = load(tmp_path, 'trust_domain = "example.org"\nfederation {\n bundle_endpoint {\n profile "https_web" {\n'
                         ' serving_cert_file = {\n cert_file_path = "c.pem"\n key_file_path = "k.pem"\n }\n }\n }\n}')
    scf = cfg.federation.bundle_endpoint.serving_cert_file
    assert (scf.cert_file_path, scf.key_file_path, scf.file_sync_interval) == ("c.pem", "k.pem", 3600)


def test_bundle_endpoint_without_profile_defaults_to_https_spiffe_with_a_warning(tmp_path):
    cfg = load(tmp_path, 'trust_domain = "example.org"\nfederation {\n bundle_endpoint {\n port = 8443\n }\n}')
    assert cfg.federation.bundle_endpoint.profile == "https_spiffe"
    assert cfg.federation.bundle_endpoint.refresh_hint == 300
    assert any("no profile set" in w for w in cfg.warnings)


# --- health checks and telemetry ------------------------------------------------------------


@pytest.mark.parametrize(
    "section,key,message",
    [
        ("health_checks {\n listener_enabled = true\n port = 80\n}", "health_checks.port", "unknown key"),
        ('health_checks {\n listener_enabled = true\n bind_port = "http"\n}', "health_checks.bind_port", "expected an integer"),
        ('telemetry {\n Prometheus {\n port = "x"\n }\n}', "telemetry.Prometheus.port", "expected an integer"),
        ('telemetry {\n Prometheus {\n prot = 1\n }\n}', "telemetry.Prometheus.prot", "unknown key"),
        ('telemetry {\n DogStatsd = [\n { adress = "x" },\n ]\n}', "telemetry.DogStatsd[0].adress", "unknown key"),
        ('telemetry {\n AllowedPrefixes = "x"\n}', "telemetry.AllowedPrefixes", "expected a list of strings"),
        ('telemetry {\n EnableHostnameLabel = "yes"\n}', "telemetry.EnableHostnameLabel", "expected true or false"),
    ],
)
def test_health_checks_and_telemetry_are_checked(tmp_path, section, key, message):
    e = error(tmp_path, 'trust_domain = "example.org"', PLUGINS + section)
    assert e.key == key
    assert message in e.message
    assert e.line is not None and e.line > 4


def test_unknown_telemetry_keys_warn_as_spire_ignores_them(tmp_path):
    cfg = load(tmp_path, 'trust_domain = "example.org"', PLUGINS + "telemetry {\n EnableTypePrefix = true\n}")
    assert any("telemetry.EnableTypePrefix" in w for w in cfg.warnings)


def test_single_telemetry_sink_block_is_a_list_of_one(tmp_path):
    cfg = load(tmp_path, 'trust_domain = "example.org"', PLUGINS + 'telemetry {\n DogStatsd { address = "a:1" }\n}')
    assert [d.address for d in cfg.telemetry.dogstatsd] == ["a:1"]


# --- command-line overrides ---------------------------------------------------------------------


def test_overrides_win_over_the_file(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    cfg = load(tmp_path, 'trust_domain = "example.org"\nbind_port = 8081\nlog_level = "INFO"\ndata_dir = "/var/x"',
               overrides={"bindAddress": "127.0.0.2", "serverPort": 9090, "socketPath": "/tmp/s.sock",
                          "trustDomain": "other.org", "logLevel": "debug", "logFile": "/tmp/s.log",
                          "logFormat": "json", "dataDir": "rel"})
    assert (cfg.bind_address, cfg.bind_port, cfg.socket_path, cfg.trust_domain) == (
        "127.0.0.2", 9090, "/tmp/s.sock", "other.org")
    assert (cfg.log_level, cfg.log_file, cfg.log_format) == ("DEBUG", "/tmp/s.log", "json")
    assert cfg.data_dir == str(tmp_path / "rel")


def test_override_can_supply_a_missing_required_key(tmp_path):
    cfg = load(tmp_path, 'bind_port = 8081', overrides={"trustDomain": "flag.org"})
    assert cfg.trust_domain == "flag.org"


def test_zero_valued_overrides_do_not_override_like_spire(tmp_path):
    cfg = load(tmp_path, 'trust_domain = "example.org"\nbind_port = 8443', overrides={"serverPort": 0, "logLevel": ""})
    assert (cfg.bind_port, cfg.log_level) == (8443, "INFO")


def test_bad_override_blames_the_flag_not_the_file(tmp_path):
    e = error(tmp_path, 'trust_domain = "example.org"', overrides={"trustDomain": "Bad.Org"})
    assert e.key == "server.trust_domain"
    assert e.line is None and e.path is None
    assert "-trustDomain flag" in e.message


def test_unknown_override_is_refused(tmp_path):
    with pytest.raises(ConfigError, match='unknown command-line override "bindPort"'):
        load(tmp_path, 'trust_domain = "example.org"', overrides={"bindPort": 1})
