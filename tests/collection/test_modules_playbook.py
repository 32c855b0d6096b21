"""Every module in a playbook (connection=local) against a real spire-server started by the test:
check mode changes nothing, --diff shows the change, a second run reports 0 changed."""

from __future__ import annotations

import json
import os

import pytest
import yaml

pytest.importorskip("ansible")
pytest.importorskip("cryptography")

from cryptography.hazmat.primitives import serialization  # noqa: E402
from cryptography.hazmat.primitives.asymmetric import ed25519  # noqa: E402

from conftest import harness  # noqa: E402
from playbook import ansible_playbook  # noqa: E402

pytestmark = pytest.mark.skipif(harness is None, reason="tests/integration/helpers/harness.py (server harness) is missing")

TD = "example.org"


def playbook(server, d, ttl=600):
    cli = {"server_bin": harness.SERVER, "socket_path": server.socket}
    return [{
        "name": "spire_py.spire modules",
        "hosts": "local",
        "gather_facts": False,
        "tasks": [
            {"name": "root CA", "spire_py.spire.root_ca": {
                "key_path": f"{d}/upstream/root.key", "cert_path": f"{d}/upstream/root.crt",
                "subject": {"common_name": "test root", "organization": "spire_py"}}},
            {"name": "x509pop node cert", "spire_py.spire.x509pop_cert": {
                "ca_key_path": f"{d}/x509pop/ca.key", "ca_cert_path": f"{d}/x509pop/ca.crt",
                "key_path": f"{d}/x509pop/node1.key", "cert_path": f"{d}/x509pop/node1.crt",
                "common_name": "node1"}},
            {"name": "sshpop host cert", "spire_py.spire.sshpop_cert": {
                "ca_key_path": f"{d}/sshpop/ca_key", "public_key": "{{ lookup('file', '%s/host_key.pub') }}" % d,
                "cert_path": f"{d}/sshpop/node1-cert.pub", "principals": ["node1"]}},
            {"name": "look for the agent's saved token", "ansible.builtin.stat": {"path": f"{d}/token"},
             "register": "saved_token"},
            {"name": "join token, only for an agent without one", "spire_py.spire.join_token": dict(
                cli, spiffe_id=f"spiffe://{TD}/host/node1", ttl=300),
             "register": "token", "no_log": True, "when": "not saved_token.stat.exists"},
            {"name": "keep the token", "ansible.builtin.copy": {
                "content": "{{ token.token }}", "dest": f"{d}/token", "mode": "0600"},
             "no_log": True, "when": "not saved_token.stat.exists"},
            {"name": "workload entry", "spire_py.spire.entry": dict(
                cli, spiffe_id=f"spiffe://{TD}/web", parent_id=f"spiffe://{TD}/host/node1",
                selectors=["unix:uid:1000", "unix:gid:1000"], x509_svid_ttl=ttl, dns_names=["web.example.org"])},
            {"name": "node alias on the x509pop CN", "spire_py.spire.entry": dict(
                cli, spiffe_id=f"spiffe://{TD}/host/node1", parent_id=f"spiffe://{TD}/spire/server",
                selectors=["x509pop:subject:cn:node1"])},
        ],
    }]


def write(path, doc):
    path.write_text(yaml.safe_dump(doc, sort_keys=False))
    return path


def entries(server):
    doc = json.loads(server.cli("entry", "show", "-output", "json").stdout)
    return {e["spiffe_id"]["path"]: e for e in doc.get("entries") or []}


@pytest.fixture
def setup(spire_server, tmp_path):
    d = tmp_path / "work"
    d.mkdir()
    key = ed25519.Ed25519PrivateKey.generate().public_key()
    (d / "host_key.pub").write_bytes(key.public_bytes(serialization.Encoding.OpenSSH,
                                                      serialization.PublicFormat.OpenSSH) + b"\n")
    inventory = write(tmp_path / "inventory.yml", {"all": {"hosts": {"local": {
        "ansible_connection": "local", "ansible_become": False, "ansible_python_interpreter": harness.sys.executable}}}})
    return spire_server, d, inventory, tmp_path


