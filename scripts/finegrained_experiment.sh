#!/usr/bin/env bash
# Table 10 on Fashion-MNIST (paper section 4.3): fine-grained recognition of the five upper-body
# garments, comparing training on a small clean set (100 images per class, as Stanford Dogs) with
# the paper's recipe: pretrain on a large noisy set (29,500 images, 40% wrong labels, mostly a
# look-alike class), then fine-tune on the clean set. Two widths, 32x32 input, one seed; test on
# the 5,000 Fashion-MNIST test images of those classes; SEEDS="0 1" repeats every run with each
# training seed (the data stay those of seed 0; runs of seed S > 0 end in _sS). Resumable: run it again after an
# interruption. About 25 minutes per seed on one core. NO_SETUP=1 skips scripts/setup.sh (use the
# `mobilenets` already on PATH).
set -euo pipefail
[ -n "${NO_SETUP:-}" ] || source "$(dirname "${BASH_SOURCE[0]}")/setup.sh"
OUT=${OUT:-runs/finegrained}
RESULTS=${RESULTS:-docs/results}
WIDTHS=${WIDTHS:-"1.0 0.5"}
SEEDS=${SEEDS:-0}
COMMON=(--resolution 32 --set num_workers=0 --set progress=false)
# The small clean set: 40 epochs of 10 steps, evaluated once at the end.
CLEAN=(--epochs 40 --batch-size 50 --lr 0.03 --set lr_final=none --set lr_decay=0.9 --set eval_every_epoch=false)
[ -f "$OUT/data/noise.json" ] || mobilenets finegrained make-data "$OUT/data" --noise-rate 0.4 \
  --clean-per-class 100 --seed 0
runs=()
for S in $SEEDS; do
for A in $WIDTHS; do
  T=a$A$([ "$S" = 0 ] || echo "_s$S")
  # 1) clean set only
  mobilenets train --data "$OUT/data/clean" --width-mult "$A" "${COMMON[@]}" "${CLEAN[@]}" \
    --seed "$S" --out "$OUT/clean_only_$T" --resume
  # 2) pretrain on the noisy set (3 epochs, the sweep's short-run decay)
  mobilenets train --data "$OUT/data/noisy" --width-mult "$A" "${COMMON[@]}" --epochs 3 \
    --set lr_final=none --set lr_decay=0.3 --seed "$S" --out "$OUT/noisy_$T" --resume
  # 3) fine-tune every layer on the clean set, at a lower learning rate
  mobilenets finetune --init "$OUT/noisy_$T/model.safetensors" --data "$OUT/data/clean" \
    "${COMMON[@]}" --epochs 20 --batch-size 50 --lr 0.005 --set lr_final=none --set lr_decay=0.85 \
    --set eval_every_epoch=false --seed "$S" --out "$OUT/noisy_then_clean_$T" --resume
  runs+=("$OUT/clean_only_$T" "$OUT/noisy_$T" "$OUT/noisy_then_clean_$T")
done
done
mkdir -p "$RESULTS"
mobilenets compare "${runs[@]}" --output "$RESULTS/finegrained_table10.txt"
mobilenets compare "${runs[@]}" --format csv --output "$RESULTS/finegrained_table10.csv"
cp "$OUT/data/noise.json" "$RESULTS/finegrained_noise.json"
cat "$RESULTS/finegrained_table10.txt"
