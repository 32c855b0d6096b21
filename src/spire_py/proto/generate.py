"""Regenerate the Python modules from our .proto files.

    python -m spire_py.proto.generate          # rewrite the generated files in the tree
    python -m spire_py.proto.generate --check  # exit 1 if the tree is stale

Every .proto under src/spire_py/proto is compiled with include root ``src`` into
``*_pb2.py``, ``*_pb2.pyi`` and (grpclib) ``*_grpc.py`` next to it, so imports
read ``spire_py.proto.spire.api.types.entry_pb2``.
"""

from __future__ import annotations

import argparse
import filecmp
import shutil
import sys
import tempfile
from importlib import resources
from pathlib import Path

PROTO_DIR = Path(__file__).resolve().parent
SRC_DIR = PROTO_DIR.parent.parent
GENERATED_SUFFIXES = ("_pb2.py", "_pb2.pyi", "_grpc.py")

# Services whose gRPC path is not "<proto package>.<Service>". Their .proto files
# use a package that cannot clash in protobuf's default descriptor pool with
# copies other libraries load (py-spiffe's package-less workload.proto,
# grpclib's grpc.health.v1), and the paths are put back to the wire names here.
WIRE_SERVICE_NAMES = {
    "SpiffeWorkloadAPI.SpiffeWorkloadAPI": "SpiffeWorkloadAPI",
    "spire_py.grpc.health.v1.Health": "grpc.health.v1.Health",
}


class GenerateError(Exception):
    """protoc failed or its output was not what the rewrite step expects."""


def proto_files() -> list[Path]:
    return sorted(PROTO_DIR.rglob("*.proto"))


def _grpclib_plugin() -> str:
    beside = Path(sys.executable).parent / "protoc-gen-grpclib_python"
    if beside.exists():
        return str(beside)
    found = shutil.which("protoc-gen-grpclib_python")
    if found is None:
        raise GenerateError("protoc-gen-grpclib_python not found (is grpclib installed?)")
    return found


def _run_protoc(out_dir: Path) -> None:
    from grpc_tools import protoc  # build-time dependency only

    well_known = str(resources.files("grpc_tools") / "_proto")
    args = [
        "grpc_tools.protoc",
        f"--proto_path={SRC_DIR}",
        f"--proto_path={well_known}",
        f"--plugin=protoc-gen-grpclib_python={_grpclib_plugin()}",
        f"--python_out={out_dir}",
        f"--pyi_out={out_dir}",
        f"--grpclib_python_out={out_dir}",
        *(str(p.relative_to(SRC_DIR)) for p in proto_files()),
    ]
    if protoc.main(args) != 0:
        raise GenerateError("protoc failed (see messages above)")


def _rewrite_service_paths(out_proto_dir: Path) -> None:
    seen: set[str] = set()
    for module in sorted(out_proto_dir.rglob("*_grpc.py")):
        text = module.read_text()
        new = text
        for proto_name, wire_name in WIRE_SERVICE_NAMES.items():
            if f"'/{proto_name}/" in new:
                seen.add(proto_name)
                new = new.replace(f"'/{proto_name}/", f"'/{wire_name}/")
        if new != text:
            module.write_text(new)
    missing = sorted(set(WIRE_SERVICE_NAMES) - seen)
    if missing:
        raise GenerateError(f"no grpclib paths found to rewrite for: {', '.join(missing)}")


def _package_dirs(root: Path) -> list[Path]:
    return [root, *sorted(d for d in root.rglob("*") if d.is_dir() and d.name != "__pycache__")]


def generate(out_src_dir: Path) -> Path:
    """Generate into ``out_src_dir``/spire_py/proto and return that directory."""
    _run_protoc(out_src_dir)
    out_proto_dir = out_src_dir / PROTO_DIR.relative_to(SRC_DIR)
    _rewrite_service_paths(out_proto_dir)
    return out_proto_dir


def _generated(root: Path) -> set[Path]:
    return {
        p.relative_to(root)
        for p in root.rglob("*")
        if p.is_file() and p.name.endswith(GENERATED_SUFFIXES)
    }


def check() -> list[str]:
    """Problems that make the tree differ from a fresh generation (empty if fresh)."""
    problems = []
    with tempfile.TemporaryDirectory() as tmp:
        fresh_dir = generate(Path(tmp))
        fresh, tree = _generated(fresh_dir), _generated(PROTO_DIR)
        for rel in sorted(fresh):
            target = PROTO_DIR / rel
            if rel not in tree:
                problems.append(f"missing: {rel}")
            elif not filecmp.cmp(fresh_dir / rel, target, shallow=False):
                problems.append(f"differs: {rel}")
        problems += [f"stale (no .proto): {rel}" for rel in sorted(tree - fresh)]
    for d in _package_dirs(PROTO_DIR):
        if not (d / "__init__.py").exists():
            problems.append(f"missing: {(d / '__init__.py').relative_to(PROTO_DIR)}")
    return problems


def write() -> None:
    for stale in _generated(PROTO_DIR):
        (PROTO_DIR / stale).unlink()
    generate(SRC_DIR)
    for d in _package_dirs(PROTO_DIR):
        (d / "__init__.py").touch(exist_ok=True)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m spire_py.proto.generate", description=__doc__.split("\n")[0])
    parser.add_argument("--check", action="store_true", help="only report generated files that are stale or missing")
    args = parser.parse_args(argv)
    try:
        if args.check:
            problems = check()
            for line in problems:
                print(f"spire_py/proto: {line}", file=sys.stderr)
            if problems:
                print("generated protobuf modules are stale; run `make proto`", file=sys.stderr)
                return 1
            return 0
        write()
    except GenerateError as exc:
        print(f"generate: {exc}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
