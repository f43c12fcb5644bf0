#!/usr/bin/env bash
# The test command (README, .ci/run): installs what is missing, starts the local stack, then
#   1. the pure tests (`pytest -m unit`: no broker, no database, no subprocess; about 30 s),
#   2. ruff and mypy over the rule set and packages configured in pyproject.toml,
#   3. everything else except the soak, against the real Mosquitto and InfluxDB.
# Each step fails the run; the fast ones come first so a broken change is reported in a minute.
# Extra arguments go to both pytest steps (`./scripts/test.sh tests/kotacerdas -x`).
set -euo pipefail
cd "$(dirname "$0")/.."
./scripts/bootstrap.sh
# pytest exit 5 = nothing selected: fine for one step (the arguments named only unit or only
# integration tests), a failure when neither step ran a test
empty_steps=0
pytest_step() {
  local rc=0
  .venv/bin/python -m pytest "$@" || rc=$?
  if [ "$rc" -eq 5 ]; then empty_steps=$((empty_steps + 1)); rc=0; fi
  return "$rc"
}
echo "==> unit tests"
pytest_step -m unit -q "$@"
echo "==> ruff"
.venv/bin/ruff check .
echo "==> mypy"
.venv/bin/mypy
echo "==> integration tests"
pytest_step -m "not unit and not soak" --durations=25 "$@"
if [ "$empty_steps" -eq 2 ]; then echo "no test was selected" >&2; exit 5; fi
