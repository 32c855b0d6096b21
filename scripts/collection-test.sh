#!/usr/bin/env bash
# The Ansible collection's checks: ansible-test sanity, ansible-lint (production profile)
# and pytest tests/collection (module_utils units, modules in-process, playbooks with
# connection=local against a real spire-server). Called by scripts/test.sh.
#
# ansible-test only runs from a directory ending in ansible_collections/<ns>/<name>/ (a
# real one, not a symlink), so the collection is copied (rsync) into a temp tree.
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT=$(pwd)
VPY=${VPY:-$ROOT/.venv/bin/python}
VBIN=$(dirname "$VPY")

# 1. Tools: ansible-core 2.19 (the newest for Python 3.11) and ansible-lint, in the project venv.
if ! "$VPY" -c 'import ansible, ansiblelint, ansible_test, kubernetes_validate' 2>/dev/null; then
  "$VPY" -m pip install -q -r tests/collection/requirements.txt
fi
# systemd-analyze scores the unit files (tests/collection/test_units.py).
if ! command -v systemd-analyze >/dev/null 2>&1 && [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then
  apt-get update -qq >/dev/null 2>&1 || true
  apt-get install -y -qq systemd >/dev/null 2>&1 || echo "systemd-analyze unavailable: unit scoring will be skipped" >&2
fi

# kubernetes.core (playbooks/kubernetes.yml applies with it): from the `ansible` package on PyPI,
# as scripts/fleet.sh takes containers.podman, cached outside the work tree. Lint resolves its
# modules, and the playbook tests find it through ANSIBLE_COLLECTIONS_PATH.
ANSIBLE_PKG_VERSION=${SPIRE_FLEET_ANSIBLE_PKG:-12.3.0}
EXTRA_COLLECTIONS=${XDG_CACHE_HOME:-${HOME:-/root}/.cache}/spire_py-collections/ansible-$ANSIBLE_PKG_VERSION
if [ ! -f "$EXTRA_COLLECTIONS/ansible_collections/kubernetes/core/MANIFEST.json" ]; then
  dl=$(mktemp -d)
  if "$VPY" -m pip download -q --no-deps -d "$dl" "ansible==$ANSIBLE_PKG_VERSION" >/dev/null 2>&1; then
    rm -rf "$EXTRA_COLLECTIONS" && mkdir -p "$EXTRA_COLLECTIONS"
    "$VPY" - "$dl"/ansible-*.whl "$EXTRA_COLLECTIONS" <<'PY'
import sys, zipfile
with zipfile.ZipFile(sys.argv[1]) as zf:
    zf.extractall(sys.argv[2], [n for n in zf.namelist() if n.startswith("ansible_collections/kubernetes/core/")])
PY
  else
    echo "kubernetes.core unavailable (pip download ansible==$ANSIBLE_PKG_VERSION failed): lint cannot resolve its modules" >&2
  fi
  rm -rf "$dl"
fi
export SPIRE_PY_EXTRA_COLLECTIONS=$EXTRA_COLLECTIONS

if ! command -v rsync >/dev/null 2>&1; then
  if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then
    apt-get update -qq >/dev/null 2>&1 || true
    apt-get install -y -qq rsync >/dev/null
  else
    echo "collection-test.sh needs rsync" >&2
    exit 1
  fi
fi

WORK=$(mktemp -d "${TMPDIR:-/tmp}/spire_py-collection.XXXXXX")
trap 'rm -rf "$WORK"' EXIT

copy_tree() {  # copy_tree DEST [extra rsync excludes...]
  local dest=$1; shift
  mkdir -p "$dest"
  local excludes=(--exclude .git --exclude .venv --exclude __pycache__ --exclude '*.pyc' --exclude .pytest_cache
                  --exclude .mypy_cache --exclude tests/output --exclude '*.tar.gz' --exclude '*.egg-info' "$@")
  rsync -a --delete "${excludes[@]}" "$ROOT"/ "$dest"/
}

# 2. ansible-test sanity on the Ansible content. The Python package (src/), its tests,
#    benchmarks and scripts are the daemon's code, checked by its own suite, not Ansible content;
#    so are the Kubernetes manifests (deploy/: multi-document YAML that sanity's yamllint refuses,
#    checked against the Kubernetes schemas by tests/collection/test_kubernetes_manifests.py).
SANITY=$WORK/sanity/ansible_collections/spire_py/spire
copy_tree "$SANITY" --exclude /src --exclude /tests --exclude /benchmarks --exclude /scripts --exclude /.ci \
  --exclude /conf --exclude /Makefile --exclude /pyproject.toml --exclude /deploy --exclude /Containerfile \
  --exclude /.containerignore
ANSIBLE_VERSION=$("$VPY" -c 'from ansible.release import __version__ as v; print(".".join(v.split(".")[:2]))')
mkdir -p "$SANITY/tests/sanity"
if [ -f "tests/collection/sanity/ignore-$ANSIBLE_VERSION.txt" ]; then
  cp "tests/collection/sanity/ignore-$ANSIBLE_VERSION.txt" "$SANITY/tests/sanity/"
fi
# ansible-test --venv downloads a pip bootstrap script from a host CI cannot reach; a
# stand-in in its cache does the same job with ensurepip (written below).
PIP_VERSION=$("$VPY" - <<'PY'
import inspect, re
from ansible_test._internal import python_requirements
print(re.search(r"pip='([0-9.]+)'", inspect.getsource(python_requirements)).group(1))
PY
)
mkdir -p "$HOME/.ansible/test/cache"
cat > "$HOME/.ansible/test/cache/get_pip_${PIP_VERSION//./_}.py" <<'STANDIN'
"""Stand-in for the pip bootstrap script ansible-test downloads (this machine cannot reach its host).

ansible-test runs it as `python get_pip_<ver>.py <pip install args>`: bootstrap pip with
ensurepip, then install what was asked. ensurepip points PIP_CONFIG_FILE at /dev/null,
which would drop the machine's pip settings (certificates, mirrors), so it is removed.
"""
import os
import subprocess
import sys

subprocess.check_call([sys.executable, "-m", "ensurepip", "--upgrade", "--default-pip"])
env = dict(os.environ)
env.pop("PIP_CONFIG_FILE", None)
args = [a for a in sys.argv[1:] if a not in ("--no-setuptools", "--no-wheel")]
if args:
    sys.exit(subprocess.call([sys.executable, "-m", "pip", "install", "--disable-pip-version-check"] + args, env=env))
STANDIN
PYVER=$("$VPY" -c 'import sys; print("%d.%d" % sys.version_info[:2])')
echo "== ansible-test sanity (ansible-core $ANSIBLE_VERSION, Python $PYVER)"
(cd "$SANITY" && PATH="$VBIN:$PATH" "$VBIN/ansible-test" sanity --venv --python "$PYVER" --color no)

# 3. ansible-lint, production profile, on the whole collection (.ansible-lint excludes src/ and tests/).
FULL=$WORK/full/ansible_collections/spire_py/spire
copy_tree "$FULL"
echo "== ansible-lint --offline --profile production"
# ANSIBLE_HOME of its own: a copy of this collection installed under ~/.ansible/collections
# (by an earlier `ansible-galaxy collection install`) would otherwise shadow the one under test.
mkdir -p "$WORK/ansible-home"
(cd "$FULL" && ANSIBLE_HOME="$WORK/ansible-home" ANSIBLE_COLLECTIONS_PATH="$WORK/full:$EXTRA_COLLECTIONS" PATH="$VBIN:$PATH" "$VBIN/ansible-lint" --offline --profile production --nocolor)

# 4. pytest tests/collection from the copy, so the collection imports as ansible_collections.spire_py.spire.
echo "== pytest tests/collection"
rc=0
(cd "$FULL" && ANSIBLE_COLLECTIONS_PATH="$WORK/full" PATH="$VBIN:$PATH" "$VPY" -m pytest -q -p no:cacheprovider tests/collection "$@") || rc=$?
if [ "$rc" -eq 5 ]; then
  echo "no collection tests were collected: failing" >&2
  exit 1
fi
exit "$rc"
