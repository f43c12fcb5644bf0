#!/usr/bin/env bash
# The main job (README): installs what is missing, starts the local stack, then
# runs the demo pipeline (simulators -> gateway -> ingest -> analytics) with the
# HTTP API up, and prints a summary.
set -euo pipefail
cd "$(dirname "$0")/.."
./scripts/bootstrap.sh
exec .venv/bin/kotacerdas demo "$@"
