#!/usr/bin/env bash
# Distillation on Fashion-MNIST with half the labels held back (issue 7, part 6a; paper section
# 4.5/4.7): a 1.0 MobileNet teacher trained ONLY on the labeled half, then a 0.25 MobileNet student
# (a) trained on those labels alone and (b) distilled on all 60,000 images (labeled half: label
# cross-entropy + soft targets at T=4; other half: soft targets only). The labeled half is a fixed,
# seeded, class-balanced 50% (label_seed 0), the same in every run: each run records its sha256 in
# summary.json and this script checks they agree. Evaluation on all 10,000 test images.
#
# Same budget for both students: the same number of steps of 128 images and the same learning rate
# at every step. Labels-only runs E epochs over the 30,000 labeled images; distillation runs E/2
# epochs over the 60,000, with the per-epoch decay squared and the warm-up halved. Pairs at E and 2E,
# and at E a third student distilled with the teacher run online on each augmented batch.
# Otherwise the "fashion-mnist" preset (RMSprop, lr 0.06 decayed x0.75 per epoch, batch 128).
# Resumable: run it again after an interruption. Single-threaded: OMP_NUM_THREADS=1.
set -euo pipefail
source "$(dirname "${BASH_SOURCE[0]}")/setup.sh"
export OMP_NUM_THREADS=${OMP_NUM_THREADS:-1}
OUT=${OUT:-runs/distill}
RES=${RES:-32}
EPOCHS=${EPOCHS:-10}  # epochs over the 30,000 labeled images (teacher, labels-only student)
STUDENT_EPOCHS=${STUDENT_EPOCHS:-"$EPOCHS $((2 * EPOCHS))"}  # labels-only epochs of each pair
DECAY=${DECAY:-0.75}  # the preset's learning-rate decay per epoch of 30,000 images
HALF=(--resolution "$RES" --label-fraction 0.5 --set label_seed=0)
DECAY2=$(python -c "print($DECAY ** 2)")
mkdir -p "$OUT"
timed() { local t=$SECONDS; "$@"; echo "wall $((SECONDS - t)) s: $*" | tee -a "$OUT/wall_times.txt"; }

timed mobilenets train --model mobilenet_v1_1.0_224 "${HALF[@]}" --epochs "$EPOCHS" \
  --set lr_final=none --set lr_decay="$DECAY" --out "$OUT/teacher" --resume
# distil E NAME [FLAGS]: the distilled student with the step budget of E labels-only epochs.
distil() {
  local E=$1 name=$2
  shift 2
  timed mobilenets distill --teacher "$OUT/teacher/model.safetensors" \
    --student mobilenet_v1_0.25_224 "${HALF[@]}" --epochs "$(python -c "print($E / 2)")" \
    --set lr_final=none --set lr_decay="$DECAY2" --set warmup_epochs=0.15 --loss soft --temperature 4 \
    --hard-weight 1 --out "$OUT/$name" --resume "$@"
}
runs=("$OUT/teacher")
for E in $STUDENT_EPOCHS; do
  timed mobilenets train --model mobilenet_v1_0.25_224 "${HALF[@]}" --epochs "$E" \
    --set lr_final=none --set lr_decay="$DECAY" --out "$OUT/labels_only_e$E" --resume
  distil "$E" "distilled_e$E" --teacher-cache "$OUT/teacher_outputs.safetensors"
  runs+=("$OUT/labels_only_e$E" "$OUT/distilled_e$E")
done
# The teacher run on every augmented batch (the student's exact view) instead of once per image.
distil "$EPOCHS" "distilled_online_e$EPOCHS" --teacher-mode online
runs+=("$OUT/distilled_online_e$EPOCHS")
python - "${runs[@]}" <<'PY'
import json, sys
shas = {d: json.load(open(f"{d}/summary.json"))["labeled_subset_sha256"] for d in sys.argv[1:]}
assert len(set(shas.values())) == 1, f"runs saw different labeled subsets: {shas}"
print(f"every run used the same labeled subset (sha256 {next(iter(shas.values()))[:16]}...)")
PY
mobilenets compare "${runs[@]}" --output "$OUT/distill_results.txt"
cat "$OUT/distill_results.txt" "$OUT/wall_times.txt"
