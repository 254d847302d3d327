#!/usr/bin/env bash
# The numerics tests (pytest -m numerics: training, resume, export parity, quantization agreement,
# tolerances) on other CPU kernels, so that a test which holds only on this machine's rounding is
# found here and not on the next kind of CPU. Each setting below is one pytest run:
#
#   ATEN_CPU_CAPABILITY  ATen's vectorised kernels: default (scalar), avx2, avx512
#   ONEDNN_MAX_CPU_ISA   oneDNN's ceiling: AVX2, or the machine's own (unset)
#   oneDNN               torch.backends.mkldnn on or off (pytest --no-mkldnn)
#   threads              1 or 2 (pytest --threads)
#
# Not the 24-run product: the six settings after "native" are a pairwise covering array (every
# value of each knob meets every value of each other knob in some run), which finds a failure
# caused by any one knob or any pair of them. Two of them are the CI machines' own kernels at
# CI's 2 threads: avx2 + AVX2 (the AVX2-only machines) and avx512 + the machine's oneDNN.
# A setting this CPU cannot run (avx512 without AVX-512: ATen obeys and dies of SIGILL) is
# reported as not available; one that computes with the same kernels as an earlier setting
# here (e.g. ONEDNN_MAX_CPU_ISA=AVX2 on an AVX2 machine) is reported as such, not run twice.
#
# Usage: bash scripts/cpu_matrix.sh [--plan] [PYTEST ARGS...]
#   --plan       print what would run on this CPU and stop
#   PYTEST ARGS  narrow the selection, e.g. tests/test_train.py or -k resume
# Logs and JUnit files: runs/cpu_matrix/. Exit status 1 if any setting failed a test.
set -uo pipefail
source "$(dirname "${BASH_SOURCE[0]}")/setup.sh" || exit 1
set +e
export PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}"  # this checkout's package, wherever .venv points

plan_only=0
if [ "${1:-}" = "--plan" ]; then plan_only=1; shift; fi

#        name          ATEN_CPU_CAPABILITY  ONEDNN_MAX_CPU_ISA  oneDNN  threads
SETTINGS=(
  "native              -                    -                   on      2"
  "default-1t          default              -                   on      1"
  "default-AVX2-off    default              AVX2                off     2"
  "avx2-off-1t         avx2                 -                   off     1"
  "avx2-AVX2           avx2                 AVX2                on      2"
  "avx512              avx512               -                   on      2"
  "avx512-AVX2-off-1t  avx512               AVX2                off     1"
)

out=runs/cpu_matrix
rm -rf "$out" && mkdir -p "$out"

# What this CPU offers: ATen's own choice and support (torch asks cpuinfo), and the instruction
# set oneDNN reports for a convolution under each ceiling.
probe() {  # probe [ONEDNN_MAX_CPU_ISA] -> "capability avx2 avx512 | oneDNN isa"
  env ${1:+ONEDNN_MAX_CPU_ISA=$1} python - <<'EOF' 2>/dev/null
import torch
conv = torch.nn.Conv2d(32, 64, 3)
with torch.no_grad(), torch.backends.mkldnn.verbose(torch.backends.mkldnn.VERBOSE_ON):
    conv(torch.randn(8, 32, 32, 32))
print("probe", torch.backends.cpu.get_cpu_capability(), int(torch.cpu._is_avx2_supported()),
      int(torch.cpu._is_avx512_supported()))
EOF
}
read -r _ native_cap has_avx2 has_avx512 < <(probe | grep '^probe ')
isa_of() { probe "$1" | grep -o 'isa:[^,]*' | head -1 | sed 's/^isa://'; }
isa_native=$(isa_of "")
isa_avx2=$(isa_of AVX2)
cpu=$(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2- | sed 's/^ *//')
echo "cpu_matrix: $cpu; ATen's own choice: $native_cap; oneDNN: $isa_native"

