#!/usr/bin/env bash
# Feature lookups (issue 8). A pipeline of CUSTOMERS customers (one year of synthetic
# events, processed, a model fitted), then:
#  1. `custflow bench lookup` at fixed rates (open loop): single lookups at 5,000/s and
#     batches of 100 customers;
#  2. side by side with Feast's Python feature server on the same Redis, serving the same
#     12 features of the same customers (copied from custflow's API into Feast's offline
#     store and materialised): wrk, closed loop, same connections, one after the other.
# Usage: scripts/bench-api.sh [CUSTOMERS]   (restart the stack first for stable numbers)
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"
cd "$ROOT"
CUSTOMERS="${1:-100000}"
PREFIX="bench-api."
PORT=18080
FEAST_PORT=6566
OUT="$DATA/bench-api"
mkdir -p "$OUT" /tmp/feast-data
bash scripts/stack.sh up >/dev/null
command -v wrk >/dev/null || { SUDO=""; [[ $(id -u) -eq 0 ]] || SUDO="sudo"; $SUDO apt-get install -y -qq wrk >/dev/null; }
cargo build --release --locked -q
BIN="$(custflow_bin)"
PIDS=()
trap 'kill "${PIDS[@]}" 2>/dev/null || true' EXIT

if [[ -z "$(redis-cli --scan --pattern "${PREFIX}cf:{*}:f" | head -1)" ]]; then
  say "pipeline: $CUSTOMERS customers, 365 days, processed and a model fitted (custflow demo)"
  "$BIN" demo --fresh --customers "$CUSTOMERS" --days 365 --rate 1 --duration-secs 1 \
    --topic-prefix "$PREFIX" --http "127.0.0.1:$((PORT + 1))" --sink "sqlite://$OUT/sink.db" >/dev/null
fi
"$BIN" serve --topic-prefix "$PREFIX" --http "127.0.0.1:$PORT" 2>"$OUT/serve.log" &
PIDS+=($!)
"$BIN" process --topic-prefix "$PREFIX" --http "127.0.0.1:$((PORT + 2))" 2>"$OUT/process.log" &
PIDS+=($!)
# Ready once the processor has checked (or rebuilt) the features in Redis.
wait_for 600 "custflow serve" curl -sf "http://127.0.0.1:$PORT/readyz" -o /dev/null
redis-cli --scan --pattern "${PREFIX}cf:{*}:f" \
  | sed -e "s/^${PREFIX}cf:{//" -e 's/}:f$//' | head -n "$CUSTOMERS" > "$OUT/ids.txt"
say "$(wc -l < "$OUT/ids.txt") customers"

FEATURES="frequency,recency,age,monetary_value,days_since_last_order,orders_30d,spend_30d,avg_gap_days,p_alive,clv_12m,value_tier,rfm_segment"
say "custflow bench lookup: single lookups at 5,000/s, 20 s"
"$BIN" bench lookup --topic-prefix "$PREFIX" --target "http://127.0.0.1:$PORT" \
  --rate 5000 --duration-secs 20 --features "$FEATURES" | tee "$OUT/lookup-single.json"
say "custflow bench lookup: batches of 100 at 200/s (20,000 customers/s), 20 s"
"$BIN" bench lookup --topic-prefix "$PREFIX" --target "http://127.0.0.1:$PORT" \
  --rate 200 --batch 100 --duration-secs 20 --features "$FEATURES" | tee "$OUT/lookup-batch.json"

say "Feast: the same features of the same customers into Feast's offline store"
PY="$(peer_python feast "feast, redis, pandas, pyarrow" "feast[redis]")"
FEAST_BIN="$(dirname "$PY")/feast"
REPO="$OUT/feast-repo"
rm -rf "$REPO" && mkdir -p "$REPO"
"$PY" scripts/peers/feast_export.py "http://127.0.0.1:$PORT" "$OUT/ids.txt" /tmp/feast-data/customer_rfm.parquet
cp scripts/peers/feast/definitions.py scripts/peers/feast/feature_store.yaml "$REPO/"
rm -f /tmp/feast-data/registry.db
redis-cli -n 5 flushdb >/dev/null
(cd "$REPO" && "$FEAST_BIN" apply >/dev/null && "$FEAST_BIN" materialize 2020-01-01T00:00:00 "$(date -u -d tomorrow +%Y-%m-%dT00:00:00)" >/dev/null)
(cd "$REPO" && exec "$FEAST_BIN" serve -h 127.0.0.1 -p "$FEAST_PORT" --workers 2 --no-access-log --max-requests 0) >"$OUT/feast.log" 2>&1 &
PIDS+=($!)
wait_for 120 "feast serve" curl -sf -o /dev/null -X POST -H 'Content-Type: application/json' \
  -d "{\"features\":[\"customer_rfm:frequency\"],\"entities\":{\"customer_id\":[\"$(head -1 "$OUT/ids.txt")\"]}}" \
  "http://127.0.0.1:$FEAST_PORT/get-online-features"

rm -f "$OUT/wrk.txt"
for batch in 1 100; do
  for side in custflow feast; do
    port=$PORT; [[ $side == feast ]] && port=$FEAST_PORT
    say "wrk: $side, $batch customer(s) per request, 2 threads × 8 connections, 15 s"
    MODE=$side BATCH=$batch IDS="$OUT/ids.txt" wrk -t2 -c8 -d15s -s scripts/bench/lookup.lua \
      "http://127.0.0.1:$port" | grep RESULT | sed "s/^/$side batch=$batch /" | tee -a "$OUT/wrk.txt"
  done
done
