#!/usr/bin/env bash
# Horizontal scale (issue 10): the same synthetic events processed by 1, 2 and 4
# `custflow process` instances of one consumer group over the 8 input partitions, on
# this machine. For each count: a freshly started broker, the events (same seed) under a
# fresh topic prefix, then N instances started together, each with its own --http and
# --instance-id; done when the instances' applied + dead-lettered + duplicate counters
# add up to the events. Prints one JSON line per count: wall time from start to done,
# and the rate from the first applied event to done (without the group's join).
# Usage: scripts/bench-scale.sh [customers] [counts…], e.g. `200000 1 2 4`.
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"
cd "$ROOT"
CUSTOMERS="${1:-200000}"
shift || true
COUNTS=("$@")
[[ ${#COUNTS[@]} -eq 0 ]] && COUNTS=(1 2 4)
BIN="$(custflow_bin)"
for N in "${COUNTS[@]}"; do
  bash scripts/stack.sh down >/dev/null 2>&1 || true
  bash scripts/stack.sh up >/dev/null
  PREFIX="scale$N-$(date +%s)."
  say "$N instance(s): generating events of $CUSTOMERS customers into ${PREFIX}*"
  SYNTH=$("$BIN" synth --customers "$CUSTOMERS" --days 365 --seed 7 --topic-prefix "$PREFIX" --json | tail -1)
  EVENTS=$(python3 -c "import json,sys; print(json.loads(sys.argv[1])['events'])" "$SYNTH")
  PIDS=()
  PORTS=()
  for i in $(seq "$N"); do
    PORT=$((18500 + i))
    PORTS+=("$PORT")
    "$BIN" process --clock event --topic-prefix "$PREFIX" --instance-id "scale-$i" \
      --http "127.0.0.1:$PORT" 2>"$LOGS/bench-scale-$i.log" &
    PIDS+=($!)
  done
  python3 - "$EVENTS" "$N" "${PORTS[@]}" <<'PY'
import json, sys, time, urllib.request
events, n, ports = int(sys.argv[1]), int(sys.argv[2]), sys.argv[3:]
names = ("custflow_events_applied_total", "custflow_events_dead_lettered_total", "custflow_events_duplicate_total")
def done():
    total = applied = 0
    for p in ports:
        try:
            text = urllib.request.urlopen(f"http://127.0.0.1:{p}/metrics", timeout=5).read().decode()
        except OSError:
            continue
        for line in text.splitlines():
            name, _, v = line.partition(" ")
            if name in names:
                total += int(float(v))
            if name == names[0]:
                applied += int(float(v))
    return total, applied
start, first = time.time(), None
while True:
    total, applied = done()
    now = time.time()
    if applied and first is None:
        first = now
    if total >= events:
        break
    if now - start > 1800:
        sys.exit(f"only {total} of {events} events after 30 minutes")
    time.sleep(0.2)
print(json.dumps({"bench": "scale", "instances": n, "events": events, "wall_seconds": round(now - start, 1),
  "events_per_sec_wall": round(events / (now - start)), "events_per_sec_after_first": round(events / max(now - first, 1e-9))}))
PY
  kill "${PIDS[@]}" 2>/dev/null || true
  wait "${PIDS[@]}" 2>/dev/null || true
done
