"""The Kubernetes plugins take SPIRE's own sample configurations (from its plugin docs) through
`spire-server validate` / `spire-agent validate`, creating nothing (the kubeconfig files they
name need not exist to validate, as in SPIRE); a wrong key is refused with file, line and key."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.integration.helpers.harness import AGENT, SERVER, TD, assert_validates_and_creates_nothing, run, server_conf_file

SERVER_PSAT = '''NodeAttestor "k8s_psat" {
        plugin_data {
            clusters = {
                "MyCluster" = {
                    service_account_allow_list = ["production:spire-agent"]
                    audience = ["spire-server"]
                    allowed_node_label_keys = ["kubernetes.io/os"]
                    allowed_pod_label_keys = ["app"]
                }
            }
        }
    }'''
CONFIGMAP = '''BundlePublisher "k8s_configmap" {
        plugin_data {
            clusters = {
                "example-cluster-1" = {
                    configmap_name = "example.org"
                    configmap_key = "bundle"
                    namespace = "spire"
                    kubeconfig_path = "/file/path/cluster-1"
                    format = "spiffe"
                },
                "example-cluster-2" = {
                    configmap_name = "example.org"
                    configmap_key = "bundle"
                    namespace = "spire"
                    kubeconfig_path = "/file/path/cluster-2"
                    format = "pem"
                }
            }
        }
    }'''
SERVER_SAMPLES = {
    "psat, configmap, k8sbundle in-cluster":
        f'{SERVER_PSAT}\n{CONFIGMAP}\nNotifier "k8sbundle" {{ plugin_data {{ }} }}',
    "k8sbundle out-of-cluster": '''Notifier "k8sbundle" {
        plugin_data {
            namespace = "infra"
            config_map = "agents"
            config_map_key = "bootstrap.crt"
            kube_config_file_path = "/path/to/kubeconfig"
        }
    }''',
}
AGENT_PSAT = 'NodeAttestor "k8s_psat" { plugin_data { cluster = "MyCluster" } }'
AGENT_SAMPLES = {
    "read-only port": "kubelet_read_only_port = 10255",
    "secure port, defaults": "",
    "skip verification": "skip_kubelet_verification = true",
    "other token": 'skip_kubelet_verification = true\n    token_path = "/path/to/token"',
    "client certificate": 'kubelet_ca_path = "/path/to/kubelet-ca.pem"\n    certificate_path = "/path/to/cert.pem"\n'
                          '    private_key_path = "/path/to/key.pem"',
}


def agent_conf(d: Path, plugins: str) -> Path:
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


@pytest.mark.parametrize("name", sorted(SERVER_SAMPLES))
def test_spire_server_samples_validate_and_create_nothing(tmp_path: Path, name: str) -> None:
    assert_validates_and_creates_nothing(SERVER, server_conf_file(tmp_path, SERVER_SAMPLES[name]))


@pytest.mark.parametrize("name", sorted(AGENT_SAMPLES))
def test_spire_agent_samples_validate_and_create_nothing(tmp_path: Path, name: str) -> None:
    plugins = f'{AGENT_PSAT}\nWorkloadAttestor "k8s" {{\n  plugin_data {{\n    {AGENT_SAMPLES[name]}\n  }}\n}}'
    assert_validates_and_creates_nothing(AGENT, agent_conf(tmp_path, plugins))


def test_server_refuses_a_wrong_cluster_key_with_file_line_and_key(tmp_path: Path) -> None:
    conf = server_conf_file(tmp_path, SERVER_PSAT.replace("audience =", "audiences ="))
    proc = run([SERVER, "validate", "-config", str(conf)], check=False)
    assert proc.returncode == 1
    assert f"{conf}:" in proc.stderr and "clusters.MyCluster.audiences" in proc.stderr, proc.stderr


def test_agent_refuses_both_kubelet_ports(tmp_path: Path) -> None:
    plugins = (f'{AGENT_PSAT}\nWorkloadAttestor "k8s" {{\n  plugin_data {{\n    kubelet_read_only_port = 10255\n'
               f'    kubelet_secure_port = 10250\n  }}\n}}')
    proc = run([AGENT, "validate", "-config", str(agent_conf(tmp_path, plugins))], check=False)
    assert proc.returncode == 1 and "cannot use both the read-only and secure port" in proc.stderr, proc.stderr
