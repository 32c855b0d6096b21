"""Make the collection importable as ansible_collections.spire_py.spire and run modules in-process.

The repository root is the collection root. When the tests run from a copy under
.../ansible_collections/spire_py/spire (scripts/collection-test.sh), that copy is used;
from the repository, a symlink tree in a temp dir gives Python the same import path.
"""

from __future__ import annotations

import io
import json
import os
import sys
import tempfile
from contextlib import redirect_stdout
from pathlib import Path
from typing import Any

import pytest

ROOT = Path(__file__).resolve().parents[2]


def _collection_parent() -> Path:
    if ROOT.parent.name == "spire_py" and ROOT.parent.parent.name == "ansible_collections":
        return ROOT.parent.parent.parent
    base = Path(tempfile.mkdtemp(prefix="spire-collection-"))
    (base / "ansible_collections" / "spire_py").mkdir(parents=True)
    (base / "ansible_collections" / "spire_py" / "spire").symlink_to(ROOT)
    return base


COLLECTIONS_PARENT = _collection_parent()
sys.path.insert(0, str(COLLECTIONS_PARENT))
os.environ.setdefault("ANSIBLE_COLLECTIONS_PATH", str(COLLECTIONS_PARENT))


class ModuleExit(Exception):
    pass


def run_module(module: Any, args: dict[str, Any], check_mode: bool = False, diff: bool = False) -> dict[str, Any]:
    """Run a module's main() in-process; return its JSON result (failed=True on fail_json)."""
    pytest.importorskip("ansible")
    from ansible.module_utils import basic

    full = dict(args, _ansible_check_mode=check_mode, _ansible_diff=diff)
    out = io.StringIO()
    try:
        from ansible.module_utils.testing import patch_module_args
    except ImportError:  # ansible-core < 2.19
        patch_module_args = None
    try:
        with redirect_stdout(out):
            if patch_module_args is not None:
                with patch_module_args(full):
                    module.main()
            else:
                basic._ANSIBLE_ARGS = json.dumps({"ANSIBLE_MODULE_ARGS": full}).encode()
                module.main()
    except SystemExit:
        pass
    text = out.getvalue().strip()
    assert text, "the module printed nothing"
    return json.loads(text.splitlines()[-1])


@pytest.fixture
def module_runner():
    return run_module


# The integration harness (a real spire-server on loopback) is reused as is. It is loaded by
# path: the collection's tests run from a copy of the repository where ``tests`` is not a
# package on sys.path. The fixtures wrap its factories as tests/integration/conftest.py does.
HARNESS = ROOT / "tests" / "integration" / "helpers" / "harness.py"


def _load_integration_harness():
    import importlib.util

    if not HARNESS.exists():
        return None
    spec = importlib.util.spec_from_file_location("spire_integration_harness", HARNESS)
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses look their module up there
    spec.loader.exec_module(module)
    return module


harness = _load_integration_harness()
if harness is not None:

    @pytest.fixture
    def make_server(tmp_path: Path):
        with harness.server_factory(tmp_path) as factory:
            yield factory

    @pytest.fixture
    def spire_server(make_server):
        return make_server()
