#!/usr/bin/env bash
# Set everything up and run the demo: the agent counts products on a generated shelf clip and
# publishes every result over MQTT, to the broker on localhost:1883 if one answers there, else
# to an embedded broker (amqtt) it starts on 127.0.0.1. No mosquitto needed. Idempotent: the
# second run skips the install. Arguments go to `edge-agent demo` (--out DIR, --mqtt-host H,
# --mqtt-port P).
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/setup.sh onnx,demo
exec .venv/bin/edge-agent demo "$@"
