#!/usr/bin/env bash
# Installs replikv into ./.venv, and redis-cli (Debian's redis-tools) if it is missing;
# with --test, redis-benchmark, haproxy, chromium, gcc and the Python headers too.
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
# redis-server: tests/unit/test_{hashes,lists,zsets,pubsub}_against_redis.py send the same commands to a
# real Redis and to replikv and compare every reply (no system service is started: it runs its own).
[ "$want_tests" = 1 ] && install_debian_server_package redis-server redis-server 1
# haproxy: tests/integration/test_haproxy.py runs the config `replikv haproxy-config` prints.
[ "$want_tests" = 1 ] && install_debian_package haproxy haproxy 1
# chromium: tests/integration/test_dashboard.py opens the dashboard in headless Chromium.
[ "$want_tests" = 1 ] && install_debian_package chromium chromium 1
# gcc and the Python headers: tests/integration/test_compiled_trial.py compiles the cores with
# mypyc (benchmarks/compiled.py). A Python built from source has its headers; Debian's needs
# python3.X-dev.
if [ "$want_tests" = 1 ]; then
  install_debian_package gcc gcc 1
  python_h=$(.venv/bin/python -c 'import os, sysconfig; print(os.path.join(sysconfig.get_paths()["include"], "Python.h"))')
  python_dev=$(.venv/bin/python -c 'import sys; print("python%d.%d-dev" % sys.version_info[:2])')
  install_debian_package_for_file "$python_h" "the Python headers" "$python_dev" 1
fi
echo "==> ready: $(.venv/bin/replikv --version), $(redis-cli --version 2>/dev/null || echo 'no redis-cli')"
