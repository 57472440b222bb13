#!/usr/bin/env bash
# Set everything up and run the whole test suite (the README's test command; CI runs it).
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/ensure-test-tools.sh
scripts/ensure-camera-tools.sh  # the RTSP test camera: GStreamer from Debian
scripts/setup.sh onnx,tflite,train,export-tflite,demo,dev
.venv/bin/ruff check .
.venv/bin/ruff format --check .
.venv/bin/mypy
# The full suite, the one-minute SSD-to-INT8-TFLite export included (set 0 to skip it).
export EDGESIGHT_SLOW_TESTS="${EDGESIGHT_SLOW_TESTS:-1}"
exec .venv/bin/python -m pytest "$@"