@pytest.mark.timeout(300)
def test_every_module_check_mode_diff_and_idempotence(setup):
    server, d, inventory, tmp = setup
    play = write(tmp / "play.yml", playbook(server, d))

    checked = ansible_playbook(str(play), inventory, "--check", "--diff", cwd=tmp).check()
    assert checked.changed() == 7, checked.out
    assert sorted(os.listdir(d)) == ["host_key.pub"], "check mode wrote files"
    assert entries(server) == {}, "check mode created entries"
    assert "+subject: CN=test root,O=spire_py" in checked.out or "subject: CN=test root" in checked.out
    assert "x509_svid_ttl: 600" in checked.out

    applied = ansible_playbook(str(play), inventory, "--diff", cwd=tmp).check()
    assert applied.changed() == 7, applied.out
    assert (d / "token").read_text() and "********" not in (d / "token").read_text()
    assert (d / "token").read_text() not in applied.out, "the join token leaked into the output"
    stored = entries(server)
    assert stored["/web"]["x509_svid_ttl"] == 600
    assert set(stored) == {"/web", "/host/node1"}

    again = ansible_playbook(str(play), inventory, cwd=tmp).check()
    assert again.changed() == 0, again.out
    again_check = ansible_playbook(str(play), inventory, "--check", cwd=tmp).check()
    assert again_check.changed() == 0, again_check.out


@pytest.mark.timeout(300)
def test_entry_is_updated_in_place_and_removed(setup):
    server, d, inventory, tmp = setup
    ansible_playbook(str(write(tmp / "play.yml", playbook(server, d))), inventory, cwd=tmp).check()
    web_id = entries(server)["/web"]["id"]

    longer = write(tmp / "longer.yml", playbook(server, d, ttl=1200))
    checked = ansible_playbook(str(longer), inventory, "--check", "--diff", cwd=tmp).check()
    assert checked.changed() == 1 and "-x509_svid_ttl: 600" in checked.out and "+x509_svid_ttl: 1200" in checked.out
    assert entries(server)["/web"]["x509_svid_ttl"] == 600
    ansible_playbook(str(longer), inventory, cwd=tmp).check()
    after = entries(server)["/web"]
    assert after["x509_svid_ttl"] == 1200 and after["id"] == web_id and after["dns_names"] == ["web.example.org"]

    cli = {"server_bin": harness.SERVER, "socket_path": server.socket}
    absent = write(tmp / "absent.yml", [{"hosts": "local", "gather_facts": False, "tasks": [
        {"name": "remove", "spire_py.spire.entry": dict(
            cli, spiffe_id=f"spiffe://{TD}/web", parent_id=f"spiffe://{TD}/host/node1",
            selectors=["unix:gid:1000", "unix:uid:1000"], state="absent")}]}])
    assert ansible_playbook(str(absent), inventory, cwd=tmp).check().changed() == 1
    assert "/web" not in entries(server)
    assert ansible_playbook(str(absent), inventory, cwd=tmp).check().changed() == 0


def test_join_token_module_fails_cleanly_without_a_server(tmp_path):
    inventory = write(tmp_path / "inventory.yml", {"all": {"hosts": {"local": {
        "ansible_connection": "local", "ansible_become": False, "ansible_python_interpreter": harness.sys.executable}}}})
    play = write(tmp_path / "play.yml", [{"hosts": "local", "gather_facts": False, "tasks": [
        {"name": "token", "spire_py.spire.join_token": {"server_bin": harness.SERVER,
                                                        "socket_path": str(tmp_path / "nothing.sock")}}]}])
    run = ansible_playbook(str(play), inventory, cwd=tmp_path)
    assert run.rc != 0 and "token generate failed" in run.out
