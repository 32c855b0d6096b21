"""The built collection carries the Python package, and installs and runs from the tarball."""

from __future__ import annotations

import os
import subprocess
import sys
import tarfile
from pathlib import Path

import pytest

pytest.importorskip("ansible")

from conftest import ROOT  # noqa: E402

BIN = Path(sys.executable).parent


def galaxy(*args, cwd):
    env = dict(os.environ, ANSIBLE_NOCOLOR="1")
    proc = subprocess.run([str(BIN / "ansible-galaxy"), "collection", *args], cwd=cwd, env=env,
                          capture_output=True, text=True, timeout=180)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    return proc.stdout


@pytest.fixture(scope="module")
def tarball(tmp_path_factory):
    out = tmp_path_factory.mktemp("build")
    galaxy("build", "--output-path", str(out), str(ROOT), cwd=out)
    [path] = out.glob("spire_py-spire-*.tar.gz")
    return path


def test_tarball_carries_the_python_package_and_no_dev_files(tarball):
    names = set(tarfile.open(tarball).getnames())
    for required in ("pyproject.toml", "README.md", "src/spire_py/__init__.py", "src/spire_py/server/cli/main.py",
                     "MANIFEST.json", "meta/runtime.yml", "playbooks/site.yml",
                     "roles/server/meta/argument_specs.yml", "roles/agent/meta/argument_specs.yml",
                     "plugins/modules/entry.py", "plugins/filter/to_hcl.py", "changelogs/changelog.yaml",
                     "LICENSE", "CHANGELOG.rst", "roles/install/files/constraints.txt", "playbooks/upgrade.yml",
                     "playbooks/tasks/backup.yml", "examples/ha-postgres/inventory.yml"):
        assert required in names, required
    leaked = [n for n in names if n.startswith((".venv", ".git/", ".pytest_cache", "tests/output"))
              or "__pycache__" in n or n.endswith(".pyc") or n == "benchmarks/results.json"]
    assert not leaked, leaked


def test_installed_collection_finds_its_package_and_site_playbook(tarball, tmp_path):
    galaxy("install", "--force", "-p", str(tmp_path), str(tarball), cwd=tmp_path)
    installed = tmp_path / "ansible_collections" / "spire_py" / "spire"
    assert (installed / "src" / "spire_py" / "__init__.py").exists()
    env = dict(os.environ, ANSIBLE_COLLECTIONS_PATH=str(tmp_path), ANSIBLE_NOCOLOR="1")
    (tmp_path / "inv.ini").write_text("[spire_servers]\ns1 ansible_connection=local ansible_become=false\n[spire_agents]\na1 ansible_connection=local ansible_become=false\n")
    proc = subprocess.run([str(BIN / "ansible-playbook"), "-i", "inv.ini", "spire_py.spire.site", "--syntax-check"],
                          cwd=tmp_path, env=env, capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    # The install role packs the package relative to its own path in the installed collection.
    play = tmp_path / "pack.yml"
    play.write_text(
        "- hosts: s1\n  gather_facts: false\n  tasks:\n"
        "    - ansible.builtin.debug:\n"
        "        msg: \"{{ lookup('spire_py.spire.spire_source', '%s') }}\"\n" % installed)
    proc = subprocess.run([str(BIN / "ansible-playbook"), "-i", "inv.ini", str(play)],
                          cwd=tmp_path, env=dict(env, ANSIBLE_PYTHON_INTERPRETER=sys.executable),
                          capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0 and '"release": "0.' in proc.stdout, proc.stdout + proc.stderr
