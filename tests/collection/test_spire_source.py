"""spire_source: a reproducible archive of the Python package carried by the collection."""

import tarfile

import pytest

pytest.importorskip("ansible")

from conftest import ROOT  # noqa: E402

from ansible_collections.spire_py.spire.plugins.lookup.spire_source import LookupModule, pack  # noqa: E402


def test_archive_is_reproducible_and_holds_the_package(tmp_path):
    first, version = pack(str(ROOT))
    second, _ = pack(str(ROOT))
    assert first == second
    path = tmp_path / "a.tar.gz"
    path.write_bytes(first)
    names = tarfile.open(path).getnames()
    prefix = "spire_py-%s/" % version
    assert prefix + "pyproject.toml" in names
    assert prefix + "src/spire_py/__init__.py" in names
    assert not [n for n in names if "__pycache__" in n or n.endswith(".pyc")]


def make_lookup(cache_dir):
    """The plugin without Ansible's loader: options come straight from the test."""
    lookup = LookupModule()
    lookup.set_options = lambda var_options=None, direct=None: None
    lookup.get_option = lambda name: {"cache_dir": str(cache_dir)}[name]
    return lookup


def test_lookup_caches_by_content(tmp_path):
    lookup = make_lookup(tmp_path)
    [one] = lookup.run([str(ROOT)], variables={})
    [two] = lookup.run([str(ROOT)], variables={})
    assert one == two and one["release"].startswith(one["version"] + "-")
    assert len(list(tmp_path.iterdir())) == 1


def test_lookup_refuses_a_directory_without_the_package(tmp_path):
    from ansible.errors import AnsibleLookupError

    with pytest.raises(AnsibleLookupError, match="pyproject.toml"):
        make_lookup(tmp_path / "c").run([str(tmp_path)], variables={})
