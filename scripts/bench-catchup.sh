#!/usr/bin/env bash
# Memory and speed while catching up (issue 34): backfills CUSTOMERS customers into a
# fresh topic prefix, then starts `custflow run` (PostgreSQL sink) on the whole backlog,
# so every input partition lags by the backfill and, once scores flow, the sink's inputs
# lag too: the case in which the consumers' prefetch (librdkafka's local queues) is at
# its largest. Reports the time until every event is applied, the `run` process's peak
# RSS (VmHWM) and its RSS then.
# Usage: scripts/bench-catchup.sh [customers] [run flags…]; librdkafka settings can be
# tried with CUSTFLOW_KAFKA_* variables (e.g. CUSTFLOW_KAFKA_QUEUED_MIN_MESSAGES=100000).
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"
cd "$ROOT"
CUSTOMERS="${1:-1000000}"
shift || true # the rest goes to `custflow run`
bash scripts/stack.sh up >/dev/null
BIN="$(custflow_bin)"
TAG="catchup$(date +%s)"
PREFIX="$TAG."
PORT=18394
SINK="$(scratch_db "$TAG")"
EVENTS=$(backfill_year "$BIN" "$PREFIX" "$CUSTOMERS")
say "catching up on $EVENTS events with \`custflow run\`"
START=$(date +%s.%N)
"$BIN" run --topic-prefix "$PREFIX" --sink "$SINK" --http "127.0.0.1:$PORT" "$@" \
  2>"$LOGS/bench-catchup.log" &
RUN=$!
trap 'kill $RUN 2>/dev/null || true' EXIT
metric() { curl -sf "http://127.0.0.1:$PORT/metrics" | awk -v m="$1" '$1 == m {print $2}'; }
applied_all() {
  kill -0 "$RUN" 2>/dev/null || die "custflow run stopped; see $LOGS/bench-catchup.log"
  local n
  n=$(metric custflow_events_applied_total)
  [[ -n "$n" ]] && awk -v n="$n" -v e="$EVENTS" 'BEGIN {exit !(n >= e)}'
}
wait_for 3600 "every event applied" applied_all
DONE=$(date +%s.%N)
PEAK=$(awk '/VmHWM/{print $2}' "/proc/$RUN/status")
RSS=$(awk '/VmRSS/{print $2}' "/proc/$RUN/status")
python3 - "$EVENTS" "$START" "$DONE" "$PEAK" "$RSS" <<'PY'
import json, sys
events, start, done = int(sys.argv[1]), float(sys.argv[2]), float(sys.argv[3])
peak, rss = int(sys.argv[4]), int(sys.argv[5])
print(json.dumps({"bench": "catchup", "events": events, "seconds": round(done - start, 1),
  "events_per_sec": round(events / (done - start)), "run_peak_rss_mib": round(peak / 1024, 1),
  "run_rss_when_caught_up_mib": round(rss / 1024, 1)}))
PY
