#!/usr/bin/env bash
# Processing side by side (issue 5): custflow's processor and a Quix Streams application
# (scripts/peers/quix_features.py, RFM features into Redis with Quix's RedisSink) over the
# same synthetic events on the same broker and Redis, one after the other; then the
# features of 50 customers compared between the two. Usage: scripts/bench-quix.sh [customers]
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"
cd "$ROOT"
CUSTOMERS="${1:-30000}"
QUIX_DB=3
bash scripts/stack.sh up >/dev/null
PY="$(peer_python quix "quixstreams, redis" quixstreams redis)"
BIN="$(custflow_bin)"
PREFIX="quix-$(date +%s)."
say "generating events of $CUSTOMERS customers (JSON) into ${PREFIX}*"
SYNTH=$("$BIN" synth --customers "$CUSTOMERS" --days 365 --format json --topic-prefix "$PREFIX" --json | tail -1)
EVENTS=$(python3 -c "import json,sys; print(json.loads(sys.argv[1])['events'])" "$SYNTH")
say "custflow process: $EVENTS events (customers, orders, activity), every feature of DESIGN §4"
CF=$("$BIN" process --clock event --topic-prefix "$PREFIX" --until-events "$EVENTS" --json 2>/dev/null | tail -1)
say "quixstreams: ${PREFIX}orders, RFM features (Redis db $QUIX_DB)"
redis-cli -n "$QUIX_DB" flushdb >/dev/null
QX=$("$PY" scripts/peers/quix_features.py "$CUSTFLOW_BROKERS" "${PREFIX}orders" "$QUIX_DB" 2>/dev/null | tail -1)
say "comparing the features of 50 repeat customers"
MISMATCH=0
COMPARED=0
for key in $(redis-cli -n "$QUIX_DB" --scan --pattern 'quix:*'); do
  ((COMPARED < 50)) || break
  id="${key#quix:}"
  q=$(redis-cli -n "$QUIX_DB" get "$key")
  [[ "$q" == *'"frequency": 0,'* ]] && continue
  COMPARED=$((COMPARED + 1))
  c=$("$BIN" features "$id" --topic-prefix "$PREFIX" --clock event --json 2>/dev/null | tail -1)
  python3 - "$q" "$c" <<'PY' || MISMATCH=$((MISMATCH + 1))
import json, sys
q, c = json.loads(sys.argv[1]), json.loads(sys.argv[2])
f = c.get("features", c)
for k in ("orders_total", "frequency", "recency"):
    if q.get(k, 0) != (f.get(k) or 0):
        sys.exit(f"{k}: quix {q.get(k)} custflow {f.get(k)}")
for k in ("spend_total", "monetary_value"):
    if abs(q.get(k, 0) - (f.get(k) or 0)) > 0.01:
        sys.exit(f"{k}: quix {q.get(k)} custflow {f.get(k)}")
PY
done
python3 - "$CF" "$QX" "$MISMATCH" "$COMPARED" <<'PY'
import json, sys
cf, qx, mismatch, compared = json.loads(sys.argv[1]), json.loads(sys.argv[2]), int(sys.argv[3]), int(sys.argv[4])
print(json.dumps({"bench": "process_vs_quixstreams", "custflow_events": cf["applied"],
  "custflow_events_per_sec": round(cf["events_per_sec"]), "quix_orders": qx["orders"],
  "quix_events_per_sec": qx["events_per_sec"],
  "ratio": round(cf["events_per_sec"] / qx["events_per_sec"], 1),
  "features_compared": compared, "features_mismatched": mismatch}))
PY
