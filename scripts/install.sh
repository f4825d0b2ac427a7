#!/usr/bin/env bash
# Installs replikv into ./.venv, and redis-cli (Debian's redis-tools) if it is missing;
# with --test, redis-benchmark and haproxy too.
#   scripts/install.sh          what running a cluster needs
#   scripts/install.sh --test   also what the tests need
set -euo pipefail
cd "$(dirname "$0")/.."

want_tests=0
[ "${1:-}" = "--test" ] && want_tests=1

python=${PYTHON:-python3}
if ! "$python" -c 'import sys; sys.exit(sys.version_info < (3, 11))' 2>/dev/null; then
  echo "replikv needs Python 3.11 or newer (found: $("$python" --version 2>&1)); set PYTHON=..." >&2
  exit 1
fi

if [ ! -x .venv/bin/python ]; then
  echo "==> creating .venv"
  "$python" -m venv .venv
fi

extras=""
[ "$want_tests" = 1 ] && extras="[test]"
echo "==> installing replikv${extras} into .venv"
.venv/bin/python -m pip install --quiet --disable-pip-version-check --upgrade pip >/dev/null 2>&1 || true
.venv/bin/python -m pip install --quiet --disable-pip-version-check -e ".${extras}"

# install_debian_package COMMAND PACKAGE REQUIRED (apt-get PACKAGE unless COMMAND exists).
. scripts/lib.sh

# redis-cli: the README's tour and the tests use the real Redis command-line client.
install_debian_package redis-cli redis-tools "$want_tests"
# redis-benchmark (also redis-tools): `replikv bench --redis-benchmark` and its test.
[ "$want_tests" = 1 ] && install_debian_package redis-benchmark redis-tools 1
# haproxy: tests/integration/test_haproxy.py runs the config `replikv haproxy-config` prints.
[ "$want_tests" = 1 ] && install_debian_package haproxy haproxy 1
# chromium: tests/integration/test_dashboard.py opens the dashboard in headless Chromium.
[ "$want_tests" = 1 ] && install_debian_package chromium chromium 1
echo "==> ready: $(.venv/bin/replikv --version), $(redis-cli --version 2>/dev/null || echo 'no redis-cli')"
