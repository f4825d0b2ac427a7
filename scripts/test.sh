#!/usr/bin/env bash
# Installs what the tests need and runs them. Arguments go to pytest, e.g.
#   scripts/test.sh tests/unit -q        only the unit tests
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/install.sh --test
set +e
.venv/bin/python -m pytest "${@:--q}"
rc=$?
set -e
if [ "$rc" -eq 5 ]; then
  echo "pytest collected no tests: that is a failure here" >&2
  exit 1
fi
exit "$rc"
