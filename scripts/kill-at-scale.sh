#!/usr/bin/env bash
# The crash-safety test (crates/cli/tests/sync_kill.rs) at the scale issue 5 asks for, on a release
# build: a simulated network of 10,000 repos and 1,000,000 events, `butterfly sync` killed with
# SIGKILL at 20 random moments (each run up to 20 s: during the first backfill, later backfills and
# the live stream), then left to catch up; the database must equal the simulator's ground truth.
# Usage: scripts/kill-at-scale.sh [REPOS] [EVENTS]   (about 20 minutes on two cores)
set -euo pipefail
cd "$(dirname "$0")/.."
export BUTTERFLY_KILL_REPOS="${1:-10000}"
export BUTTERFLY_KILL_EVENTS="${2:-1000000}"
export BUTTERFLY_KILL_RATE="${BUTTERFLY_KILL_RATE:-20000}"
export BUTTERFLY_KILL_MAX_MS="${BUTTERFLY_KILL_MAX_MS:-20000}"
export BUTTERFLY_KILL_DEADLINE="${BUTTERFLY_KILL_DEADLINE:-3600}"
time cargo test --release --locked -p butterfly --test sync_kill -- --nocapture
