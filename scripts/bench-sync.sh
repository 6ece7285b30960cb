#!/usr/bin/env bash
# Sync throughput into DuckDB, end to end, on a simulated network:
#   1. backfill: `butterfly sync --once` of every repo of a network served by `butterfly sim serve`
#      holding the first half of the log (records/s, peak RSS);
#   2. live: the second half of the log replayed as the live stream (`--relay file:`), every commit
#      verified and applied to the database backfilled in step 1 (events/s, peak RSS).
# Usage: scripts/bench-sync.sh [REPOS] [EVENTS]   (default 10000 repos, 1000000 events)
set -euo pipefail
cd "$(dirname "$0")/.."
repos="${1:-10000}"
events="${2:-1000000}"
half=$((events / 2))
work="${BUTTERFLY_BENCH_DIR:-bench-sync}"
. scripts/bench-network.sh
bench_network "$work" "$repos" "$events" "$half"
rm -f "$work/bench.duckdb" "$work/bench.duckdb.wal"

echo "== backfill: sync --once from the simulator at event $half"
/usr/bin/time -f '%e s, peak RSS %M KiB' "$bin" sync "$work/all.json" --once \
  --store "duckdb:$work/bench.duckdb" --relay "$url" --plc "$url" --handle-resolver "$url" \
  --allow-private-network --concurrency 16 --per-host 16
"$bin" query --db "$work/bench.duckdb" "SELECT count(*) AS records, count(DISTINCT did) AS repos FROM records"

echo "== live: events $((half + 1))..$events replayed as the stream, verified, into the same database"
/usr/bin/time -f '%e s, peak RSS %M KiB' "$bin" sync "$work/all.json" \
  --store "duckdb:$work/bench.duckdb" --relay "file:$log" --cursor "$half" --plc "$url" \
  --handle-resolver "$url" --allow-private-network
"$bin" status --db "$work/bench.duckdb"
