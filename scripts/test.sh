#!/usr/bin/env bash
# Set everything up and run the whole test suite (the README's test command; CI runs it).
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/ensure-mosquitto.sh
scripts/setup.sh onnx,tflite,train,export-tflite,demo,dev
.venv/bin/ruff check .
exec .venv/bin/python -m pytest "$@"
