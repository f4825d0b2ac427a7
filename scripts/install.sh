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

# install_debian_package COMMAND PACKAGE REQUIRED: apt-get PACKAGE unless COMMAND exists;
# without apt-get, warn, and fail if REQUIRED is 1.
install_debian_package() {
  command -v "$1" >/dev/null 2>&1 && return 0
  echo "==> installing $1 (Debian package $2)"
  local sudo=""
  [ "$(id -u)" -ne 0 ] && command -v sudo >/dev/null 2>&1 && sudo="sudo"
  if command -v apt-get >/dev/null 2>&1; then
    $sudo apt-get update -qq >/dev/null
    DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq "$2" >/dev/null
  else
    echo "warning: no apt-get here; install $1 ($2) yourself" >&2
    [ "$3" = 1 ] && exit 1
  fi
  return 0
}

# redis-cli: the README's tour and the tests use the real Redis command-line client.
install_debian_package redis-cli redis-tools "$want_tests"
# redis-benchmark (also redis-tools): `replikv bench --redis-benchmark` and its test.
[ "$want_tests" = 1 ] && install_debian_package redis-benchmark redis-tools 1
# haproxy: tests/integration/test_haproxy.py runs the config `replikv haproxy-config` prints.
[ "$want_tests" = 1 ] && install_debian_package haproxy haproxy 1
echo "==> ready: $(.venv/bin/replikv --version), $(redis-cli --version 2>/dev/null || echo 'no redis-cli')"
