"""Server secrets stay out of server.conf and --diff: they go to server.env (0600), which the unit's
EnvironmentFile and validate-server-conf read, and server.conf refers to them as ${NAME}; a datastore
connection string holding a literal password is refused."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

pytest.importorskip("ansible")

from conftest import ROOT  # noqa: E402
from playbook import ansible_playbook  # noqa: E402

LITERAL = [
    "dbname=spire user=spire password=hunter2 host=db",
    "postgres://spire:hunter2@db:5432/spire",
    "spire:hunter2@tcp(db:3306)/spire?parseTime=true",
]
REFERENCED = [
    "dbname=spire user=spire password=${SPIRE_DB_PASSWORD} host=db",
    "postgres://spire:${SPIRE_DB_PASSWORD}@db:5432/spire",
    "spire:$SPIRE_DB_PASSWORD@tcp(db:3306)/spire",
    "/opt/spire/data/server/datastore.sqlite3",
    "dbname=spire user=spire host=db sslmode=verify-full",
]
TRICKY = 'a "quoted" $HOME `cmd` back\\slash \'single\' #hash'


def _play(tmp: Path, tasks: list) -> Path:
    role = ROOT / "roles"
    path = tmp / "play.yml"
    path.write_text(yaml.safe_dump([{
        "name": "server role variables", "hosts": "local", "gather_facts": False,
        "vars_files": [str(role / "install/defaults/main.yml"), str(role / "server/defaults/main.yml"),
                       str(role / "server/vars/main.yml")],
        "vars": {"groups": {"spire_servers": ["local"]}, "role_path": str(role / "server")},
        "tasks": tasks}]))
    return path


def _inventory(tmp: Path) -> Path:
    inv = tmp / "inv.yml"
    inv.write_text(yaml.safe_dump({"all": {"hosts": {"local": {
        "ansible_connection": "local", "ansible_become": False, "ansible_python_interpreter": sys.executable}}}}))
    return inv


def test_literal_datastore_passwords_are_detected(tmp_path: Path) -> None:
    strings = LITERAL + REFERENCED
    play = _play(tmp_path, [{
        "name": "verdicts", "ansible.builtin.debug": {"msg": "VERDICT {{ item }} => {{ spire_server_datastore_literal_password }}"},
        "loop": strings,
        "vars": {"spire_server_datastore": {"sql": {"plugin_data": {"database_type": "postgres",
                                                                   "connection_string": "{{ item }}"}}}}}])
    run = ansible_playbook(str(play), _inventory(tmp_path), cwd=tmp_path).check()
    for text in strings:
        assert f"VERDICT {text} => {text in LITERAL}" in run.out, (text, run.out[-3000:])


def test_server_env_file_reads_back_exactly_in_sh(tmp_path: Path) -> None:
    env_file = tmp_path / "server.env"
    play = _play(tmp_path, [{
        "name": "render server.env", "ansible.builtin.template": {
            "src": str(ROOT / "roles/server/templates/server.env.j2"), "dest": str(env_file), "mode": "0600"},
        "no_log": True,
        "vars": {"spire_server_environment": {"SPIRE_DB_PASSWORD": TRICKY, "OTHER": "plain"}}}])
    run = ansible_playbook(str(play), _inventory(tmp_path), "--diff", cwd=tmp_path).check()
    assert "quoted" not in run.out
    assert oct(env_file.stat().st_mode & 0o777) == "0o600"
    # The same quoting rules as systemd's EnvironmentFile: double quotes with \ " $ ` escaped.
    out = subprocess.run(["sh", "-c", f"set -a; . '{env_file}'; set +a; "
                          "python3 -c 'import json, os; print(json.dumps([os.environ[\"SPIRE_DB_PASSWORD\"], os.environ[\"OTHER\"]]))'"],
                         capture_output=True, text=True, check=True).stdout
    assert json.loads(out) == [TRICKY, "plain"]


def test_unit_reads_server_env_and_expands_only_with_secrets(tmp_path: Path) -> None:
    tasks = [{"name": f"unit {name}", "ansible.builtin.template": {
        "src": str(ROOT / "roles/server/templates/spire-server.service.j2"), "dest": str(tmp_path / f"{name}.service"),
        "mode": "0644"}, "vars": {"spire_server_environment": env, "spire_user": "spire", "spire_group": "spire"}}
        for name, env in (("with", {"SPIRE_DB_PASSWORD": "x"}), ("without", {}))]
    ansible_playbook(str(_play(tmp_path, tasks)), _inventory(tmp_path), cwd=tmp_path).check()
    with_env = (tmp_path / "with.service").read_text()
    assert "EnvironmentFile=/opt/spire/conf/server/server.env" in with_env
    assert "run -expandEnv -config /opt/spire/conf/server/server.conf" in with_env
    without = (tmp_path / "without.service").read_text()
    assert "EnvironmentFile" not in without and "-expandEnv" not in without
