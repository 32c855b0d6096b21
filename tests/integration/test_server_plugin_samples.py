"""Server-side plugins added after the first samples test take SPIRE's own sample configurations
(from its plugin docs) through `spire-server validate`, creating nothing and calling nothing:
UpstreamAuthority "spire" and aws_iid's organization and EKS membership blocks (the other server
samples: tests/integration/test_k8s_samples.py and tests/unit/server/plugins/nodeattestor/)."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.integration.helpers.harness import SERVER, assert_validates_and_creates_nothing, run, server_conf_file

UPSTREAM_SPIRE = '''UpstreamAuthority "spire" {
        plugin_data {
            server_address = "upstream-spire-server",
            server_port = "8081",
            workload_api_socket = "/tmp/spire-agent/public/api.sock"
        }
    }'''
SAMPLES = {
    "UpstreamAuthority spire": UPSTREAM_SPIRE,
    "aws_iid verify_organization": '''NodeAttestor "aws_iid" {
        plugin_data {
            verify_organization = {
                management_account_id = "7891011"
                assume_org_role = "spire-server-org-role"
                org_account_map_ttl = "1m30s"
            }
        }
    }''',
    "aws_iid validate_eks_cluster_membership": '''NodeAttestor "aws_iid" {
        plugin_data {
            validate_eks_cluster_membership = {
                eks_cluster_names = ["production-cluster", "staging-cluster"]
            }
        }
    }''',
}


@pytest.mark.parametrize("name", sorted(SAMPLES))
def test_spire_sample_config_validates_and_creates_nothing(tmp_path: Path, name: str) -> None:
    assert_validates_and_creates_nothing(SERVER, server_conf_file(tmp_path, SAMPLES[name]))


def test_the_windows_sample_is_refused_on_linux_in_spire_s_words(tmp_path: Path) -> None:
    windows = UPSTREAM_SPIRE.replace('workload_api_socket = "/tmp/spire-agent/public/api.sock"',
                                     'experimental {\n workload_api_named_pipe_name = "\\\\spire-agent\\\\public\\\\api"\n }')
    conf = server_conf_file(tmp_path, windows)
    proc = run([SERVER, "validate", "-config", str(conf)], check=False)
    assert proc.returncode == 1
    assert f"{conf}:" in proc.stderr and "plugin_data.experimental" in proc.stderr, proc.stderr
    assert "workload_api_named_pipe_name is not supported on this platform" in proc.stderr, proc.stderr


def test_an_unknown_key_is_refused_with_file_line_and_key(tmp_path: Path) -> None:
    conf = server_conf_file(tmp_path, UPSTREAM_SPIRE.replace("server_port =", "server_prot ="))
    proc = run([SERVER, "validate", "-config", str(conf)], check=False)
    assert proc.returncode == 1
    assert f"{conf}:" in proc.stderr and "plugin_data.server_prot" in proc.stderr, proc.stderr
