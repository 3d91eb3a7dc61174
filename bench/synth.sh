#!/usr/bin/env bash
# Time and size of the synthetic crawl presets (docs/benchmarks.md quotes its output).
# Usage: bench/synth.sh [OUT_DIR]   (needs hyperfine: apt-get install hyperfine)
set -euo pipefail
cd "$(dirname "$0")/.."
out=${1:-/tmp/webjft-bench-synth}
webjft=.venv/bin/webjft
mkdir -p "$out"
hyperfine --runs 3 --export-markdown "$out/synth-demo.md" \
  "$webjft synth $out/demo --preset demo --overwrite"
hyperfine --runs 3 --export-markdown "$out/synth-bench-noimages.md" \
  "$webjft synth $out/bench-noimages --preset bench --no-images --overwrite"
/usr/bin/time -v "$webjft" synth "$out/bench" --preset bench --overwrite 2> "$out/bench-time.txt" | tail -n 3
grep -E "Elapsed|Maximum resident" "$out/bench-time.txt"
du -sh "$out/demo" "$out/bench-noimages" "$out/bench"
