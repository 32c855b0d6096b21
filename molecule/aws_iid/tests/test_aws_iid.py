"""aws_iid: each agent host is an EC2 instance (moto) whose metadata service serves it a signed
instance identity document; the server verifies it against the trusted test CA and EC2."""

from __future__ import annotations

import json
import shlex

import pytest

from conftest import SERVER_SOCKET, fetch_x509

ACCOUNT, REGION = "123456789012", "us-east-1"
TAGS = {"aws-agent1": "web", "aws-agent2": "db"}


def agents_on_server(fleet):
    server = fleet.host(fleet.servers[0])
    out = server.check_output(f"spire-server agent list -socketPath {SERVER_SOCKET} -output json")
    return json.loads(out).get("agents", [])


def host_aws(fleet, name):
    return json.loads(fleet.host(name).check_output("cat /etc/fleet-aws.json"))


def test_agents_attested_with_their_aws_iid_agent_ids(fleet):
    agents = agents_on_server(fleet)
    assert len(agents) == len(fleet.agents)
    assert {a["attestation_type"] for a in agents} == {"aws_iid"}
    expected = {f"/spire/agent/aws_iid/{ACCOUNT}/{REGION}/{host_aws(fleet, name)['instance_id']}" for name in fleet.agents}
    assert {a["id"]["path"] for a in agents} == expected
    assert not any(a.get("can_reattest") for a in agents)


def test_each_agent_carries_its_instance_and_tag_selectors(fleet):
    by_path = {a["id"]["path"]: {f'{s["type"]}:{s["value"]}' for s in a.get("selectors", [])}
               for a in agents_on_server(fleet)}
    for name in fleet.agents:
        instance = host_aws(fleet, name)["instance_id"]
        selectors = by_path[f"/spire/agent/aws_iid/{ACCOUNT}/{REGION}/{instance}"]
        assert {f"aws_iid:instance:id:{instance}", f"aws_iid:tag:role:{TAGS[name]}", f"aws_iid:tag:Name:{name}",
                f"aws_iid:region:{REGION}", f"aws_iid:account_id:{ACCOUNT}"} <= selectors, selectors
        assert any(s.startswith("aws_iid:sg:id:") for s in selectors)
        assert f"aws_iid:iamrole:arn:aws:iam::{ACCOUNT}:role/spire-{name}-role" in selectors


def test_tag_entries_reach_only_their_nodes(fleet):
    for name in fleet.agents:
        ids = {s["spiffe_id"] for s in fetch_x509(fleet.host(name))["svids"]}
        for tag, spiffe_id in (("web", "spiffe://example.org/web"), ("db", "spiffe://example.org/db")):
            assert (spiffe_id in ids) == (TAGS[name] == tag), (name, ids)


def test_credentials_live_in_server_env_only(fleet, server):
    h = fleet.host(server)
    conf = h.file("/opt/spire/conf/server/server.conf").content_string
    assert 'NodeAttestor "aws_iid"' in conf and "aws_ca_certificates" in conf
    assert "fleet-secret-never-in-server-conf" not in conf and "AKIAFLEETTESTKEY0001" not in conf
    env = h.file("/opt/spire/conf/server/server.env")
    assert (env.user, env.group, env.mode) == ("root", "root", 0o600)
    assert "fleet-secret-never-in-server-conf" in env.content_string
    ca = h.file("/opt/spire/conf/server/aws-iid-ca-us-east-1.pem")
    assert ca.exists and "BEGIN CERTIFICATE" in ca.content_string


def second_agent(fleet, name, endpoint):
    """Another agent process on the host (own data dir and socket) attesting with `endpoint`;
    returns (exit code, output) once it gives up."""
    h = fleet.host(name)
    work = f"/tmp/aws-iid-second-{name}"
    conf = f"""
agent {{
  data_dir = "{work}/data"
  log_level = "DEBUG"
  server_address = "{fleet.servers[0]}"
  server_port = 8081
  socket_path = "{work}/api.sock"
  trust_bundle_path = "/opt/spire/conf/agent/bundle.pem"
  trust_domain = "example.org"
}}
plugins {{
  NodeAttestor "aws_iid" {{ plugin_data {{ ec2_metadata_endpoint = "{endpoint}" }} }}
  KeyManager "memory" {{ plugin_data {{}} }}
  WorkloadAttestor "unix" {{ plugin_data {{}} }}
}}
"""
    h.run(f"rm -rf {work} && mkdir -p {work}/data && chmod 700 {work}")
    h.run(f"printf %s {shlex.quote(conf)} > {work}/agent.conf")
    r = h.run(f"timeout 150 spire-agent run -config {work}/agent.conf")
    h.run(f"rm -rf {work}")
    return r.rc, r.stdout + r.stderr


@pytest.mark.parametrize("name, forged, message", [
    ("aws-agent1", False, "attestation data has already been used to attest an agent"),
    ("aws-agent2", True, "no trusted certificate matches the signer"),
], ids=["same-instance-again", "signed-by-another-key"])
def test_second_attestation_or_another_signer_is_refused(fleet, name, forged, message):
    url = host_aws(fleet, name)["imds_url"] + ("/forged" if forged else "")
    rc, out = second_agent(fleet, name, url)
    assert rc not in (0, 124), out[-3000:]
    assert message in out, out[-3000:]
    # Nothing new attested.
    assert len(agents_on_server(fleet)) == len(fleet.agents)
