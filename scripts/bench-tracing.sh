#!/usr/bin/env bash
# Overhead of tracing (issue 10): the same REST ingest and processing with OpenTelemetry
# off and on. Per mode, on a freshly started broker: `custflow serve` takes NDJSON batches
# of 500 from custflow's load generator (one span per request, its context on every
# event), then `custflow process` applies those events (one span per traced event). With
# tracing on, spans go over OTLP/HTTP to a stand-in collector (a Python HTTP server that
# answers 200 and discards), at --trace-sample 1 (every request traced).
# Usage: scripts/bench-tracing.sh [customers]
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"
cd "$ROOT"
CUSTOMERS="${1:-50000}"
BIN="$(custflow_bin)"
COLLECTOR_PORT=14318
python3 - "$COLLECTOR_PORT" <<'PY' &
import sys
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
class H(BaseHTTPRequestHandler):
    def do_POST(self):
        self.rfile.read(int(self.headers.get("content-length", 0)))
        self.send_response(200); self.send_header("content-length", "2"); self.end_headers(); self.wfile.write(b"{}")
    def log_message(self, *a): pass
ThreadingHTTPServer(("127.0.0.1", int(sys.argv[1])), H).serve_forever()
PY
COLLECTOR=$!
trap 'kill $COLLECTOR 2>/dev/null || true' EXIT
for MODE in off on; do
  OTLP=()
  [[ $MODE == on ]] && OTLP=(--otlp-endpoint "http://127.0.0.1:$COLLECTOR_PORT" --trace-sample 1)
  bash scripts/stack.sh down >/dev/null 2>&1 || true
  bash scripts/stack.sh up >/dev/null
  PREFIX="trace$MODE-$(date +%s)."
  PORT=18393
  "$BIN" serve --topic-prefix "$PREFIX" --http "127.0.0.1:$PORT" "${OTLP[@]}" 2>"$LOGS/bench-tracing-serve.log" &
  SERVER=$!
  wait_for 60 "custflow serve" curl -sf "http://127.0.0.1:$PORT/healthz" -o /dev/null
  say "tracing $MODE: NDJSON batches of 500 into custflow serve"
  INGEST=$("$BIN" synth --topic-prefix "$PREFIX" --customers "$CUSTOMERS" --days 365 --seed 7 \
    --target "http://127.0.0.1:$PORT" --batch 500 --concurrency 8 --json | tail -1)
  kill "$SERVER"; wait "$SERVER" 2>/dev/null || true
  EVENTS=$(python3 -c "import json,sys; print(json.loads(sys.argv[1])['events'])" "$INGEST")
  say "tracing $MODE: processing $EVENTS events"
  PROCESS=$("$BIN" process --clock event --topic-prefix "$PREFIX" --until-events "$EVENTS" "${OTLP[@]}" \
    --http 127.0.0.1:0 --json 2>"$LOGS/bench-tracing-process.log" | tail -1)
  python3 - "$MODE" "$INGEST" "$PROCESS" <<'PY'
import json, sys
ingest, proc = json.loads(sys.argv[2]), json.loads(sys.argv[3])
print(json.dumps({"bench": "tracing", "tracing": sys.argv[1], "events": ingest["events"],
  "ingest_events_per_sec": round(ingest["events_per_sec"]), "process_events_per_sec": round(proc["events_per_sec"])}))
PY
done
