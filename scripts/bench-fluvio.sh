#!/usr/bin/env bash
# FluvioSource into the broker against `fluvio consume` reading the same topic (issue 32).
# Starts a private Fluvio cluster from CUSTFLOW_FLUVIO_HOME (README, "Optional external
# tools"), writes a synthetic history into one Fluvio topic with
# `custflow synth --output fluvio://…`, then reads it back twice: the Fluvio CLI to
# /dev/null, and `custflow connect --exit-when-idle` (FluvioSource, event.type=tagged)
# into the local broker. Prints one JSON line with both rates.
# Usage: scripts/bench-fluvio.sh [customers]   (default 40000: about 1.2 M events)
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
SC="$("$FLUVIO/start-local.sh" "$WORK/fluvio" 29003 29004 29010 29011 2>/dev/null | tail -1)"
CLI=("$FLUVIO/bin/fluvio" -c "$SC")
"${CLI[@]}" topic create bench-events -p 2 >/dev/null
SYNTH=$("$BIN" synth --customers "$CUSTOMERS" --days 365 --seed 11 --json --output "fluvio://$SC/bench-events" | tail -1)
EVENTS=$(python3 -c "import json,sys; print(json.loads(sys.argv[1])['events'])" "$SYNTH")

# The Fluvio CLI, all partitions, from the beginning, to the end (16 MiB fetches, as the source).
START=$(date +%s.%N)
CLI_RECORDS=$("${CLI[@]}" consume bench-events -A -B -d -b 16777216 -F '{{offset}}' 2>/dev/null | wc -l)
CLI_SECS=$(python3 -c "import sys,time; print(time.time()-float(sys.argv[1]))" "$START")

PREFIX="bench-fluvio-$(date +%s)."
cat > "$WORK/fluvio.json" <<JSON
{"name": "bench-fluvio", "config": {"connector.class": "FluvioSource", "fluvio.endpoint": "$SC",
 "fluvio.topic": "bench-events", "event.type": "tagged"}}
JSON
OUT=$("$BIN" connect --topic-prefix "$PREFIX" --exit-when-idle --json --connect-http 127.0.0.1:0 "$WORK/fluvio.json" | tail -1)
python3 - "$OUT" "$EVENTS" "$CLI_RECORDS" "$CLI_SECS" <<'PY'
import json, sys
s = json.loads(sys.argv[1])
events, cli_records, cli_secs = int(sys.argv[2]), int(sys.argv[3]), float(sys.argv[4])
cli_rate = cli_records / cli_secs
print(json.dumps({
    "bench": "fluvio-source", "events": events,
    "custflow_records": s["records"], "custflow_records_per_sec": s["records_per_sec"],
    "custflow_active_seconds": s["active_seconds"], "max_rss_mb": s["max_rss_mb"],
    "fluvio_cli_records": cli_records, "fluvio_cli_seconds": round(cli_secs, 3),
    "fluvio_cli_records_per_sec": round(cli_rate),
    "ratio": round(s["records_per_sec"] / cli_rate, 2),
    "failed": s["failed"],
}))
PY
