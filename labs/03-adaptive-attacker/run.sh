#!/usr/bin/env bash
# Every command of this lab, as its README.md gives them: make lab LAB=03 (from the repository root).
set -euo pipefail
fedsim sweep labs/03-adaptive-attacker/sweep.toml --out runs/lab03 "$@"
