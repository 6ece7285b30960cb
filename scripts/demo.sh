#!/usr/bin/env bash
# The README's main job, offline: build Butterfly, generate a simulated atproto network (signed
# repos, a sync 1.1 firehose, a PLC directory), serve it on loopback, and sync the example selector
# examples/profiles.json from it into DuckDB (backfill, then the live stream for 20 seconds), then
# show what was kept.
#
# Usage: scripts/demo.sh [REPOS] [EVENTS]      (default 2000 repos, 100000 events)
set -euo pipefail
cd "$(dirname "$0")/.."
repos="${1:-2000}"
events="${2:-100000}"
work="${BUTTERFLY_DEMO_DIR:-demo}"
mkdir -p "$work"

cargo build --release --locked -p butterfly
bin="$PWD/target/release/butterfly"
if [ -n "${CARGO_TARGET_DIR:-}" ]; then bin="$CARGO_TARGET_DIR/release/butterfly"; fi

if [ ! -f "$work/net-$repos-$events.log" ]; then
  echo "== generating a simulated network: $repos repos, $events events"
  "$bin" sim firehose --repos "$repos" --events "$events" --out "$work/net-$repos-$events.log" \
    --identities-out "$work/net-$repos-$events.json"
fi

echo "== serving it on loopback (the firehose advances at 5,000 events/s, each event stamped as it is sent)"
coproc SIM { exec "$bin" sim serve --frames "$work/net-$repos-$events.log" \
  --identities "$work/net-$repos-$events.json" --rate 5000 --retime; }
trap 'kill "$SIM_PID" 2>/dev/null || true' EXIT
read -r ready <&"${SIM[0]}"
url=$(printf '%s' "$ready" | sed -E 's/.*"url":"([^"]+)".*/\1/')
echo "   $url"

echo "== butterfly sync examples/profiles.json (stops after 20 s; Ctrl-C stops it too)"
rm -f "$work/butterfly.duckdb" "$work/butterfly.duckdb.wal"
timeout --signal=INT --preserve-status 20 "$bin" sync examples/profiles.json \
  --store "duckdb:$work/butterfly.duckdb" --relay "$url" --plc "$url" --handle-resolver "$url" --allow-private-network || true

echo "== butterfly status"
"$bin" status --db "$work/butterfly.duckdb"
echo "== butterfly query"
"$bin" query --db "$work/butterfly.duckdb" \
  "SELECT did, record->>'displayName' AS name FROM records WHERE collection = 'app.bsky.actor.profile' LIMIT 5"
