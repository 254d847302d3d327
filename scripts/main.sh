#!/usr/bin/env bash
# The main job: set up, train 0.75 MobileNet on Fashion-MNIST with the "fast" preset (32x32, output
# stride 16; about 9 minutes on 2 cores, docs/results/fast_recipe.md), evaluate it on the test
# images, report its cost beside the paper's tables, export it (ONNX fp32
# and int8, each checked against torch; int8 top-1 against fp32's) and measure its latency per
# backend beside timm's (the peer). Resumable: run it again after an interruption and training
# continues from runs/main/checkpoint.pt.
# Extra arguments go to `mobilenets train` (e.g. --epochs 1 for a quick look: about a minute of
# training; --preset paper for section 3.2's recipe).
set -euo pipefail
source "$(dirname "${BASH_SOURCE[0]}")/setup.sh"
OUT=${OUT:-runs/main}
mkdir -p "$OUT"
# The report of the final model's test evaluation is printed and kept in $OUT/eval_report.txt.
mobilenets train --preset fast --out "$OUT" --resume "$@"
# Cost at the same 32x32 input (profile counts output stride 32: the trained model, at stride 16,
# does more Mult-Adds in its last two blocks, at 2x2 instead of 1x1).
mobilenets profile --model mobilenet_v1_0.75_224 --num-classes 10 --resolution 32 \
  --output "$OUT/profile.txt"
grep -E "^(Mult-Adds|Parameters|Layers):" "$OUT/profile.txt"
mobilenets paper-tables --strict --output "$OUT/paper_tables.txt"
tail -n 1 "$OUT/paper_tables.txt"
mobilenets export "$OUT/model.safetensors" --format onnx --output "$OUT/model.onnx"
mobilenets export "$OUT/model.safetensors" --format int8 --output "$OUT/model_int8.onnx" \
  --evaluate --report "$OUT/int8_eval.json"
mobilenets bench --model-file "$OUT/model.safetensors" --backends eager,torch,onnx,int8,timm \
  --output "$OUT/latency.txt"
cat "$OUT/latency.txt"
