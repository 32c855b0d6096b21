"""The agent-side plugins added for the cloud and container attestors take SPIRE's own sample
configurations (from its plugin docs) through `spire-agent validate`, creating nothing; a wrong
key in each is still refused with its file, line and key."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.integration.helpers.harness import AGENT, TD, assert_validates_and_creates_nothing, run

SAMPLES = {
    "aws_iid": 'NodeAttestor "aws_iid" { plugin_data {} }',
    "aws_iid endpoint": 'NodeAttestor "aws_iid" { plugin_data { ec2_metadata_endpoint = "http://169.254.169.254/latest" } }',
    "gcp_iit": 'NodeAttestor "gcp_iit" { plugin_data { identity_token_host = "metadata.google.internal"\n'
               '  service_account = "XXX@developer.gserviceaccount.com" } }',
    "azure_msi": 'NodeAttestor "azure_msi" { plugin_data {} }',
    "azure_msi resource": 'NodeAttestor "azure_msi" { plugin_data { resource_id = "http://example.org/app/" } }',
    "docker": 'NodeAttestor "join_token" { plugin_data {} }\n'
              'WorkloadAttestor "docker" { plugin_data { docker_socket_path = "unix:///var/run/docker.sock"\n'
              '  docker_version = "1.20" } }',
    "docker matchers": 'NodeAttestor "join_token" { plugin_data {} }\n'
                       'WorkloadAttestor "docker" { plugin_data { use_new_container_locator = false\n'
                       '  container_id_cgroup_matchers = ["/docker/<id>"] } }',
    "systemd": 'NodeAttestor "join_token" { plugin_data {} }\nWorkloadAttestor "systemd" { plugin_data {} }',
}


def _conf(d: Path, plugins: str) -> Path:
    if "WorkloadAttestor" not in plugins:  # an agent needs one
        plugins += '\n    WorkloadAttestor "unix" { plugin_data {} }'
    conf = d / "agent.conf"
    conf.write_text(f"""agent {{
    data_dir = "{d}/data"
    server_address = "127.0.0.1"
    server_port = "8081"
    socket_path = "{d}/api.sock"
    insecure_bootstrap = true
    trust_domain = "{TD}"
}}
plugins {{
    KeyManager "memory" {{ plugin_data {{}} }}
    {plugins}
}}
""")
    return conf


@pytest.mark.parametrize("name", sorted(SAMPLES))
def test_spire_sample_config_validates_and_creates_nothing(tmp_path: Path, name: str) -> None:
    assert_validates_and_creates_nothing(AGENT, _conf(tmp_path, SAMPLES[name]))


@pytest.mark.parametrize("plugin", ['NodeAttestor "aws_iid"', 'NodeAttestor "gcp_iit"', 'NodeAttestor "azure_msi"',
                                    'WorkloadAttestor "docker"', 'WorkloadAttestor "systemd"'])
def test_an_unknown_key_is_refused_with_file_line_and_key(tmp_path: Path, plugin: str) -> None:
    extra = 'NodeAttestor "join_token" { plugin_data {} }\n' if plugin.startswith("Workload") else ""
    conf = _conf(tmp_path, f"{extra}{plugin} {{\n plugin_data {{\n  no_such_key = 1\n }}\n}}")
    proc = run([AGENT, "validate", "-config", str(conf)], check=False)
    assert proc.returncode == 1
    assert f"{conf}:" in proc.stderr and "plugin_data.no_such_key" in proc.stderr, proc.stderr
