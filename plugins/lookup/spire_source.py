# -*- coding: utf-8 -*-
# Copyright (c) spire_py contributors
# Apache License 2.0 (see LICENSE or https://www.apache.org/licenses/LICENSE-2.0)

DOCUMENTATION = r"""
---
name: spire_source
short_description: Pack the spire_py Python package carried by this collection
version_added: "0.1.0"
author:
  - spire_py maintainers (@spire-py)
description:
  - Builds, on the controller, a reproducible source archive (C(pyproject.toml), C(README.md),
    C(src/spire_py)) of the Python package that ships inside the collection, so that the
    roles can copy one file to each host and C(pip install) it.
  - The archive is byte-for-byte the same for the same source (sorted entries, fixed
    timestamps and owners, no C(__pycache__)), so copying it is idempotent, and its
    SHA-256 names the release directory on hosts.
  - The archive is written once per content under O(cache_dir).
options:
  _terms:
    description: The source directory, the collection root (it holds C(pyproject.toml) and C(src/)).
    type: list
    elements: path
    required: true
  cache_dir:
    description: Where archives are kept on the controller.
    type: path
    default: ~/.ansible/tmp/spire_py-source
"""

EXAMPLES = r"""
- name: Pack the source once for the play
  ansible.builtin.set_fact:
    spire_source: "{{ lookup('spire_py.spire.spire_source', role_path ~ '/../..') }}"
"""

RETURN = r"""
_raw:
  description: One dict per term.
  type: list
  elements: dict
  contains:
    path:
      description: Path of the archive on the controller.
      type: str
    sha256:
      description: SHA-256 of the archive.
      type: str
    version:
      description: The package version from pyproject.toml.
      type: str
    release:
      description: C(<version>-<first 12 hex digits of sha256>), the release directory name.
      type: str
"""

import gzip
import hashlib
import io
import os
import re
import tarfile
import tempfile

from ansible.errors import AnsibleLookupError
from ansible.plugins.lookup import LookupBase

_SKIP_DIRS = {"__pycache__", ".mypy_cache", ".pytest_cache"}
_SKIP_SUFFIXES = (".pyc", ".pyo")
_VERSION = re.compile(r'(?m)^version\s*=\s*"([^"]+)"')


def _members(root):
    yield "pyproject.toml"
    if os.path.exists(os.path.join(root, "README.md")):
        yield "README.md"
    for base, dirs, names in os.walk(os.path.join(root, "src")):
        dirs[:] = sorted(d for d in dirs if d not in _SKIP_DIRS and not d.endswith(".egg-info"))
        for name in sorted(names):
            if not name.endswith(_SKIP_SUFFIXES):
                yield os.path.relpath(os.path.join(base, name), root)


def pack(root):
    """Return (archive bytes, version) for the package under root."""
    pyproject = os.path.join(root, "pyproject.toml")
    if not os.path.isfile(pyproject) or not os.path.isdir(os.path.join(root, "src")):
        raise AnsibleLookupError("%s does not hold pyproject.toml and src/: is it the spire_py.spire collection?" % root)
    with open(pyproject, encoding="utf-8") as handle:
        match = _VERSION.search(handle.read())
    if not match:
        raise AnsibleLookupError("no version in %s" % pyproject)
    version = match.group(1)
    raw = io.BytesIO()
    with tarfile.open(fileobj=raw, mode="w", format=tarfile.PAX_FORMAT) as tar:
        prefix = "spire_py-%s" % version
        for rel in sorted(_members(root)):
            with open(os.path.join(root, rel), "rb") as handle:
                data = handle.read()
            info = tarfile.TarInfo("%s/%s" % (prefix, rel))
            info.size = len(data)
            info.mode = 0o644
            info.mtime = 0
            info.uid = info.gid = 0
            info.uname = info.gname = "root"
            tar.addfile(info, io.BytesIO(data))
    out = io.BytesIO()
    with gzip.GzipFile(fileobj=out, mode="wb", mtime=0, filename="") as gz:
        gz.write(raw.getvalue())
    return out.getvalue(), version


class LookupModule(LookupBase):
    def run(self, terms, variables=None, **kwargs):
        self.set_options(var_options=variables, direct=kwargs)
        cache_dir = os.path.expanduser(self.get_option("cache_dir"))
        results = []
        for term in terms:
            root = os.path.realpath(os.path.expanduser(str(term)))
            data, version = pack(root)
            digest = hashlib.sha256(data).hexdigest()
            os.makedirs(cache_dir, mode=0o700, exist_ok=True)
            path = os.path.join(cache_dir, "spire_py-%s-%s.tar.gz" % (version, digest[:12]))
            if not os.path.exists(path):
                fd, tmp = tempfile.mkstemp(dir=cache_dir)
                with os.fdopen(fd, "wb") as handle:
                    handle.write(data)
                os.chmod(tmp, 0o644)
                os.rename(tmp, path)
            results.append({"path": path, "sha256": digest, "version": version,
                            "release": "%s-%s" % (version, digest[:12])})
        return results
