"""The roles with aws_iid: agent.conf and server.conf carry SPIRE's aws_iid blocks that
`validate` accepts, AWS credentials reach only server.env (never server.conf or --diff), literal
keys in plugin_data are refused, and the agent's task file reads the instance identity document
(IMDSv2) to learn the agent ID and register the node alias."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import yaml

pytest.importorskip("ansible")

from conftest import ROOT  # noqa: E402
from playbook import BIN, ansible_playbook  # noqa: E402

from tests.unit.helpers.aws import ACCOUNT, REGION, IIDSigner, document, imds_server  # noqa: E402

SECRET = "wJalrXUtnFEMI/K7MDENG/bPxRfiCYEXAMPLEKEY"


def _role_config(side: str, **overrides: Any) -> dict[str, Any]:
    from ansible.parsing.dataloader import DataLoader
    from ansible.template import Templar

    loader = DataLoader()
    variables: dict[str, Any] = {"spire_install_dir": "/opt/spire", "groups": {"spire_servers": ["s1"]},
                                 "inventory_hostname": "a1"}
    for part in ("defaults", "vars"):
        variables.update(loader.load_from_file(str(ROOT / "roles" / side / part / "main.yml"), trusted_as_template=True))
    variables.update(overrides)
    templar = Templar(loader=loader, variables=variables)
    return json.loads(json.dumps(templar.template(variables[f"spire_{side}_effective_config"])))


def _validate(side: str, cfg: dict[str, Any], path: Path) -> subprocess.CompletedProcess[str]:
    from ansible_collections.spire_py.spire.plugins.filter.to_hcl import render_hcl

    path.write_text(render_hcl(cfg))
    return subprocess.run([str(BIN / f"spire-{side}"), "validate", "-config", str(path)],
                          capture_output=True, text=True, timeout=120)


def test_agent_conf_names_the_metadata_endpoint_and_no_token(tmp_path: Path) -> None:
    cfg = _role_config("agent", spire_agent_attestation="aws_iid",
                       spire_agent_aws_iid_ec2_metadata_endpoint="http://10.89.0.1:1338")
    assert cfg["plugins"]["NodeAttestor"] == {"aws_iid": {"plugin_data": {"ec2_metadata_endpoint": "http://10.89.0.1:1338"}}}
    assert "join_token" not in cfg["agent"]
    run = _validate("agent", cfg, tmp_path / "agent.conf")
    assert run.returncode == 0, run.stdout + run.stderr
    # No endpoint: the plugin's own default (AWS's link-local address).
    plain = _role_config("agent", spire_agent_attestation="aws_iid")
    assert plain["plugins"]["NodeAttestor"] == {"aws_iid": {"plugin_data": {}}}


def test_agent_conf_with_a_bad_endpoint_is_refused_by_validate(tmp_path: Path) -> None:
    cfg = _role_config("agent", spire_agent_attestation="aws_iid", spire_agent_aws_iid_ec2_metadata_endpoint="ftp://x")
    run = _validate("agent", cfg, tmp_path / "agent.conf")
    assert run.returncode != 0 and "ec2_metadata_endpoint" in run.stdout + run.stderr


def test_server_conf_carries_the_aws_iid_keys_and_validates(tmp_path: Path) -> None:
    signer = IIDSigner()
    pem = signer.cert.public_bytes(__import__("cryptography.hazmat.primitives.serialization",
                                              fromlist=["Encoding"]).Encoding.PEM).decode()
    conf_dir = tmp_path / "conf"
    conf_dir.mkdir()
    cfg = _role_config("server", spire_server_node_attestors=["join_token", "aws_iid"],
                       spire_server_conf_dir=str(conf_dir), spire_server_data_dir=str(tmp_path / "data"),
                       spire_server_aws_iid_skip_block_device=True,
                       spire_server_aws_iid_account_ids_for_local_validation=[ACCOUNT],
                       spire_server_aws_iid_agent_path_template="/{{ .PluginName }}/{{ .InstanceID }}",
                       spire_server_aws_iid_assume_role="spire-server-delegate",
                       spire_server_aws_iid_partition="aws",
                       spire_server_aws_iid_ca_certificates={REGION: pem, "eu-west-3": pem})
    data = cfg["plugins"]["NodeAttestor"]["aws_iid"]["plugin_data"]
    assert data == {
        "skip_block_device": True, "account_ids_for_local_validation": [ACCOUNT],
        "agent_path_template": "/{{ .PluginName }}/{{ .InstanceID }}", "assume_role": "spire-server-delegate",
        "partition": "aws",
        "aws_ca_certificates": {REGION: f"{conf_dir}/aws-iid-ca-{REGION}.pem",
                                "eu-west-3": f"{conf_dir}/aws-iid-ca-eu-west-3.pem"},
    }
    assert cfg["plugins"]["NodeAttestor"]["join_token"] == {"plugin_data": {}}
    for region in (REGION, "eu-west-3"):
        (conf_dir / f"aws-iid-ca-{region}.pem").write_text(pem)
    run = _validate("server", cfg, tmp_path / "server.conf")
    assert run.returncode == 0, run.stdout + run.stderr
    # Defaults: an empty block (SPIRE's defaults apply), never credentials.
    plain = _role_config("server", spire_server_node_attestors=["aws_iid"])
    assert plain["plugins"]["NodeAttestor"] == {"aws_iid": {"plugin_data": {}}}


def _inventory(tmp: Path) -> Path:
    inv = tmp / "inv.yml"
    inv.write_text(yaml.safe_dump({"all": {"hosts": {"local": {
        "ansible_connection": "local", "ansible_become": False, "ansible_python_interpreter": sys.executable}}}}))
    return inv


def _extra_vars(tmp: Path, **values: Any) -> str:
    """Extra vars (-e @file): above the role files the plays load as vars_files."""
    path = tmp / "extra.json"
    path.write_text(json.dumps(values))
    return f"@{path}"


def _server_play(tmp: Path, tasks: list[Any]) -> Path:
    role = ROOT / "roles"
    path = tmp / "play.yml"
    path.write_text(yaml.safe_dump([{
        "name": "server role with aws_iid", "hosts": "local", "gather_facts": False,
        "vars_files": [str(role / "install/defaults/main.yml"), str(role / "server/defaults/main.yml"),
                       str(role / "server/vars/main.yml")],
        "vars": {"groups": {"spire_servers": ["local"]}, "role_path": str(role / "server")},
        "tasks": tasks}]))
    return path


def _server_vars(tmp: Path, **values: Any) -> str:
    return _extra_vars(tmp, spire_server_node_attestors=["aws_iid"], spire_server_conf_dir=str(tmp),
                       spire_user="spire", spire_group="spire", **values)


def test_credentials_reach_server_env_only(tmp_path: Path) -> None:
    env = {"AWS_ACCESS_KEY_ID": "AKIAIOSFODNN7EXAMPLE", "AWS_SECRET_ACCESS_KEY": SECRET,
           "AWS_ENDPOINT_URL": "http://10.89.0.1:5000"}
    role = ROOT / "roles/server"
    tasks = [
        {"name": "the role's secret check", "ansible.builtin.assert": {
            "that": ["not spire_server_aws_iid_literal_secret | bool"]}},
        {"name": "server.conf", "ansible.builtin.template": {
            "src": str(role / "templates/server.conf.j2"), "dest": str(tmp_path / "server.conf"), "mode": "0640"}},
        {"name": "server.env", "ansible.builtin.template": {
            "src": str(role / "templates/server.env.j2"), "dest": str(tmp_path / "server.env"), "mode": "0600"},
         "no_log": True},
    ]
    run = ansible_playbook(str(_server_play(tmp_path, tasks)), _inventory(tmp_path), "--diff",
                           "-e", _server_vars(tmp_path, spire_server_environment=env), cwd=tmp_path).check()
    conf = (tmp_path / "server.conf").read_text()
    assert 'NodeAttestor "aws_iid"' in conf
    for value in env.values():
        assert value not in conf and value not in run.out
    assert SECRET in (tmp_path / "server.env").read_text()
    assert oct((tmp_path / "server.env").stat().st_mode & 0o777) == "0o600"


@pytest.mark.parametrize("value, refused", [(SECRET, True), ("${AWS_SECRET_ACCESS_KEY}", False)])
def test_literal_keys_in_plugin_data_are_refused(tmp_path: Path, value: str, refused: bool) -> None:
    tasks = [{"name": "verdict", "ansible.builtin.debug": {"msg": "VERDICT {{ spire_server_aws_iid_literal_secret }}"}}]
    extra = _server_vars(tmp_path, spire_server_node_attestor_config={
        "aws_iid": {"plugin_data": {"access_key_id": "${AWS_ACCESS_KEY_ID}", "secret_access_key": value}}})
    run = ansible_playbook(str(_server_play(tmp_path, tasks)), _inventory(tmp_path), "-e", extra, cwd=tmp_path).check()
    assert f"VERDICT {refused}" in run.out, run.out[-2000:]


def test_agent_tasks_read_the_document_for_the_agent_id(tmp_path: Path) -> None:
    """attest_aws_iid.yml against a loopback IMDSv2 (no token, no answer): the agent ID fact."""
    role = ROOT / "roles"
    signer = IIDSigner()
    with imds_server(signer.sign(document("i-0123456789abcdef0"))) as imds:
        play = tmp_path / "play.yml"
        play.write_text(yaml.safe_dump([{
            "name": "agent aws_iid tasks", "hosts": "local", "gather_facts": False,
            "vars_files": [str(role / "install/defaults/main.yml"), str(role / "agent/defaults/main.yml"),
                           str(role / "agent/vars/main.yml")],
            "vars": {"groups": {"spire_servers": ["local"]}},
            "tasks": [{"name": "attest", "ansible.builtin.include_tasks": str(role / "agent/tasks/attest_aws_iid.yml")},
                      {"name": "show", "ansible.builtin.debug": {"msg": "AGENT_ID={{ spire_agent_aws_iid_agent_id }}"}}],
        }]))
        extra = _extra_vars(tmp_path, spire_agent_attestation="aws_iid", spire_agent_alias_id="", spire_ca_host="local",
                            spire_agent_aws_iid_ec2_metadata_endpoint=imds.url + "/")
        run = ansible_playbook(str(play), _inventory(tmp_path), "-e", extra, cwd=tmp_path).check()
        assert imds.requests[0] == "PUT /latest/api/token"
    assert f"AGENT_ID=spiffe://example.org/spire/agent/aws_iid/{ACCOUNT}/{REGION}/i-0123456789abcdef0" in run.out


@pytest.mark.parametrize("side", ["server", "agent"])
def test_argument_specs_survive_templating(side: str) -> None:
    """validate_argument_spec templates the spec: a stray '{{ .X }}' (Go template) in a
    description is a Jinja syntax error that fails every run of the role."""
    import jinja2

    def strings(node: Any) -> Any:
        if isinstance(node, dict):
            for v in node.values():
                yield from strings(v)
        elif isinstance(node, list):
            for v in node:
                yield from strings(v)
        elif isinstance(node, str):
            yield node

    spec = yaml.safe_load((ROOT / "roles" / side / "meta/argument_specs.yml").read_text())
    env = jinja2.Environment()
    for text in strings(spec):
        env.parse(text)
