#!/usr/bin/env bash
# Every command of this lab, as its README.md gives them: make lab LAB=01 (from the repository root).
set -euo pipefail
fedsim sweep labs/01-fedavg-backdoor/sweep.toml --out runs/lab01 "$@"
