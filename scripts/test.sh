#!/usr/bin/env bash
# Everything CI runs (`make test`). Exits non-zero on any failure; "no tests collected" is a failure too.
set -euo pipefail
cd "$(dirname "$0")/.."
VPY=${VPY:-.venv/bin/python}
export PYTHONDONTWRITEBYTECODE=1

pytest_or_fail() {
  local rc=0
  "$VPY" -m pytest -q -p no:cacheprovider "$@" || rc=$?
  if [ "$rc" -eq 5 ]; then
    echo "no tests were collected in $*: failing" >&2
    return 1
  fi
  return "$rc"
}

start=$(date +%s)
echo "== product: unit and integration tests"
pytest_or_fail tests/unit tests/integration

echo "== collection: sanity, lint, module and playbook tests"
bash scripts/collection-test.sh

echo "== make test finished in $(( $(date +%s) - start ))s"
