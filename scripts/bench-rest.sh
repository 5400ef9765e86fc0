#!/usr/bin/env bash
# REST ingest benchmark (issue 4) with custflow's own load generator against `custflow
# serve` on loopback: single-event POSTs at a fixed 2,000 requests/s (ROUNDS rounds of
# 15 s after a warm-up), then NDJSON batches of 500 as fast as they go. Prints the load
# generator's JSON summaries. tansu's in-memory storage slows down as it fills, so run
# it on a freshly started broker (scripts/stack.sh down && scripts/stack.sh up). Usage: scripts/bench-rest.sh [rounds]
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"
cd "$ROOT"
ROUNDS="${1:-3}"
bash scripts/stack.sh up >/dev/null
BIN="$(custflow_bin)"
PREFIX="restbench-$(date +%s)."
PORT=18391
"$BIN" serve --topic-prefix "$PREFIX" --http "127.0.0.1:$PORT" 2>"$LOGS/bench-rest.log" &
SERVER=$!
trap 'kill $SERVER 2>/dev/null || true' EXIT
wait_for 60 "custflow serve" curl -sf "http://127.0.0.1:$PORT/healthz" -o /dev/null
TARGET="http://127.0.0.1:$PORT"
say "warm-up: single events"
"$BIN" synth --topic-prefix "$PREFIX" --customers 20000 --days 30 --live-only --rate 2000 \
  --duration-secs 5 --target "$TARGET" --batch 1 --concurrency 16 --json >/dev/null
for round in $(seq "$ROUNDS"); do
  say "single-event POSTs at 2,000/s, round $round"
  "$BIN" synth --topic-prefix "$PREFIX" --customers 20000 --days 30 --live-only --rate 2000 \
    --duration-secs 15 --target "$TARGET" --batch 1 --concurrency 16 --json | tail -1
done
say "NDJSON batches of 500, concurrency 8"
"$BIN" synth --topic-prefix "$PREFIX" --customers 100000 --days 365 --target "$TARGET" \
  --batch 500 --concurrency 8 --json | tail -1
