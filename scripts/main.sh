#!/usr/bin/env bash
# The main job: set up, then report MobileNet's cost and check it against the paper's tables.
set -euo pipefail
source "$(dirname "${BASH_SOURCE[0]}")/setup.sh"
mkdir -p runs
mobilenets models --output runs/models.csv --format csv
mobilenets profile --model mobilenet_v1_1.0_224
mobilenets paper-tables --strict --output runs/paper_tables.txt
tail -n 1 runs/paper_tables.txt
