#!/usr/bin/env bash
# Read latency and throughput of `butterfly serve` on a store of about 1,000,000 records while
# live sync writes into it, measured with wrk (Debian's `wrk` package):
#   1. a simulated network; `butterfly sync --once` backfills it as it stands at event BACKFILL_AT
#      (about 1,000,000 records with the defaults);
#   2. `butterfly serve` on that database follows the rest of the log as its live stream
#      (`--relay file:`), verifying and writing as fast as it can;
#   3. meanwhile wrk runs getRecord, then listRecords (limit 50), then getBacklinks (limit 16), on
#      random keys and link targets sampled from the store, for DURATION each: p50/p99 latency and
#      requests/s.
# Everything shares this machine's cores: wrk, the server and the writing engine.
# Usage: scripts/bench-serve.sh
#   env: REPOS=10000 EVENTS=1600000 BACKFILL_AT=1300000 DURATION=30s CONNECTIONS=16
set -euo pipefail
cd "$(dirname "$0")/.."
repos="${REPOS:-10000}"
events="${EVENTS:-1600000}"
backfill_at="${BACKFILL_AT:-1300000}"
duration="${DURATION:-30s}"
connections="${CONNECTIONS:-16}"
work="${BUTTERFLY_BENCH_DIR:-bench-serve}"
command -v wrk >/dev/null || { echo "bench-serve: needs wrk (apt-get install wrk)" >&2; exit 2; }
. scripts/bench-network.sh
bench_network "$work" "$repos" "$events" "$backfill_at"
pids="$sim_pid"
trap 'kill $pids 2>/dev/null || true' EXIT
db="$work/serve-$repos-$events-$backfill_at.duckdb"
# The backfilled copy is the cache: a backfill that was interrupted left none, and starts again.
if [ ! -f "$db.backfilled" ]; then
  rm -f "$db" "$db.wal"
  echo "== backfill: sync --once from the simulator at event $backfill_at"
  "$bin" sync "$work/all.json" --once -q --store "duckdb:$db" --relay "$url" --plc "$url" \
    --handle-resolver "$url" --allow-private-network --concurrency 16 --per-host 16
  cp "$db" "$db.backfilled.part" && mv "$db.backfilled.part" "$db.backfilled"
else
  cp "$db.backfilled" "$db"
  rm -f "$db.wal"
fi
"$bin" query --db "$db" "SELECT count(*) AS records, count(DISTINCT did) AS repos FROM records"

# Random keys, as wrk scripts.
"$bin" query --db "$db" --json \
  "SELECT did, collection, rkey FROM records USING SAMPLE 20000 ROWS" > "$work/keys.json"
"$bin" query --db "$db" --json \
  "SELECT target, collection, path FROM links USING SAMPLE 5000 ROWS" > "$work/targets.json"
python3 - "$work" <<'PY'
import json, sys, urllib.parse
work = sys.argv[1]
rows = [json.loads(line) for line in open(f"{work}/keys.json") if line.strip()]
def lua(name, paths):
    with open(f"{work}/{name}.lua", "w") as out:
        out.write("local paths = {\n")
        for p in paths:
            out.write("  %s,\n" % json.dumps(p))
        out.write("}\nrequest = function()\n  return wrk.format('GET', paths[math.random(#paths)])\nend\n")
keys = [(r["did"], r["collection"], r["rkey"]) for r in rows]
lua("get", ["/xrpc/com.atproto.repo.getRecord?repo=%s&collection=%s&rkey=%s" % k for k in keys])
lua("list", sorted({"/xrpc/com.atproto.repo.listRecords?repo=%s&collection=%s&limit=50" % k[:2] for k in keys}))
quote = lambda text: urllib.parse.quote(text, safe="")
targets = [json.loads(line) for line in open(f"{work}/targets.json") if line.strip()]
lua("backlinks", [
    "/xrpc/blue.microcosm.links.getBacklinks?subject=%s&source=%s" % (
        quote(t["target"]), quote("%s:%s" % (t["collection"], t["path"].lstrip("."))))
    for t in targets
])
PY

echo "== serve: following events $((backfill_at + 1))..$events live while wrk runs"
"$bin" serve "$work/all.json" --db "$db" --listen 127.0.0.1:0 -q \
  --relay "file:$log" --cursor "$backfill_at" --plc "$url" --handle-resolver "$url" \
  --allow-private-network --event-log 0 > "$work/serve.out" &
pids="$pids $!"
serve_pid=$!
until listening=$(head -n 1 "$work/serve.out" 2>/dev/null) && [ -n "$listening" ]; do
  kill -0 "$serve_pid" 2>/dev/null || { echo "bench-serve: butterfly serve exited" >&2; exit 1; }
  sleep 0.2
done
base=$(printf '%s' "$listening" | sed -E 's/.*"listening":"([^"]+)".*/\1/')
sleep 5
before=$(curl -s "$base/metrics" | awk '/^butterfly_live_changes_total /{print $2}')
for name in get list backlinks; do
  echo "== $name: wrk -c$connections -d$duration"
  wrk -t2 -c"$connections" -d"$duration" --latency -s "$work/$name.lua" "$base"
done
after=$(curl -s "$base/metrics" | awk '/^butterfly_live_changes_total /{print $2}')
echo "== live changes written during the load: $((${after%.*} - ${before%.*}))"
curl -s "$base/health"; echo
