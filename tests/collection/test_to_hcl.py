"""to_hcl: dicts to HCL that SPIRE's parser (and ours) reads back to the same data."""

import pytest

hcl = pytest.importorskip("hcl")
pytest.importorskip("ansible")

from ansible_collections.spire_py.spire.plugins.filter.to_hcl import HCLError, render_hcl  # noqa: E402

SERVER = {
    "server": {
        "bind_address": "0.0.0.0",
        "bind_port": 8081,
        "trust_domain": "example.org",
        "ca_subject": {"country": ["US"], "organization": ["SPIFFE"], "common_name": ""},
        "audit_log_enabled": False,
        "unset": None,
        "federation": {
            "bundle_endpoint": {"address": "0.0.0.0", "port": 8443},
            "federates_with": {"domain.test": {"bundle_endpoint_url": "https://1.2.3.4:8443",
                                               "bundle_endpoint_profile": {"https_web": {}}}},
        },
    },
    "plugins": {
        "DataStore": {"sql": {"plugin_data": {"database_type": "sqlite3",
                                              "connection_string": "/opt/spire/data/server/datastore.sqlite3"}}},
        "NodeAttestor": {"join_token": {"plugin_data": {}},
                         "x509pop": {"plugin_data": {"ca_bundle_path": "/opt/spire/conf/server/x509pop-ca.crt"}}},
        "KeyManager": {"disk": {"plugin_data": {"keys_path": "/opt/spire/data/server/keys.json"}}},
    },
    "health_checks": {"listener_enabled": True, "bind_port": "8080"},
}


def test_renders_spire_layout_with_labeled_plugin_blocks():
    text = render_hcl(SERVER)
    assert 'DataStore "sql" {' in text
    assert 'federates_with "domain.test" {' in text
    assert "bind_port = 8081" in text and 'trust_domain = "example.org"' in text
    assert "audit_log_enabled = false" in text and "unset" not in text
    assert "plugin_data {}" in text
    assert 'country = ["US"]' in text


def merge_repeated(plugins):
    """pyhcl returns repeated `Type "name" {}` blocks as a list of one-key dicts."""
    out = {}
    for kind, blocks in plugins.items():
        merged = {}
        for block in blocks if isinstance(blocks, list) else [blocks]:
            merged.update(block)
        out[kind] = merged
    return out


def test_round_trips_through_an_hcl_parser():
    parsed = hcl.loads(render_hcl(SERVER))
    parsed["plugins"] = merge_repeated(parsed["plugins"])
    expected = dict(SERVER)
    expected["server"] = {k: v for k, v in SERVER["server"].items() if v is not None}
    assert parsed == expected


@pytest.mark.parametrize("value", ['say "hi"', "C:\\dir\\file", "${HOME}/x", "tab\there", "ünïcödé", "a = b } {"])
def test_quotes_and_escapes_strings(value):
    assert hcl.loads(render_hcl({"agent": {"v": value}})) == {"agent": {"v": value}}


def test_multiline_strings_become_heredocs():
    pem = "-----BEGIN CERTIFICATE-----\nMIIB\n-----END CERTIFICATE-----\n"
    text = render_hcl({"plugins": {"UpstreamAuthority": {"x": {"plugin_data": {"pem": pem}}}}})
    assert "<<EOT" in text
    parsed = hcl.loads(text)["plugins"]["UpstreamAuthority"]["x"]["plugin_data"]["pem"]
    assert parsed.rstrip("\n") == pem.rstrip("\n")


def test_heredoc_tag_never_collides_with_content():
    text = render_hcl({"a": {"v": "x\nEOT\ny"}})
    assert "<<EOTX" in text
    assert hcl.loads(text)["a"]["v"] == "x\nEOT\ny"


def test_lists_of_dicts_are_repeated_blocks_and_odd_keys_are_quoted():
    text = render_hcl({"telemetry": {"Prometheus": {"port": 9988}, "Statsd": [{"address": "a:1"}, {"address": "b:2"}]},
                       "x": {"key with space": 1}})
    assert text.count("Statsd {") == 2
    assert '"key with space" = 1' in text
    assert hcl.loads(text)["x"] == {"key with space": 1}


def test_refuses_control_characters_and_non_dicts():
    with pytest.raises(HCLError):
        render_hcl({"a": {"v": "bell\x07"}})
    with pytest.raises(HCLError):
        render_hcl(["not", "a", "dict"])
    with pytest.raises(HCLError, match="labeled block must be a dict"):
        render_hcl({"plugins": {"DataStore": {"sql": "oops"}}})
    with pytest.raises(HCLError, match="cannot render"):
        render_hcl({"a": {"v": object()}})
