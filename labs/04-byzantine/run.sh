#!/usr/bin/env bash
# Every command of this lab, as its README.md gives them: make lab LAB=04 (from the repository root).
set -euo pipefail
fedsim sweep labs/04-byzantine/sweep.toml --out runs/lab04 "$@"
fedsim sweep labs/04-byzantine/robust.toml --out runs/lab04-robust "$@"
