"""The layers: agent and server sit side by side on common, and the server's API services share
helpers (convert, status, auth) rather than one another. Imports inside functions count too."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

import spire_py

ROOT = Path(spire_py.__file__).parent
SERVICES = {f"spire_py.server.api.{name}" for name in ("agent", "bundle", "entry", "svid", "health")}


def module_name(path: Path) -> str:
    parts = ("spire_py",) + path.relative_to(ROOT).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def imported(source: str, module: str, is_package: bool = False) -> set[str]:
    """Every module ``source`` imports, relative imports resolved, ``from m import n`` as m and m.n."""
    package = module.split(".") if is_package else module.split(".")[:-1]
    out: set[str] = set()
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.Import):
            out.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                base = ".".join(package[: len(package) - node.level + 1] + ([base] if base else []))
            out.add(base)
            out.update(f"{base}.{alias.name}" for alias in node.names)
    return out


def modules_under(*packages: str) -> dict[str, set[str]]:
    found = {}
    for package in packages:
        for path in sorted((ROOT / package).rglob("*.py")):
            name = module_name(path)
            found[name] = imported(path.read_text(), name, path.name == "__init__.py")
    return found


def offenders(packages: tuple[str, ...], forbidden: tuple[str, ...]) -> list[str]:
    return [
        f"{module} imports {target}"
        for module, targets in modules_under(*packages).items()
        for target in sorted(targets)
        if any(target == f or target.startswith(f + ".") for f in forbidden)
    ]


def test_agent_imports_nothing_from_the_server() -> None:
    assert offenders(("agent",), ("spire_py.server",)) == []


def test_server_imports_nothing_from_the_agent() -> None:
    assert offenders(("server",), ("spire_py.agent",)) == []


def test_common_imports_neither_the_agent_nor_the_server() -> None:
    assert offenders(("common",), ("spire_py.agent", "spire_py.server")) == []


def test_api_services_do_not_import_each_other() -> None:
    graph = modules_under("server/api")
    assert SERVICES <= graph.keys()
    found = [f"{m} imports {t}" for m in sorted(SERVICES) for t in sorted(graph[m] & (SERVICES - {m}))]
    assert found == []


@pytest.mark.parametrize(
    ("source", "module", "is_package", "expected"),
    [
        ("from ..server.datastore.models import Entry", "spire_py.agent.sync", False,
         "spire_py.server.datastore.models"),
        ("from ... import server", "spire_py.agent.workloadapi.handler", False, "spire_py.server"),
        ("import spire_py.server.core", "spire_py.agent.agent", False, "spire_py.server.core"),
        ("from .agent import parse_csr", "spire_py.server.api.svid", False, "spire_py.server.api.agent"),
        ("from . import entry", "spire_py.server.api", True, "spire_py.server.api.entry"),
        ("def f():\n    from ..server.api.health import HealthService\n", "spire_py.agent.agent", False,
         "spire_py.server.api.health"),
    ],
)
def test_the_checker_sees_a_forbidden_import(source: str, module: str, is_package: bool, expected: str) -> None:
    assert expected in imported(source, module, is_package)


def test_the_checker_does_not_mistake_a_sibling_for_the_server() -> None:
    # spire_py.proto.spire.api.server is generated protobuf code, not the server package.
    found = imported("from ..proto.spire.api.server.entry.v1 import entry_pb2", "spire_py.agent.sync")
    assert not any(t == "spire_py.server" or t.startswith("spire_py.server.") for t in found)
