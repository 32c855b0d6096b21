"""spire_py.spire.site end to end with connection=local: the roles install the collection's own
package into a temp /opt/spire, render server.conf/agent.conf (validated by the installed CLIs
before use) for join_token, x509pop and sshpop agents, and the agents started from those files
attest to a real spire-server. Check mode first changes nothing; a second run changes nothing."""

from __future__ import annotations

import getpass
import grp
import json
import re
import os
import shutil
import subprocess
import tempfile
from pathlib import Path

import pytest
import yaml

pytest.importorskip("ansible")
pytest.importorskip("cryptography")

from cryptography.hazmat.primitives import serialization  # noqa: E402
from cryptography.hazmat.primitives.asymmetric import ed25519  # noqa: E402

from conftest import harness  # noqa: E402
from playbook import ansible_playbook  # noqa: E402

from ansible_collections.spire_py.spire.plugins.module_utils import ca_pair, sshpop  # noqa: E402

pytestmark = pytest.mark.skipif(harness is None, reason="tests/integration/helpers/harness.py (server harness) is missing")

TD = harness.TD
AGENTS = ("agent-jt", "agent-x5", "agent-ssh")
# Batch size is a play-level setting: only -e (or import_playbook vars) reaches it.
ONE_BY_ONE = ("-e", "spire_agent_serial=1")
SECRET = "org-s3cret-never-in-diffs"


def sock_dir(name: str) -> Path:
    return Path(tempfile.mkdtemp(prefix=f"spire-{name}-", dir="/tmp"))


@pytest.fixture
def site(make_server, tmp_path):
    """A real server trusting the provisioning CAs the roles will find, and the inventory."""
    opt = tmp_path / "opt"
    x509pop_dir = tmp_path / "ca" / "x509pop"
    sshpop_dir = tmp_path / "ca" / "sshpop"
    # The CAs are made first (as the server play would on the CA host) so the test server trusts them.
    # The modules create their directories before writing (module_utils.files.atomic_write needs them).
    x509pop_dir.mkdir(parents=True)
    sshpop_dir.mkdir(parents=True)
    ca_pair.ensure_ca(ca_pair.CAPairRequest(str(x509pop_dir / "ca.key"), str(x509pop_dir / "ca.crt"),
                                            {"common_name": "SPIRE x509pop provisioning CA"}))
    sshpop.ensure_ca_key(sshpop.HostCertRequest(str(sshpop_dir / "ca_key"), None, None, None))
    server = make_server(extra_plugins=f"""
        NodeAttestor "x509pop" {{ plugin_data {{ ca_bundle_path = "{x509pop_dir}/ca.crt" }} }}
        NodeAttestor "sshpop" {{ plugin_data {{ cert_authorities_path = "{sshpop_dir}/ca_key.pub" }} }}
    """)
    host_key = ed25519.Ed25519PrivateKey.generate()
    key_path = tmp_path / "ssh_host_ed25519_key"
    key_path.write_bytes(host_key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.OpenSSH,
                                                serialization.NoEncryption()))
    key_path.chmod(0o600)
    Path(str(key_path) + ".pub").write_bytes(host_key.public_key().public_bytes(
        serialization.Encoding.OpenSSH, serialization.PublicFormat.OpenSSH) + b" root@agent-ssh\n")

    local = {"ansible_connection": "local", "ansible_become": False, "ansible_python_interpreter": harness.sys.executable}
    agents = {}
    for name, method in zip(AGENTS, ("join_token", "x509pop", "sshpop")):
        agents[name] = dict(local, spire_agent_attestation=method,
                            spire_agent_conf_dir=str(tmp_path / name / "conf"),
                            spire_agent_data_dir=str(tmp_path / name / "data"),
                            spire_agent_socket_path=str(sock_dir(name) / "api.sock"))
    agents["agent-ssh"]["spire_agent_sshpop_host_key_path"] = str(key_path)
    inventory = {"all": {
        "vars": {
            "spire_install_dir": str(opt),
            "spire_manage_user": False,
            "spire_manage_systemd": False,
            "spire_user": getpass.getuser(),
            "spire_group": grp.getgrgid(os.getgid()).gr_name,
            "spire_bin_link_dir": "",
            "spire_trust_domain": TD,
            "spire_x509pop_ca_dir": str(x509pop_dir),
            "spire_sshpop_ca_dir": str(sshpop_dir),
            "spire_entries": [{"spiffe_id": f"spiffe://{TD}/web", "parent_id": f"spiffe://{TD}/host/agent-jt",
                               "selectors": ["unix:uid:%d" % os.getuid()], "x509_svid_ttl": 3600}],
        },
        "children": {
            "spire_servers": {"hosts": {"server1": dict(
                local,
                spire_server_socket_path=server.socket,   # the CLI calls reach the test's server
                spire_server_bind_port=server.port,
                spire_server_node_attestors=["join_token", "x509pop", "sshpop"],
                spire_server_upstream_root_ca=True,
                # A secret server.conf refers to: it must reach only server.env (0600).
                spire_server_environment={"SPIRE_TEST_ORG": SECRET},
                spire_server_config={"ca_subject": {"organization": ["${SPIRE_TEST_ORG}"]}},
            )}},
            "spire_agents": {"vars": {"spire_agent_server_address": "127.0.0.1",
                                      "spire_agent_server_port": server.port},
                             "hosts": agents},
        },
    }}
    inv_path = tmp_path / "inventory.yml"
    inv_path.write_text(yaml.safe_dump(inventory, sort_keys=False))
    return server, opt, inv_path, tmp_path, inventory


