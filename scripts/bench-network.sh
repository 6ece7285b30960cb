# Sourced by the bench scripts: builds Butterfly, generates a simulated network (cached in the
# work folder), and serves its first frames on loopback.
#   bench_network WORK REPOS EVENTS UPTO
# sets `bin` (the release binary), `log` (the whole frame log), `url` (the simulator, which is also
# its PLC directory and handle resolver) and `sim_pid`, and writes WORK/all.json, a selector of
# every repo the simulator lists. An EXIT trap stops the simulator; a caller that sets its own
# trap kills "$sim_pid" in it.
bench_network() {
  local work="$1" repos="$2" events="$3" upto="$4"
  mkdir -p "$work"
  cargo build --release --locked -p butterfly
  bin="${CARGO_TARGET_DIR:-$PWD/target}/release/butterfly"
  log="$work/net-$repos-$events.log"
  # The identities belong to their log: another network's in the same folder would not resolve.
  identities="$work/net-$repos-$events.json"
  if [ ! -f "$log" ] || [ ! -f "$identities" ]; then
    echo "== generating $events events over $repos repos"
    # Written aside and moved in whole, so that an interrupted run leaves no short log behind.
    "$bin" sim firehose --repos "$repos" --events "$events" --out "$log.part" \
      --identities-out "$identities.part"
    mv "$identities.part" "$identities"
    mv "$log.part" "$log"
  fi
  python3 scripts/first-frames.py "$log" "$work/first.log" "$upto"
  coproc SIM { exec "$bin" sim serve --frames "$work/first.log" --identities "$identities"; }
  sim_pid="$SIM_PID"
  trap 'kill "$sim_pid" 2>/dev/null || true' EXIT
  local ready
  if ! read -r -t 120 ready <&"${SIM[0]}"; then
    echo "bench: the simulator did not start within 120 s" >&2
    return 1
  fi
  url=$(printf '%s' "$ready" | sed -E 's/.*"url":"([^"]+)".*/\1/')
  printf '{"select":[{"where":{"service":"%s","method":"com.atproto.sync.listRepos","attr":"repos.*.did","pagination":{"param":"cursor","attr":"cursor"}},"tag":"all"}]}' "$url" \
    > "$work/all.json"
}
