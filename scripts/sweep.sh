#!/usr/bin/env bash
# Run several configs one after another and print the table of their summaries:
#   scripts/sweep.sh OUTDIR configs/defenses/*.toml [-- --set rounds=5]
# Each run lands in OUTDIR/<config file name>; a finished run is skipped on a re-run.
set -uo pipefail
out=$1; shift
configs=(); extra=()
while (($#)); do
  if [[ $1 == -- ]]; then shift; extra=("$@"); break; fi
  configs+=("$1"); shift
done
fedsim=${FEDSIM:-fedsim}
dirs=()
for c in "${configs[@]}"; do
  d="$out/$(basename "$c" .toml)"
  dirs+=("$d")
  [[ -f $d/summary.json ]] && grep -q '"completed"' "$d/summary.json" && continue
  rm -rf "$d"
  $fedsim run "$c" --out "$d" "${extra[@]}" || echo "run $c failed (see $d/summary.md)" >&2
done
$fedsim table "${dirs[@]}" | tee "$out/table.md"
