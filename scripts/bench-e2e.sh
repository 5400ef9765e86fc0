#!/usr/bin/env bash
# Event to score row (issue 7): `custflow run` with a PostgreSQL sink, fed live events at
# RATE/s for SECONDS after a short backfill (so a model exists); then the p50/p99 of three
# histograms from /metrics: event produced → features in Redis (processor freshness),
# score produced → row committed (sink latency), and event produced → its score's row
# committed (the sink, from the score's event-time header).
# Usage: scripts/bench-e2e.sh [rate] [seconds]
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"
cd "$ROOT"
RATE="${1:-10000}"
SECS="${2:-60}"
bash scripts/stack.sh up >/dev/null
BIN="$(custflow_bin)"
TAG="e2e$(date +%s)"
PREFIX="$TAG."
PORT=18392
SINK="$(scratch_db "$TAG")"
say "backfill: 20,000 customers over 60 days into ${PREFIX}*"
"$BIN" synth --topic-prefix "$PREFIX" --customers 20000 --days 60 --json >/dev/null
"$BIN" run --topic-prefix "$PREFIX" --sink "$SINK" --http "127.0.0.1:$PORT" 2>"$LOGS/bench-e2e.log" &
RUN=$!
trap 'kill $RUN 2>/dev/null || true' EXIT
wait_for 120 "a current model" curl -sf "http://127.0.0.1:$PORT/v1/models/current" -o /dev/null
sleep 10 # the backfill's scores settle
curl -sf "http://127.0.0.1:$PORT/metrics" >"$DATA/bench-e2e-before.txt"
say "live: $RATE events/s for $SECS s"
"$BIN" synth --topic-prefix "$PREFIX" --customers 200000 --days 60 --live-only --rate "$RATE" \
  --duration-secs "$SECS" --json | tail -1
sleep 3 # the last scores reach the table
curl -sf "http://127.0.0.1:$PORT/metrics" >"$DATA/bench-e2e-after.txt"
PYTHONPATH="$ROOT/scripts" python3 - "$DATA/bench-e2e-before.txt" "$DATA/bench-e2e-after.txt" <<'PY'
import json, sys
from histogram import quantiles
# The live phase only: bucket counts after minus before.
names = ("custflow_freshness_seconds", "custflow_sink_latency_seconds",
         "custflow_event_to_row_seconds")
print(json.dumps({"bench": "event_to_row", **quantiles(sys.argv[1], sys.argv[2], names)}))
PY
