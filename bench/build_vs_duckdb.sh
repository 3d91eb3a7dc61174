#!/usr/bin/env bash
# Side by side, in one run: DuckDB's read-match-aggregate SQL and `webjft build` on the same crawl files.
# Usage: bench/build_vs_duckdb.sh CRAWL [OUT_DIR]   (build a crawl first: webjft synth CRAWL --preset bench --no-images)
# Compare DuckDB with the build's read+aggregate stage (printed by the build) and with the whole build.
set -euo pipefail
cd "$(dirname "$0")/.."
crawl=$1
out=${2:-/tmp/webjft-bench-vs-duckdb}
mkdir -p "$out"
/usr/bin/time -v .venv/bin/python bench/duckdb_match_aggregate.py "$crawl" 2> "$out/duckdb-time.txt"
echo "duckdb: $(grep -E 'Elapsed|Maximum resident' "$out/duckdb-time.txt" | tr -s ' ' | tr '\n' ' ')"
/usr/bin/time -v .venv/bin/webjft build "$crawl" "$out/dataset" --overwrite --direct_running_mode=in_memory \
  2> "$out/build-time.txt" | grep -E "read|aggregate|seconds" || true
echo "webjft build (in_memory): $(grep -E 'Elapsed|Maximum resident' "$out/build-time.txt" | tr -s ' ' | tr '\n' ' ')"
