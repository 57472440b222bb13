#!/usr/bin/env bash
# Set everything up and run the demo: the agent on a generated conveyor clip, publishing to a
# local mosquitto started for the occasion (or to one already listening on localhost:1883).
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/ensure-mosquitto.sh
scripts/setup.sh onnx,dev

port=1883
broker_pid=""
if ! .venv/bin/python -c 'import socket; socket.create_connection(("127.0.0.1", 1883), 1)' \
     2>/dev/null; then
  port=$(.venv/bin/python -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')
  conf=$(mktemp)
  printf 'listener %s 127.0.0.1\nallow_anonymous true\nuser %s\n' "$port" "$(id -un)" > "$conf"
  mosquitto -c "$conf" >/dev/null 2>&1 &
  broker_pid=$!
  trap 'kill $broker_pid 2>/dev/null; rm -f "$conf"' EXIT
  for _ in $(seq 50); do
    .venv/bin/python -c "import socket; socket.create_connection(('127.0.0.1', $port), 1)" \
      2>/dev/null && break
    sleep 0.1
  done
  echo "started mosquitto on 127.0.0.1:$port for the demo"
fi
.venv/bin/edge-agent demo --mqtt-host 127.0.0.1 --mqtt-port "$port" "$@"
