#!/usr/bin/env bash
# Wall time and peak memory of `webjft build` and `webjft reselect` (docs/benchmarks.md quotes its output).
# Usage: bench/build.sh [OUT_DIR] [PRESET...]   (default presets: demo bench; crawls without image bytes)
set -euo pipefail
cd "$(dirname "$0")/.."
out=${1:-/tmp/webjft-bench-build}
shift || true
presets=${*:-demo bench}
webjft=.venv/bin/webjft
mkdir -p "$out"
for preset in $presets; do
  crawl="$out/crawl-$preset"
  [ -f "$crawl/synth.json" ] || "$webjft" synth "$crawl" --preset "$preset" --no-images > /dev/null
  for mode in in_memory multi_processing; do
    ds="$out/$preset-$mode"
    /usr/bin/time -v "$webjft" build "$crawl" "$ds" --overwrite --direct_running_mode=$mode \
      2> "$out/$preset-$mode-time.txt" | grep -E "│ (images|labels|seconds) " || true
    echo "$preset $mode: $(grep -E 'Elapsed|Maximum resident' "$out/$preset-$mode-time.txt" | tr -s ' ' | tr '\n' ' ')"
  done
  /usr/bin/time -v "$webjft" reselect "$out/$preset-in_memory" --target-precision 0.9 --overwrite \
    --direct_running_mode=in_memory 2> "$out/$preset-reselect-time.txt" > /dev/null
  echo "$preset reselect 0.9: $(grep -E 'Elapsed|Maximum resident' "$out/$preset-reselect-time.txt" | tr -s ' ' | tr '\n' ' ')"
  diff <(cd "$out/$preset-in_memory" && find candidates rejects shards classes.parquet -type f | sort | xargs sha256sum) \
       <(cd "$out/$preset-multi_processing" && find candidates rejects shards classes.parquet -type f | sort | xargs sha256sum) \
    > /dev/null && echo "$preset: in_memory and multi_processing outputs are byte-identical"
done
