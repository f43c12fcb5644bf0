#!/usr/bin/env bash
# The test command (README, .ci/run): installs what is missing, starts the local
# stack, then runs the whole test suite against the real Mosquitto and InfluxDB.
set -euo pipefail
cd "$(dirname "$0")/.."
./scripts/bootstrap.sh
exec .venv/bin/python -m pytest -m "not soak" "$@"
