#!/usr/bin/env bash
# Installs everything Kota Cerdas needs on a Debian/Ubuntu machine and starts the
# local stack (Mosquitto + InfluxDB on loopback). Idempotent; safe to re-run.
set -euo pipefail
cd "$(dirname "$0")/.."
VENV=${KC_VENV:-.venv}
SUDO=""
[ "$(id -u)" = 0 ] || SUDO="sudo"

need_apt=()
python3 -c 'import venv, ensurepip' 2>/dev/null || need_apt+=(python3-venv python3-pip)
command -v influxd >/dev/null || [ -x /usr/bin/influxd ] || need_apt+=(influxdb)
command -v mosquitto >/dev/null || [ -x /usr/sbin/mosquitto ] || need_apt+=(mosquitto mosquitto-clients)
# the clustered backbone (docs/scale.md): NATS JetStream for the pipeline, RabbitMQ for the choice bench
command -v nats-server >/dev/null || [ -x /usr/sbin/nats-server ] || need_apt+=(nats-server)
[ -x /usr/lib/rabbitmq/bin/rabbitmq-server ] || need_apt+=(rabbitmq-server)
command -v node >/dev/null || need_apt+=(nodejs npm)
# headless Chromium: the public page and Swagger UI are tested as a browser renders them
command -v chromium >/dev/null || need_apt+=(chromium)
if [ ${#need_apt[@]} -gt 0 ]; then
  command -v apt-get >/dev/null || { echo "need ${need_apt[*]} but there is no apt-get: install them by hand" >&2; exit 2; }
  echo "==> apt-get install ${need_apt[*]}"
  $SUDO env DEBIAN_FRONTEND=noninteractive apt-get update -q
  $SUDO env DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends "${need_apt[@]}"
fi

if [ ! -x "$VENV/bin/python" ]; then
  echo "==> creating virtualenv $VENV"
  python3 -m venv "$VENV"
fi
stamp="$VENV/.kc-installed"
if [ ! -f "$stamp" ] || [ pyproject.toml -nt "$stamp" ]; then
  echo "==> pip install -e .[dev]"
  "$VENV/bin/python" -m pip install -q --upgrade pip
  "$VENV/bin/python" -m pip install -q -e ".[dev]"
  touch "$stamp"
fi
if [ -f firmware/package.json ] && [ ! -d firmware/node_modules ]; then
  echo "==> npm install (MicroPython WebAssembly for firmware tests)"
  (cd firmware && npm install --no-audit --no-fund --silent)
fi
echo "==> local stack up"
"$VENV/bin/kotacerdas" stack up
