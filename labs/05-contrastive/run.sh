#!/usr/bin/env bash
# Every command of this lab, as its README.md gives them: make lab LAB=05 (from the repository root).
# Re-running skips what is done (a sweep skips its completed cells; the deployment is skipped
# while runs/lab05-deploy holds a summary — delete that folder to deploy again).
set -euo pipefail
fedsim sweep labs/05-contrastive/sweep.toml --out runs/lab05 "$@"
fedsim sweep labs/05-contrastive/simclr.toml --out runs/lab05-simclr "$@"
fedsim sweep labs/05-contrastive/deploy.toml --out runs/lab05-sim "$@"
if [ -f runs/lab05-deploy/summary.json ]; then
    echo "runs/lab05-deploy holds a finished deployment: skipped (delete it to deploy again)"
else
    fedsim deploy labs/05-contrastive/deploy.toml --out runs/lab05-deploy "$@"
fi
