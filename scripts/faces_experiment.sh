#!/usr/bin/env bash
# Face attributes (the paper's Table 12) and face embeddings (Table 14) by distillation, on data
# sets derived from Fashion-MNIST (issue 7, parts 2, 3 and 6; paper sections 4.5 and 4.7).
#
# Attributes: 11 binary attributes per Fashion-MNIST image (5 from its class, 6 measured from its
# pixels). A 1.0 MobileNet-32 teacher is trained on 10,000 labeled images; 0.75, 0.5 and 0.25
# students are distilled from it (per-attribute sigmoid cross-entropy against its probabilities,
# no labels, no weight decay: section 4.5) on those 10,000 plus 20,000 unlabeled images, 2 epochs.
# A 0.25 student trained on the 10,000 labels alone for the same 60,000 images is the control.
#
# Embeddings: 1,000 training identities (a Fashion-MNIST image each) x 10 augmented "photos"
# (mild changes: zoom 0.92-1.08, +-5 degrees, +-5% shifts, brightness 0.85-1.15, noise 6/255); no
# two identities, training or test, are near-twins (raw-pixel cosine of their sources <= 0.9,
# make-data's --max-source-cosine). A 1.0 MobileNet-32 teacher with a 128-d L2-normalised
# embedding is trained to classify them (a linear softmax on its unit embedding x16) for 24
# epochs (lr decay 0.866 per epoch: the recipe's 0.75^12 final rate, over twice the epochs);
# 0.75, 0.5 and 0.25 students are distilled from it by the squared distance of the embeddings
# (section 4.7) on the 10,000 photos plus 20,000 unlabeled ones, 2 epochs, and again for 8 epochs.
# Verification on 600 unseen test identities x 6 photos: 9,000 same-identity pairs and 50,000
# different-identity pairs (over half from the same Fashion-MNIST class): the true accept rate
# at a false accept rate of 1e-4. Raw pixels (no model) give the baseline.
#
# Evaluation on the test images (attributes: 10,000); tables in docs/results/. Resumable: run it
# again after an interruption. Single-threaded (OMP_NUM_THREADS=1).
set -euo pipefail
source "$(dirname "${BASH_SOURCE[0]}")/setup.sh"
export OMP_NUM_THREADS=${OMP_NUM_THREADS:-1}
OUT=${OUT:-runs/faces}
RESULTS=${RESULTS:-docs/results}
mkdir -p "$OUT" "$RESULTS"
timed() { local t=$SECONDS; "$@"; echo "wall $((SECONDS - t)) s: $*" | tee -a "$OUT/wall_times.txt"; }
QUIET=(--set progress=false --resume)

[ -f "$OUT/attributes_data/attributes.json" ] || \
  timed mobilenets attributes make-data --out "$OUT/attributes_data"
# Identity data made before sources were de-twinned (no "max_source_cosine") is made again:
# delete $OUT/embeddings too, its runs would resume on the old data.
grep -qs "max_source_cosine" "$OUT/identities_data/identities.json" || \
  timed mobilenets embeddings make-data --out "$OUT/identities_data"

# Table 12
A=(--data "$OUT/attributes_data")
timed mobilenets attributes train "${A[@]}" --out "$OUT/attributes/teacher" "${QUIET[@]}"
for W in 0.75 0.5 0.25; do
  timed mobilenets attributes distill "${A[@]}" --teacher "$OUT/attributes/teacher/model.safetensors" \
    --width-mult "$W" --set limit_train=30000 --out "$OUT/attributes/student_a$W" "${QUIET[@]}" \
    --set teacher_cache="$OUT/attributes/teacher_outputs.safetensors"
done
# Control: the 0.25 student on the labels alone, with the teacher's recipe, for as many images
# (6 epochs of 10,000) and the same learning-rate decay per image (0.3 per 30,000 images).
timed mobilenets attributes train "${A[@]}" --width-mult 0.25 --epochs 6 --set lr_decay=0.6694 \
  --out "$OUT/attributes/labels_a0.25" "${QUIET[@]}"
ATTR_MODELS=("$OUT/attributes/teacher" "$OUT/attributes/student_a"{0.75,0.5,0.25} "$OUT/attributes/labels_a0.25")
mobilenets attributes eval "${ATTR_MODELS[@]/%//model.safetensors}" "${A[@]}" \
  --output "$RESULTS/faces_table12.txt"
mobilenets attributes eval "${ATTR_MODELS[@]/%//model.safetensors}" "${A[@]}" --format csv \
  --output "$RESULTS/faces_table12.csv"

# Table 14
E=(--data "$OUT/identities_data")
timed mobilenets embeddings train "${E[@]}" --epochs 24 --set lr_decay=0.866 \
  --out "$OUT/embeddings/teacher" "${QUIET[@]}"
for W in 0.75 0.5 0.25; do
  timed mobilenets embeddings distill "${E[@]}" --teacher "$OUT/embeddings/teacher/model.safetensors" \
    --width-mult "$W" --out "$OUT/embeddings/student_a$W" "${QUIET[@]}" \
    --set teacher_cache="$OUT/embeddings/teacher_outputs.safetensors"
done
# The students for 4x as long (8 epochs, the same final learning rate: 0.7402^8 = 0.3^2).
for W in 0.5 0.75 0.25; do
  timed mobilenets embeddings distill "${E[@]}" --teacher "$OUT/embeddings/teacher/model.safetensors" \
    --width-mult "$W" --epochs 8 --set lr_decay=0.7402 --out "$OUT/embeddings/student_a${W}_e8" \
    "${QUIET[@]}" --set teacher_cache="$OUT/embeddings/teacher_outputs.safetensors"
done
EMB_MODELS=("$OUT/embeddings/teacher" "$OUT/embeddings/student_a"{0.75,0.5,0.25,0.75_e8,0.5_e8,0.25_e8})
mobilenets embeddings eval "${EMB_MODELS[@]/%//model.safetensors}" "${E[@]}" \
  --output "$RESULTS/faces_table14.txt"
# Raw-pixel baseline on the same pairs: cosine of the mean-centred 28x28 pixels of the two photos.
{ sed -n '/^#/p' "$(dirname "${BASH_SOURCE[0]}")/faces_pixel_baseline.py"
  python "$(dirname "${BASH_SOURCE[0]}")/faces_pixel_baseline.py" "$OUT/identities_data"
} > "$RESULTS/faces_table14_pixel_baseline.txt"
cat "$RESULTS/faces_table12.txt" "$RESULTS/faces_table14.txt" "$RESULTS/faces_table14_pixel_baseline.txt"
