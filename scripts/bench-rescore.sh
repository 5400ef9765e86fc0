#!/usr/bin/env bash
# Rescoring after a new champion (issue 7): backfills CUSTOMERS customers into a fresh
# topic prefix and applies them without scoring (`custflow process`), then starts
# `custflow run` (PostgreSQL sink) beside a live stream of RATE events/s. The model job's
# first model is a new model for the processor, which rescores every customer in slices
# between live batches and emits a score for each. Reports the pass's time and rate, when
# the sink had written every row, the live events' freshness meanwhile, and the `run`
# process's peak RSS.
# Usage: scripts/bench-rescore.sh [customers] [rate] [run flags…], e.g.
# `1000000 2000 --rescore-slice 5000`.
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"
cd "$ROOT"
CUSTOMERS="${1:-1000000}"
RATE="${2:-2000}"
shift 2 || shift $# # the rest goes to `custflow run`
bash scripts/stack.sh up >/dev/null
BIN="$(custflow_bin)"
TAG="rescore$(date +%s)"
PREFIX="$TAG."
PORT=18393
SINK="$(scratch_db "$TAG")"
EVENTS=$(backfill_year "$BIN" "$PREFIX" "$CUSTOMERS")
say "applying $EVENTS events (no scoring yet)"
"$BIN" process --topic-prefix "$PREFIX" --until-events "$EVENTS" --json >/dev/null 2>&1
# One model for the whole pass: a refit promoted mid-pass would restart its count.
CUSTFLOW_LOG="warn,custflow_processors=info" "$BIN" run --topic-prefix "$PREFIX" --sink "$SINK" --http "127.0.0.1:$PORT" \
  --model-every-secs 3600 "$@" 2>"$LOGS/bench-rescore.log" &
RUN=$!
LIVE=""
trap 'kill $RUN $LIVE 2>/dev/null || true' EXIT
wait_for 120 "the API" curl -sf "http://127.0.0.1:$PORT/healthz" -o /dev/null
say "live: $RATE events/s until the pass is done"
"$BIN" synth --topic-prefix "$PREFIX" --customers "$CUSTOMERS" --days 365 --live-only \
  --rate "$RATE" --duration-secs 3600 --json >/dev/null 2>&1 &
LIVE=$!
metric() { curl -sf "http://127.0.0.1:$PORT/metrics" | awk -v m="$1" '$1 == m {print $2}'; }
wait_for 600 "a new model: the pass" grep -q "new model: rescoring every customer" "$LOGS/bench-rescore.log"
START=$(date +%s.%N)
curl -sf "http://127.0.0.1:$PORT/metrics" >"$DATA/bench-rescore-before.txt"
# The live stream's lag meanwhile (messages behind, all input partitions), every second.
MAX_LAG=0
until grep -q "rescoring pass done" "$LOGS/bench-rescore.log"; do
  LAG=$(curl -sf "http://127.0.0.1:$PORT/metrics" | awk '$1 ~ /^custflow_consumer_lag\{/ {s += $2} END {print s + 0}')
  ((LAG > MAX_LAG)) && MAX_LAG=$LAG
  sleep 1
done
DONE=$(date +%s.%N)
curl -sf "http://127.0.0.1:$PORT/metrics" >"$DATA/bench-rescore-after.txt"
RESCORED=$(metric custflow_model_rescored_total)
EMITTED=$(metric custflow_scores_emitted_total)
say "waiting for the sink to write the $EMITTED scores emitted so far"
sink_caught_up() {
  local rows
  rows=$(curl -sf "http://127.0.0.1:$PORT/metrics" |
    awk '$1 ~ /^custflow_sink_rows_total/ && $1 !~ /undecodable/ {s += $2} END {print s + 0}')
  ((rows >= EMITTED))
}
wait_for 1800 "the sink" sink_caught_up
ROWS=$(date +%s.%N)
PEAK=$(awk '/VmHWM/{print $2}' "/proc/$RUN/status")
kill "$LIVE" 2>/dev/null || true
PYTHONPATH="$ROOT/scripts" python3 - "$START" "$DONE" "$ROWS" "$RESCORED" "$MAX_LAG" "$DATA/bench-rescore-before.txt" "$DATA/bench-rescore-after.txt" "$PEAK" <<'PY'
import json, sys
from histogram import quantiles
start, done, rows, rescored = float(sys.argv[1]), float(sys.argv[2]), float(sys.argv[3]), int(float(sys.argv[4]))
max_lag = int(sys.argv[5])
live = quantiles(sys.argv[6], sys.argv[7], ["custflow_freshness_seconds"])["custflow_freshness_seconds"]
print(json.dumps({"bench": "rescore", "customers_rescored": rescored,
  "pass_seconds": round(done - start, 1), "customers_per_sec": round(rescored / (done - start)),
  "rows_written_seconds": round(rows - start, 1),
  "live_events_during_pass": live["count"], "live_max_lag_messages": max_lag,
  "live_freshness_p50_le_s": live["p50_le_s"], "live_freshness_p99_le_s": live["p99_le_s"],
  "run_peak_rss_mib": round(int(sys.argv[8]) / 1024, 1)}))
PY
