#!/usr/bin/env bash
# Installs replikv and starts a local 3-node cluster in the foreground (Ctrl-C stops it).
# Any arguments go to `replikv cluster up` (see: .venv/bin/replikv cluster up --help).
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/install.sh
exec .venv/bin/replikv cluster up "$@"
