#!/usr/bin/env bash
# Regenerates docs/img/kc-*.png from a short real pipeline run (simulators -> gateway ->
# ingest -> InfluxDB -> analytics) in its own database (kotacerdas_previews) on free ports.
# Extra arguments pass through: ./scripts/previews.sh --scenario demo --out /tmp/previews
set -euo pipefail
cd "$(dirname "$0")/.."
./scripts/bootstrap.sh
exec .venv/bin/kotacerdas previews "$@"
