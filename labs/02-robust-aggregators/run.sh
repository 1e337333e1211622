#!/usr/bin/env bash
# Every command of this lab, as its README.md gives them: make lab LAB=02 (from the repository root).
set -euo pipefail
fedsim sweep labs/02-robust-aggregators/sweep.toml --out runs/lab02 "$@"
