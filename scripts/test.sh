#!/usr/bin/env bash
# Set up, then run the whole test suite, then the training, learning and resume tests again on
# other CPU kernels (ATen's scalar kernels, oneDNN off: not this machine's), a representative
# slice of scripts/cpu_matrix.sh. Arguments go to the suite's pytest, and then the slice is not
# run. Fails when any test fails or when no test ran.
set -uo pipefail
source "$(dirname "${BASH_SOURCE[0]}")/setup.sh" || exit 1
set +e  # setup.sh sets -e: the status of each run is ours to judge

run_pytest() {
  python -m pytest "$@"
  local rc=$?
  if [ "$rc" -eq 5 ]; then
    echo "test.sh: pytest collected no tests: treating as a failure" >&2
    rc=1
  fi
  return "$rc"
}

run_pytest -q "$@"
suite=$?
[ "$#" -gt 0 ] && exit "$suite"

OTHER_KERNELS=(
  tests/test_hostile.py::test_training_learns_on_every_kernel
  tests/test_hostile.py::test_resume_after_kill_9_is_exact_on_imagefolder_with_dropout
  tests/test_train.py::test_few_steps_loss_falls_and_run_folder
  tests/test_distill.py::test_few_distill_steps_lower_the_loss_with_unlabeled_images
  tests/test_distill.py::test_resume_reaches_the_same_weights
  tests/test_detection.py::test_loss_falls_on_a_fixed_batch
  tests/test_detection.py::test_resume_after_a_kill_gives_the_same_weights
  tests/test_segmentation.py::test_loss_falls_in_a_few_steps
)
echo "test.sh: again with ATEN_CPU_CAPABILITY=default and oneDNN off: ${#OTHER_KERNELS[@]} training, learning and resume tests"
ATEN_CPU_CAPABILITY=default run_pytest -q -p no:cacheprovider --no-mkldnn "${OTHER_KERNELS[@]}"
kernels=$?

[ "$suite" -ne 0 ] && exit "$suite"
exit "$kernels"
