#!/usr/bin/env bash
# Rebuilds the demo's shelf detector bundles (edge_agent/demo/shelf_bundle and
# shelf_bundle_tflite) with our own trainer, from nothing: synthetic shelves -> SSDLite at
# 160 px from scratch -> INT8 ONNX and INT8 TFLite, each evaluated through edge_agent.
# About 10 minutes on 2 CPU cores. Needs: scripts/setup.sh onnx,tflite,train,export-tflite
#   tools/build_demo_bundle.sh [WORKDIR]
set -euo pipefail
cd "$(dirname "$0")/.."
work="${1:-/tmp/edgesight-demo-bundle}"
bin=.venv/bin
rm -rf "$work" && mkdir -p "$work"

"$bin/edge-trainer" synth --kind shelf --n 750 --format coco --seed 0 --size 320x320 \
  --val-fraction 0.2 --workers 2 "$work/shelf"
"$bin/edge-trainer" train --task detect --model ssdlite320_mobilenet_v3_large \
  --data "$work/shelf" --size 160 --epochs 12 --seed 0 --threads 2 --out "$work/run"
"$bin/edge-trainer" export "$work/run" --format onnx --int8 --name shelf-demo \
  --recipe ssdlite160-shelf-synth --out "$work/onnx-int8"
"$bin/edge-trainer" export "$work/run" --format tflite --int8 --name shelf-demo \
  --recipe ssdlite160-shelf-synth --out "$work/tflite-int8"

rm -rf edge_agent/demo/shelf_bundle edge_agent/demo/shelf_bundle_tflite
cp -r "$work/onnx-int8" edge_agent/demo/shelf_bundle
cp -r "$work/tflite-int8" edge_agent/demo/shelf_bundle_tflite
du -sh edge_agent/demo/shelf_bundle edge_agent/demo/shelf_bundle_tflite
