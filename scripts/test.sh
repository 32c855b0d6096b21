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
echo "== types: mypy on src/spire_py (config in pyproject.toml; generated proto/ excluded)"
"$VPY" -m mypy

echo "== databases: scratch PostgreSQL and MariaDB on 127.0.0.1 for the DataStore tests"
if db_env=$(bash scripts/databases.sh start); then
  eval "$db_env"
  trap 'bash scripts/databases.sh stop >/dev/null 2>&1 || true' EXIT
fi
for var in SPIRE_PY_TEST_POSTGRES SPIRE_PY_TEST_MYSQL; do
  [ -n "${!var:-}" ] || echo "$var is not set: the tests on that database are skipped (reason above)"
done
echo "   databases ready after $(( $(date +%s) - start ))s"

echo "== product: unit and integration tests (DataStore suites on sqlite3, postgres, mysql)"
pytest_or_fail tests/unit tests/integration

echo "== collection: sanity, lint, module and playbook tests"
bash scripts/collection-test.sh

echo "== fleet: the default Molecule scenario on real systemd hosts (podman; skipped with a reason unless root)"
bash scripts/fleet.sh ci

echo "== image: the container image built and run (server, agent, workload under podman; skipped with a reason unless root)"
bash scripts/image-smoke.sh ci

echo "== make test finished in $(( $(date +%s) - start ))s"
