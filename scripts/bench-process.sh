#!/usr/bin/env bash
# Processing benchmark (issue 5): synthesises events into a fresh topic prefix, then
# times one processor applying them all into Redis, and reports events/s, Redis memory
# per customer, the stored state's bytes per customer (mean, p50, p99, max:
# scripts/state-sizes.sh) and the processor's peak RSS. Usage: scripts/bench-process.sh [customers]
# [process flags…], e.g. `1000000 --no-sales-rollups` to measure without the sales rollups.
# BENCH_REDIS_NODES (ports, default the stack's 6379) names the Redis nodes whose memory
# and keys are counted: scripts/bench-cluster.sh sets it to a Redis Cluster's;
# BENCH_PREFIX sets the topic prefix (default bench-<time>.).
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"
cd "$ROOT"
CUSTOMERS="${1:-100000}"
shift || true
bash scripts/stack.sh up >/dev/null
BIN="$(custflow_bin)"
PREFIX="${BENCH_PREFIX:-bench-$(date +%s).}"
say "generating events of $CUSTOMERS customers into ${PREFIX}*"
SYNTH=$("$BIN" synth --customers "$CUSTOMERS" --days 365 --topic-prefix "$PREFIX" --json | tail -1)
EVENTS=$(python3 -c "import json,sys; print(json.loads(sys.argv[1])['events'])" "$SYNTH")
NODES="${BENCH_REDIS_NODES:-$REDIS_PORT}"
# used_memory summed over the nodes.
redis_memory() {
  local sum=0 port
  for port in $NODES; do
    sum=$((sum + $(redis-cli -p "$port" info memory | awk -F: '/^used_memory:/{print $2}' | tr -d '\r')))
  done
  echo "$sum"
}
MEM0=$(redis_memory)
say "processing $EVENTS events"
"$BIN" process --clock event --topic-prefix "$PREFIX" --until-events "$EVENTS" "$@" --json >"$DATA/bench-process.json" 2>/dev/null &
PID=$!
PEAK=0
while kill -0 "$PID" 2>/dev/null; do
  RSS=$(awk '/VmHWM/{print $2}' "/proc/$PID/status" 2>/dev/null || echo 0)
  [[ -n "$RSS" && "$RSS" -gt "$PEAK" ]] && PEAK=$RSS
  sleep 0.2
done
wait "$PID"
MEM1=$(redis_memory)
KEYS=0
for port in $NODES; do
  # The standalone layout's state keys, or a cluster's (docs/deviations.md).
  N=$(redis-cli -p "$port" --scan --pattern "${PREFIX}cf:{*}:f" | wc -l)
  C=$(redis-cli -p "$port" --scan --pattern "${PREFIX}cf:{p*}:*:f" | wc -l)
  KEYS=$((KEYS + N + C))
done
SIZES=$(bash scripts/state-sizes.sh "$PREFIX" $NODES)
python3 - "$SYNTH" "$(tail -1 "$DATA/bench-process.json")" "$MEM0" "$MEM1" "$KEYS" "$PEAK" "$SIZES" <<'PY'
import json, sys
synth, proc = json.loads(sys.argv[1]), json.loads(sys.argv[2])
mem0, mem1, keys, peak = int(sys.argv[3]), int(sys.argv[4]), int(sys.argv[5]), int(sys.argv[6])
sizes = json.loads(sys.argv[7])
print(json.dumps({"bench": "process", "events": synth["events"], "synth_events_per_sec": round(synth["events_per_sec"]),
  "process_events_per_sec": round(proc["events_per_sec"]), "seconds": round(proc["seconds"], 2),
  "sustained_events_per_sec": round(proc["events_per_sec_after_first"] or 0),
  "customers": keys, "redis_bytes_per_customer": round((mem1 - mem0) / max(keys, 1)),
  "state_bytes": {k: sizes[k] for k in ("mean_bytes", "p50_bytes", "p99_bytes", "max_bytes")},
  "redis_write_p99_ms": proc["redis_write_p99_ms"], "processor_peak_rss_mib": round(peak / 1024, 1)}))
PY
