#!/usr/bin/env bash
# Table 11 on data derived from Fashion-MNIST (paper section 4.4, PlaNet): write the geotagged
# data set (`mobilenets geo make-data`: each garment class has 3 home cities, the garment's
# brightness picks the city, photos spread 1, 15 or 60 km around it, 5% anywhere on earth),
# partition the earth into adaptive equal-area geocells from the training photos, train a 1.0
# and a 0.25 MobileNet to classify photos into cells (32x32 input, 4 epochs of 20,000 photos),
# and report the share of the 5,000 test photos within 1, 25, 200, 750 and 2,500 km, beside a
# class-prior baseline and a baseline that knows the garment class. Resumable. About 25 minutes
# on one core. NO_SETUP=1 skips scripts/setup.sh (use the `mobilenets` already on PATH).
set -euo pipefail
[ -n "${NO_SETUP:-}" ] || source "$(dirname "${BASH_SOURCE[0]}")/setup.sh"
OUT=${OUT:-runs/geo}
RESULTS=${RESULTS:-docs/results}
WIDTHS=${WIDTHS:-"1.0 0.25"}
[ -f "$OUT/data/geo_data.json" ] || mobilenets geo make-data "$OUT/data" --train-images 20000 \
  --val-images 2000 --test-images 5000 --seed 0
# PlaNet: split cells above t1 = 10,000 photos, drop those below t2 = 50 (91M photos); here
# 200 and 20 for 20,000 photos.
[ -f "$OUT/cells.json" ] || mobilenets geo cells "$OUT/data/train.csv" --max-photos 200 \
  --min-photos 20 --output "$OUT/cells.json"
models=()
for A in $WIDTHS; do
  mobilenets geo train --train-csv "$OUT/data/train.csv" --val-csv "$OUT/data/val.csv" \
    --cells "$OUT/cells.json" --width-mult "$A" --resolution 32 --epochs 4 --set lr_final=none --set lr_decay=0.5 \
    --set num_workers=0 --set progress=false --out "$OUT/a$A" --resume
  models+=("$OUT/a$A/model.safetensors")
done
mkdir -p "$RESULTS"
EVAL=(--csv "$OUT/data/test.csv" --prior --prior-given garment "$OUT/data/train.csv")
mobilenets geo eval "${models[@]}" "${EVAL[@]}" --format json --output "$RESULTS/geo_table11.json"
mobilenets geo eval "${models[@]}" "${EVAL[@]}" --paper --output "$RESULTS/geo_table11.txt"
# What recognising each photo's home region perfectly would give (the `region` column; no model)
mobilenets geo eval --csv "$OUT/data/test.csv" --cells "$OUT/cells.json" --prior-given region \
  "$OUT/data/train.csv" --output "$RESULTS/geo_table11_region_oracle.txt"
cat "$RESULTS/geo_table11.txt" "$RESULTS/geo_table11_region_oracle.txt"
