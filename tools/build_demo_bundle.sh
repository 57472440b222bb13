#!/usr/bin/env bash
# Rebuilds the demo's shelf detector bundles (edge_agent/demo/shelf_bundle and
# shelf_bundle_tflite) with our own trainer, from nothing: synthetic shelves -> SSDLite at
# 160 px from scratch -> INT8 ONNX and INT8 TFLite, each evaluated through edge_agent against
# its FP32 twin (the INT8 gate: mAP@.5, mAP@[.5:.95], mAP@.75, worst class; exit 3 when over).
# About 10 minutes on 2 CPU cores. Needs: scripts/setup.sh onnx,tflite,train,export-tflite
#   tools/build_demo_bundle.sh [--keep-run] [WORKDIR]
# --keep-run reuses WORKDIR's dataset and trained run and exports again (about 3 minutes).
# PYTHON picks the interpreter (default .venv/bin/python); the trainer is run as
# `python -m trainer.cli` from this checkout, so the bundles come from this checkout's code.
set -euo pipefail
cd "$(dirname "$0")/.."
keep=0
if [[ "${1:-}" == "--keep-run" ]]; then keep=1; shift; fi
work="${1:-/tmp/edgesight-demo-bundle}"
python="${PYTHON:-.venv/bin/python}"
trainer() { PYTHONPATH="$PWD" "$python" -m trainer.cli "$@"; }

if [[ $keep == 1 && -f "$work/run/best.pt" ]]; then
  rm -rf "$work/onnx-int8" "$work/tflite-int8"
else
  rm -rf "$work" && mkdir -p "$work"
  trainer synth --kind shelf --n 750 --format coco --seed 0 --size 320x320 \
    --val-fraction 0.2 --workers 2 "$work/shelf"
  trainer train --task detect --model ssdlite320_mobilenet_v3_large \
    --data "$work/shelf" --size 160 --epochs 12 --seed 0 --threads 2 --out "$work/run"
fi
trainer export "$work/run" --format onnx --int8 --name shelf-demo \
  --recipe ssdlite160-shelf-synth --out "$work/onnx-int8"
trainer export "$work/run" --format tflite --int8 --name shelf-demo \
  --recipe ssdlite160-shelf-synth --out "$work/tflite-int8"

rm -rf edge_agent/demo/shelf_bundle edge_agent/demo/shelf_bundle_tflite
cp -r "$work/onnx-int8" edge_agent/demo/shelf_bundle
cp -r "$work/tflite-int8" edge_agent/demo/shelf_bundle_tflite
du -sh edge_agent/demo/shelf_bundle edge_agent/demo/shelf_bundle_tflite