results="$out/results.tsv"
declare -A seen
for row in "${SETTINGS[@]}"; do
  read -r name cap isa mkl threads <<<"$row"
  case $cap in -) eff_cap=$native_cap ;; default) eff_cap=DEFAULT ;; *) eff_cap=${cap^^} ;; esac
  if [ "$isa" = AVX2 ]; then eff_isa=$isa_avx2; else eff_isa=$isa_native; fi
  key="$eff_cap|$eff_isa|$mkl|$threads"
  status="" seconds=""
  if { [ "$cap" = avx512 ] && [ "$has_avx512" != 1 ]; } || { [ "$cap" = avx2 ] && [ "$has_avx2" != 1 ]; }; then
    status="not available on this CPU (no ${cap^^})"
  elif [ -n "${seen[$key]:-}" ]; then
    status="same kernels as ${seen[$key]} on this CPU"
  fi
  if [ -z "$status" ]; then
    seen[$key]=$name
    args=(-q -p no:cacheprovider -m numerics --threads "$threads" --junitxml "$out/$name.xml")
    [ "$mkl" = off ] && args+=(--no-mkldnn)
    envs=()
    [ "$cap" != - ] && envs+=("ATEN_CPU_CAPABILITY=$cap")
    [ "$isa" != - ] && envs+=("ONEDNN_MAX_CPU_ISA=$isa")
    cmd="${envs[*]:+${envs[*]} }python -m pytest ${args[*]} $*"
    if [ "$plan_only" = 1 ]; then
      status="would run: $cmd"
    else
      echo "cpu_matrix: $name: $cmd" >&2
      start=$SECONDS
      env "${envs[@]}" python -m pytest "${args[@]}" "$@" >"$out/$name.log" 2>&1
      rc=$? seconds=$((SECONDS - start))
      status="rc=$rc"
      tail -1 "$out/$name.log" >&2
    fi
  fi
  printf '%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\n' "$name" "$cap" "$isa" "$mkl" "$threads" "$eff_cap / $eff_isa" \
    "$status" "$seconds" >>"$results"
done

python - "$results" "$out" "$plan_only" <<'EOF'
"""The summary: one line per setting, then which setting failed which test."""
import sys
import xml.etree.ElementTree as ET
from pathlib import Path

results, out, plan_only = Path(sys.argv[1]), Path(sys.argv[2]), sys.argv[3] == "1"
rows, failed, bad = [], {}, False
for line in results.read_text().splitlines():
    name, cap, isa, mkl, threads, effective, status, seconds = line.split("\t")
    xml = out / f"{name}.xml"
    if status.startswith("rc="):
        rc = int(status[3:])
        counts = {"passed": 0, "failed": 0, "skipped": 0}
        if xml.exists():
            for case in ET.parse(xml).iter("testcase"):
                test = f"{case.get('classname').replace('.', '/')}.py::{case.get('name')}"
                if case.find("failure") is not None or case.find("error") is not None:
                    counts["failed"] += 1
                    failed.setdefault(test, []).append(name)
                elif case.find("skipped") is not None:
                    counts["skipped"] += 1
                else:
                    counts["passed"] += 1
        status = (f"{counts['passed']} passed, {counts['failed']} failed, {counts['skipped']} "
                  f"skipped in {seconds} s")
        if rc not in (0, 1) or not xml.exists():
            status += f" (pytest exit status {rc}: see {out / (name + '.log')})"
        bad |= rc != 0
    rows.append((name, cap, isa, mkl, threads, effective, status))

head = ("setting", "ATEN_CPU_CAPABILITY", "ONEDNN_MAX_CPU_ISA", "oneDNN", "threads",
        "kernels here (ATen / oneDNN)", "result")
widths = [max(len(str(r[i])) for r in [head, *rows]) for i in range(len(head))]
print()
for r in [head, *rows]:
    print("  ".join(str(c).ljust(w) for c, w in zip(r, widths)).rstrip())
if plan_only:
    sys.exit(0)
print()
if failed:
    print("failed tests, and the settings that failed them:")
    for test, names in sorted(failed.items()):
        print(f"  {test}: {', '.join(names)}")
elif not bad:
    print("every setting that ran passed every numerics test")
sys.exit(1 if bad else 0)
EOF
