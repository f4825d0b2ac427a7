#!/usr/bin/env bash
# Installs the systems benchmarks/compare.py measures replikv against, if they are missing:
#   etcd         Debian's etcd-server (3.4)   -> /usr/bin/etcd
#   redis-server Debian's redis-server        -> /usr/bin/redis-server (+ redis-benchmark)
#   pysyncobj    from PyPI into ./.venv, pinned
# Idempotent: what is there already is left alone. Debian's packages would start system
# services (etcd on 2379, redis on 6379); compare.py starts its own clusters on free ports, so
# no service may start during the install (a policy-rc.d that exits 101 is in place while
# apt-get runs), and any such service found running afterwards is stopped.
set -euo pipefail
cd "$(dirname "$0")/.."
. scripts/lib.sh

PYSYNCOBJ_VERSION=0.3.17

if [ ! -x .venv/bin/python ]; then
  echo "install_peers: no .venv here; run scripts/install.sh --test first" >&2
  exit 1
fi

need_apt=0
for cmd in etcd redis-server redis-benchmark; do
  command -v "$cmd" >/dev/null 2>&1 || need_apt=1
done

if [ "$need_apt" = 1 ]; then
  install_debian_server_package etcd etcd-server 1
  install_debian_server_package redis-server redis-server 1
  install_debian_package redis-benchmark redis-tools 1
fi

# No system etcd or redis may be left serving (they would take CPU from the measurements).
stop_service() {  # NAME PROCESS
  if pgrep -x "$2" >/dev/null 2>&1; then
    echo "==> stopping the system $1 service"
    if command -v systemctl >/dev/null 2>&1 && [ -d /run/systemd/system ]; then
      systemctl stop "$1" >/dev/null 2>&1 || true
      systemctl disable "$1" >/dev/null 2>&1 || true
    fi
    service "$1" stop >/dev/null 2>&1 || true
  fi
}
for port in 2379 6379; do
  if command -v ss >/dev/null 2>&1 && ss -ltn "sport = :$port" 2>/dev/null | grep -q LISTEN; then
    case $port in
      2379) stop_service etcd etcd ;;
      6379) stop_service redis-server redis-server ;;
    esac
  fi
done

if ! .venv/bin/python -c "import pysyncobj, sys; sys.exit(pysyncobj.__version__ != '$PYSYNCOBJ_VERSION')" 2>/dev/null \
   && ! [ "$(.venv/bin/python -m pip show pysyncobj 2>/dev/null | sed -n 's/^Version: //p')" = "$PYSYNCOBJ_VERSION" ]; then
  echo "==> installing pysyncobj==$PYSYNCOBJ_VERSION into .venv"
  .venv/bin/python -m pip install --quiet --disable-pip-version-check "pysyncobj==$PYSYNCOBJ_VERSION"
fi

echo "==> peers: $(etcd --version 2>/dev/null | head -1), $(redis-server --version | cut -d' ' -f1-3)," \
     "pysyncobj $(.venv/bin/python -m pip show pysyncobj 2>/dev/null | sed -n 's/^Version: //p')"
