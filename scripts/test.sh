#!/usr/bin/env bash
# Everything CI runs. Exits non-zero on any failure; "no tests collected" is a failure too.
set -euo pipefail
cd "$(dirname "$0")/.."
VPY=${VPY:-.venv/bin/python}
rc=0
"$VPY" -m pytest -q -p no:cacheprovider tests "$@" || rc=$?
if [ "$rc" -eq 5 ]; then
  echo "no tests were collected: failing" >&2
  exit 1
fi
exit "$rc"
