#!/usr/bin/env bash
# FluvioSource into the broker against `fluvio consume` reading the same topic (issue 32).
# Starts a private Fluvio cluster from CUSTFLOW_FLUVIO_HOME (README, "Optional external
# tools"), writes a synthetic history into one Fluvio topic with
# `custflow synth --output fluvio://…`, then reads it back with the Fluvio CLI to
# /dev/null and with `custflow connect --exit-when-idle` (FluvioSource,
# event.type=tagged) into the local broker, ROUNDS times in turn. Prints one JSON line
# with every rate and the ratios of the medians.
# Usage: [ROUNDS=3] [TASKS=2] scripts/bench-fluvio.sh [customers]   (default 40000: about 1.2 M events)
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"
cd "$ROOT"
FLUVIO="${CUSTFLOW_FLUVIO_HOME:-}"
[[ -x "$FLUVIO/start-local.sh" ]] || die "set CUSTFLOW_FLUVIO_HOME to a local Fluvio cluster folder (start-local.sh, stop-local.sh, bin/)"
CUSTOMERS="${1:-40000}"
bash scripts/stack.sh up >/dev/null
cargo build --release --locked -q --bin custflow
BIN="$(custflow_bin)"
WORK="$(mktemp -d)"
trap '"$FLUVIO/stop-local.sh" "$WORK/fluvio" --purge >/dev/null 2>&1; rm -rf "$WORK"' EXIT
SC="$("$FLUVIO/start-local.sh" "$WORK/fluvio" 29003 29004 29010 29011 2>"$WORK/fluvio-start.log" | tail -1)" \
  || die "the Fluvio cluster did not start (ports 29003/29004/29010/29011 still held by an earlier one?): $(tail -3 "$WORK/fluvio-start.log")"
CLI=("$FLUVIO/bin/fluvio" -c "$SC")
"${CLI[@]}" topic create bench-events -p 2 >/dev/null
SYNTH=$("$BIN" synth --customers "$CUSTOMERS" --days 365 --seed 11 --json --output "fluvio://$SC/bench-events" | tail -1)
EVENTS=$(python3 -c "import json,sys; print(json.loads(sys.argv[1])['events'])" "$SYNTH")

# Each reader goes ROUNDS times, alternating, so a slow moment of the shared machine
# does not land on one side only: the Fluvio CLI (all partitions, from the beginning, to
# the end, 16 MiB fetches as the source) printing only each record's offset, the CLI
# printing each record's value (its default output), and `custflow connect` with one task
# per partition of the topic (`tasks.max`, TASKS: 2), as the CLI reads both at once.
ROUNDS="${ROUNDS:-3}"
TASKS="${TASKS:-2}"
cat > "$WORK/fluvio.json" <<JSON
{"name": "bench-fluvio", "config": {"connector.class": "FluvioSource", "fluvio.endpoint": "$SC",
 "fluvio.topic": "bench-events", "event.type": "tagged", "tasks.max": "$TASKS"}}
JSON
cli_rate() {
  local start records
  start=$(date +%s.%N)
  records=$("${CLI[@]}" consume bench-events -A -B -d -b 16777216 "$@" 2>/dev/null | wc -l)
  python3 -c "import sys,time; print(int(sys.argv[1]) / (time.time()-float(sys.argv[2])))" "$records" "$start"
}
for round in $(seq "$ROUNDS"); do
  cli_rate -F '{{offset}}' >> "$WORK/cli-offset"
  cli_rate >> "$WORK/cli-value"
  "$BIN" connect --topic-prefix "bench-fluvio-$(date +%s%N)." --exit-when-idle --json \
    --connect-http 127.0.0.1:0 "$WORK/fluvio.json" | tail -1 >> "$WORK/custflow.jsonl"
done
python3 - "$WORK" "$EVENTS" "$TASKS" <<'PY'
import json, statistics, sys
work, events = sys.argv[1], int(sys.argv[2])
runs = [json.loads(l) for l in open(f"{work}/custflow.jsonl")]
rates = [r["records_per_sec"] for r in runs]
offset = [float(l) for l in open(f"{work}/cli-offset")]
value = [float(l) for l in open(f"{work}/cli-value")]
med = statistics.median
print(json.dumps({
    "bench": "fluvio-source", "events": events, "rounds": len(runs), "tasks": int(sys.argv[3]),
    "custflow_records": [r["records"] for r in runs],
    "custflow_records_per_sec": [round(x) for x in rates],
    "max_rss_mb": max(r["max_rss_mb"] for r in runs),
    "fluvio_cli_offsets_records_per_sec": [round(x) for x in offset],
    "fluvio_cli_values_records_per_sec": [round(x) for x in value],
    "ratio_to_cli_offsets": round(med(rates) / med(offset), 2),
    "ratio_to_cli_values": round(med(rates) / med(value), 2),
    "failed": [f for r in runs for f in r["failed"]],
}))
PY
