"""The systemd units: Type=notify, the spire user, hardening, sockets under RuntimeDirectory,
scored by `systemd-analyze security --offline=true` (a gate, without a running systemd)."""

from __future__ import annotations

import shutil
import subprocess

import pytest
import yaml

pytest.importorskip("ansible")

from conftest import ROOT, harness  # noqa: E402
from playbook import ansible_playbook  # noqa: E402

# Exposure scores (0 = locked down, 10 = unprotected); SPIRE's example units score about 6.4.
SERVER_THRESHOLD = 15  # systemd-analyze's --threshold is in tenths: 1.5 (the unit scores 1.3)
AGENT_THRESHOLD = 20   # 2.0 (scores 1.6): the agent must see other processes' /proc (no ProtectProc/PrivateUsers)


@pytest.fixture(scope="module")
def units(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("units")
    common = {"spire_user": "spire", "spire_group": "spire", "spire_install_dir": "/opt/spire"}
    play = [{"hosts": "local", "gather_facts": False, "vars": common, "tasks": [
        {"name": "include role defaults", "ansible.builtin.include_vars": {"file": str(ROOT / "roles" / role / "defaults" / "main.yml")}}
        for role in ("server", "agent")] + [
        {"name": "include role vars", "ansible.builtin.include_vars": {"file": str(ROOT / "roles" / role / "vars" / "main.yml")}}
        for role in ("server", "agent")] + [
        {"name": "server unit", "ansible.builtin.template": {
            "src": str(ROOT / "roles/server/templates/spire-server.service.j2"), "dest": str(tmp / "spire-server.service"), "mode": "0644"}},
        {"name": "agent unit", "ansible.builtin.template": {
            "src": str(ROOT / "roles/agent/templates/spire-agent.service.j2"), "dest": str(tmp / "spire-agent.service"), "mode": "0644"}},
    ]}]
    (tmp / "play.yml").write_text(yaml.safe_dump(play))
    (tmp / "inv.yml").write_text(yaml.safe_dump({"all": {"hosts": {"local": {
        "ansible_connection": "local", "ansible_become": False, "ansible_python_interpreter": harness.sys.executable}}}}))
    ansible_playbook(str(tmp / "play.yml"), tmp / "inv.yml", cwd=tmp).check()
    return tmp


def directives(path):
    out = {}
    for line in path.read_text().splitlines():
        if "=" in line and not line.startswith("#"):
            key, _, value = line.partition("=")
            out.setdefault(key, []).append(value)
    return out


@pytest.mark.parametrize("name,runtime,socket_mode", [
    ("spire-server", "spire-server/private", "0750"),
    ("spire-agent", "spire/agent/public", "0755"),
])
def test_units_are_notify_unprivileged_hardened(units, name, runtime, socket_mode):
    d = directives(units / f"{name}.service")
    for key, value in {"Type": "notify", "User": "spire", "Group": "spire", "Restart": "on-failure",
                       "NoNewPrivileges": "yes", "ProtectSystem": "strict", "ProtectHome": "yes",
                       "PrivateTmp": "yes", "RuntimeDirectory": runtime, "RuntimeDirectoryMode": socket_mode,
                       "LimitNOFILE": "65536"}.items():
        assert d.get(key) == [value], (key, d.get(key))
    assert d["ReadWritePaths"] == ["/opt/spire/data/" + name.split("-")[1]]
    assert d["ExecStart"][0].startswith(f"/opt/spire/bin/{name} run ")
    assert "joinToken" not in d["ExecStart"][0], "a join token must never be on the command line"


def test_agent_unit_lets_the_unix_attestor_see_processes(units):
    d = directives(units / "spire-agent.service")
    assert "ProtectProc" not in d and "ProcSubset" not in d and "PrivateUsers" not in d
    assert d["RuntimeDirectoryPreserve"] == ["yes"]
    assert d["EnvironmentFile"] == ["-/opt/spire/conf/agent/join_token.env"]


@pytest.mark.skipif(shutil.which("systemd-analyze") is None, reason="systemd-analyze is not installed")
@pytest.mark.parametrize("name,threshold", [("spire-server", SERVER_THRESHOLD), ("spire-agent", AGENT_THRESHOLD)])
def test_systemd_analyze_security_scores_the_units(units, name, threshold):
    proc = subprocess.run(["systemd-analyze", "security", "--offline=true", f"--threshold={threshold}",
                           "--no-pager", str(units / f"{name}.service")], capture_output=True, text=True)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr
