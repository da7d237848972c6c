#!/usr/bin/env bash
# Regenerate the leaderboard entries (leaderboard/entries/NAME.json) under protocol mm-v1, then the site.
#
#   benchmarks/leaderboard_entries.sh              # every entry below, one after another, then site/
#   benchmarks/leaderboard_entries.sh jpeg smoothing   # only these entries (no site)
#
# Each bench keeps its records in runs/bench/NAME/ and resumes from them (--resume), so a killed
# run continues where it stopped. PYTHON defaults to `python`; set OMP_NUM_THREADS as you like.
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-python}
declare -A ENTRY=(
  [tinybind]="tinybind"
  [tinybind-alt]="tinybind-alt"
  [jpeg]="tinybind --defense jpeg,quality=75"
  [bit-depth]="tinybind --defense bit-depth,bits=4"
  [random-resize-pad]="tinybind --defense random-resize-pad"
  [smoothing]="tinybind --defense smoothing,sigma=0.12"
  [calibration]="tinybind --defense calibration,modality=image,epochs=30,train_n=200"
  [fare]="tinybind --defense fare,modality=image,epochs=2,train_n=200"
)
ORDER=(tinybind tinybind-alt jpeg bit-depth random-resize-pad smoothing calibration fare)
names=("$@")
[ ${#names[@]} -eq 0 ] && names=("${ORDER[@]}")
mkdir -p leaderboard/entries runs/bench
for name in "${names[@]}"; do
  args=${ENTRY[$name]:?unknown entry $name (known: ${ORDER[*]})}
  start=$(date +%s)
  # shellcheck disable=SC2086
  $PY -m robustmm bench $args --protocol mm-v1 --out "leaderboard/entries/$name.json" \
      --work "runs/bench/$name" --resume -q
  echo "$name: $(( $(date +%s) - start ))s" >&2
done
if [ $# -eq 0 ]; then
  $PY -m robustmm leaderboard leaderboard/entries --out site
fi
