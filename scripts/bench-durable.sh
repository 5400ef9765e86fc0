#!/usr/bin/env bash
# The cost of the durable local broker (issue 38): two private stacks started by
# scripts/stack.sh side by side in one run — tansu on its SQLite engine (the default) and
# on memory:// (the opt-in) — each with its own Redis, and on each:
#   1. produce rate: `custflow synth` backfilling CUSTOMERS customers (events/s);
#   2. processing rate: one `custflow process` applying them all (events/s after the first);
#   3. event → feature freshness: `custflow process` fed live events at RATE/s for SECS s
#      (p50/p99 of custflow_freshness_seconds over the live phase);
#   4. the broker's CPU while an idle `custflow process` waits (what polling costs).
# Usage: scripts/bench-durable.sh [customers] [rate] [seconds]
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"
cd "$ROOT"
CUSTOMERS="${1:-50000}"
RATE="${2:-2000}"
SECS="${3:-30}"
bash scripts/stack.sh up >/dev/null # builds custflow and installs tansu
BIN="$(custflow_bin)"
OUT="$DATA/bench-durable"
mkdir -p "$OUT"
STACKS=()
cleanup() {
  for s in "${STACKS[@]}"; do
    IFS=: read -r dir bport rport <<<"$s"
    CUSTFLOW_DATA="$dir" CUSTFLOW_BROKER_PORT="$bport" CUSTFLOW_REDIS_PORT="$rport" \
      bash scripts/stack.sh down >/dev/null 2>&1 || true
    rm -rf "$dir"
  done
}
trap cleanup EXIT

free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }
cpu_ticks() { awk '{print $14 + $15}' "/proc/$1/stat"; }

for engine in sqlite memory; do
  dir="$(mktemp -d)"
  bport=$(free_port)
  rport=$(free_port)
  STACKS+=("$dir:$bport:$rport")
  storage=""
  [[ $engine == memory ]] && storage="memory://tansu/"
  say "$engine: a private stack on broker $bport, Redis $rport"
  CUSTFLOW_DATA="$dir" CUSTFLOW_BROKER_PORT="$bport" CUSTFLOW_REDIS_PORT="$rport" \
    CUSTFLOW_BROKER_STORAGE="$storage" bash scripts/stack.sh up >/dev/null
  export CUSTFLOW_BROKERS="127.0.0.1:$bport" CUSTFLOW_REDIS_URL="redis://127.0.0.1:$rport"
  broker_pid=$(cat "$dir/tansu.pid")

  say "$engine: producing the backfill of $CUSTOMERS customers"
  "$BIN" synth --customers "$CUSTOMERS" --days 365 --topic-prefix bf. --json | tail -1 >"$OUT/$engine-produce.json"
  events=$(python3 -c "import json,sys; print(json.load(open(sys.argv[1]))['events'])" "$OUT/$engine-produce.json")
  say "$engine: processing $events events"
  "$BIN" process --clock event --topic-prefix bf. --until-events "$events" --http 127.0.0.1:0 --json \
    2>/dev/null | tail -1 >"$OUT/$engine-process.json"

  say "$engine: the broker while an idle processor waits (20 s)"
  "$BIN" process --topic-prefix bf. --http 127.0.0.1:0 >/dev/null 2>&1 &
  idle=$!
  sleep 10
  t0=$(cpu_ticks "$broker_pid")
  sleep 20
  t1=$(cpu_ticks "$broker_pid")
  kill "$idle"; wait "$idle" || true
  echo "{\"broker_cpu_idle_processor\": $(python3 -c "print(round(($t1 - $t0) / 100 / 20, 3))")}" >"$OUT/$engine-idle.json"

  say "$engine: live events at $RATE/s for $SECS s"
  port=$(free_port)
  backfill=$("$BIN" synth --customers 20000 --days 60 --topic-prefix live. --json | tail -1 |
    python3 -c "import json,sys; print(json.load(sys.stdin)['events'])")
  "$BIN" process --topic-prefix live. --http "127.0.0.1:$port" 2>"$OUT/$engine-live.log" &
  proc=$!
  wait_for 60 "the processor" curl -sf "http://127.0.0.1:$port/metrics" -o /dev/null
  # The backfill applied (counted by the processor), then the live phase starts.
  until [[ "$(curl -sf "http://127.0.0.1:$port/metrics" | awk '/^custflow_events_applied_total /{print $2}')" -ge "$backfill" ]]; do sleep 1; done
  curl -sf "http://127.0.0.1:$port/metrics" >"$OUT/$engine-before.txt"
  "$BIN" synth --topic-prefix live. --customers 200000 --days 60 --live-only --rate "$RATE" \
    --duration-secs "$SECS" --json | tail -1 >"$OUT/$engine-live-synth.json"
  sleep 3
  curl -sf "http://127.0.0.1:$port/metrics" >"$OUT/$engine-after.txt"
  kill "$proc"; wait "$proc" || true
  PYTHONPATH="$ROOT/scripts" python3 - "$OUT/$engine-before.txt" "$OUT/$engine-after.txt" \
    >"$OUT/$engine-fresh.json" <<'PY'
import json, sys
from histogram import quantiles
print(json.dumps(quantiles(sys.argv[1], sys.argv[2], ("custflow_freshness_seconds",))))
PY
done

python3 - "$OUT" <<'PY'
import json, sys
out = sys.argv[1]
row = {}
for engine in ("sqlite", "memory"):
    j = lambda n: json.load(open(f"{out}/{engine}-{n}.json"))
    p, q, i, f = j("produce"), j("process"), j("idle"), j("fresh")
    row[engine] = {
        "produce_events_per_sec": round(p["events_per_sec"]),
        "process_events_per_sec": round(q.get("events_per_sec_after_first") or q["events_per_sec"]),
        "freshness": f,
        "broker_cores_idle_processor": i["broker_cpu_idle_processor"],
    }
print(json.dumps({"bench": "durable_broker", **row}))
PY