def start_agent(opt: Path, tmp: Path, name: str, env_file: Path | None, monkeypatch):
    conf = tmp / name / "conf" / "agent.conf"
    args = [str(opt / "bin" / "spire-agent"), "run", "-config", str(conf)]
    if env_file is not None:
        key, _, value = env_file.read_text().strip().partition("=")
        monkeypatch.setenv(key, value)
        args.insert(2, "-expandEnv")
    proc = harness.Proc(args, tmp / f"{name}.log").start()
    return proc


@pytest.mark.timeout(480)
def test_site_playbook_deploys_attests_and_is_idempotent(site, monkeypatch):
    server, opt, inv, tmp, inventory = site

    checked = ansible_playbook("spire_py.spire.site", inv, *ONE_BY_ONE, "--check", "--diff", cwd=tmp).check()
    assert checked.changed() > 0
    assert not opt.exists(), "check mode installed something"
    assert json.loads(server.cli("entry", "show", "-output", "json").stdout).get("entries") in (None, [])

    first = ansible_playbook("spire_py.spire.site", inv, *ONE_BY_ONE, cwd=tmp).check()
    recap = first.recap()
    assert set(recap) == {"server1", *AGENTS}, first.out
    assert (opt / "current").is_symlink() and (opt / "bin" / "spire-server").exists()

    # The confs on disk are the ones the CLIs validated; check again, explicitly.
    ok = subprocess.run([str(opt / "bin" / "spire-server"), "validate", "-config",
                         str(opt / "conf" / "server" / "server.conf")], capture_output=True, text=True)
    assert ok.returncode == 0, ok.stderr
    server_conf = (opt / "conf" / "server" / "server.conf").read_text()
    for needle in ('NodeAttestor "x509pop"', 'NodeAttestor "sshpop"', 'UpstreamAuthority "disk"', "insecure_bootstrap"):
        assert (needle in server_conf) == (needle != "insecure_bootstrap"), needle
    # Secrets: server.conf says ${SPIRE_TEST_ORG}, server.env (0600) holds it, no output shows it.
    assert "${SPIRE_TEST_ORG}" in server_conf and SECRET not in server_conf
    server_env = opt / "conf" / "server" / "server.env"
    assert oct(server_env.stat().st_mode & 0o777) == "0o600" and SECRET in server_env.read_text()
    assert SECRET not in checked.out and SECRET not in first.out
    for name in AGENTS:
        conf = tmp / name / "conf" / "agent.conf"
        args = [str(opt / "bin" / "spire-agent"), "validate", "-config", str(conf)]
        assert subprocess.run(args, capture_output=True, text=True).returncode == 0, conf.read_text()
        assert "insecure_bootstrap" not in conf.read_text()

    # The join token reached the agent through its env file only (0600), never agent.conf.
    env_file = tmp / "agent-jt" / "conf" / "join_token.env"
    assert oct(env_file.stat().st_mode & 0o777) == "0o600"
    token = env_file.read_text().strip().split("=", 1)[1]
    assert token and token not in first.out
    assert token not in (tmp / "agent-jt" / "conf" / "agent.conf").read_text()

    # Agents run from the rendered files (systemd's part, done by hand here) attest to the server.
    procs = [start_agent(opt, tmp, "agent-jt", env_file, monkeypatch),
             start_agent(opt, tmp, "agent-x5", None, monkeypatch),
             start_agent(opt, tmp, "agent-ssh", None, monkeypatch)]
    try:
        for name, proc in zip(AGENTS, procs):
            sock = inventory["all"]["children"]["spire_agents"]["hosts"][name]["spire_agent_socket_path"]
            healthy = lambda: subprocess.run(  # noqa: E731
                [str(opt / "bin" / "spire-agent"), "healthcheck", "-socketPath", sock],
                capture_output=True).returncode == 0
            harness.wait_for(lambda: healthy() or not proc.alive(), 60, f"{name} healthcheck")
            assert proc.alive() and healthy(), proc.logs()
            assert (tmp / name / "data" / "agent_svid.der").exists()
        agents = json.loads(server.cli("agent", "list", "-output", "json").stdout).get("agents") or []
        assert len(agents) == 3, agents

        entries = json.loads(server.cli("entry", "show", "-output", "json").stdout).get("entries") or []
        ids = {e["spiffe_id"]["path"] for e in entries}
        assert {"/web", "/host/agent-jt", "/host/agent-x5"} <= ids, ids

        # Without systemd the role cannot see the agent attest during the first run (the agents
        # were started by hand above), so the second run removes the now-used token file: that
        # is its one change, and the file is gone.
        second = ansible_playbook("spire_py.spire.site", inv, *ONE_BY_ONE, "--diff", cwd=tmp).check()
        changed_tasks = re.findall(r"TASK \[([^\]]+)\][^\n]*\n(?:(?!TASK \[).*\n)*?changed: ", second.out)
        assert second.changed() == 1 and changed_tasks == ["spire_py.spire.agent : Remove a used join token"], \
            second.out
        assert not env_file.exists()
        assert SECRET not in second.out
    finally:
        for proc in procs:
            proc.stop()
