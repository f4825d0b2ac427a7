#!/usr/bin/env bash
# replikv against etcd, Redis and PySyncObj on this machine: installs the peers if missing, then
# runs benchmarks/compare.py with the arguments given, e.g.
#   bash benchmarks/compare.sh --duration-s 10 --out benchmarks/results/compare.json
set -euo pipefail
cd "$(dirname "$0")/.."
for arg in "$@"; do  # help needs no peers installed
  case "$arg" in -h|--help) exec .venv/bin/python benchmarks/compare.py --help ;; esac
done
./benchmarks/install_peers.sh >&2
exec .venv/bin/python benchmarks/compare.py "$@"
