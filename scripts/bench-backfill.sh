#!/usr/bin/env bash
# Backfill generation vs a plain librdkafka producer (issue 4), side by side: ROUNDS
# rounds, each the raw producer of scripts/peers/kafka_raw.py (pre-encoded messages of
# custflow's mean event size) then `custflow synth` (about a million events); prints each
# round's ratio and the median. Usage: scripts/bench-backfill.sh [rounds]
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"
cd "$ROOT"
ROUNDS="${1:-3}"
bash scripts/stack.sh up >/dev/null
PY="$(peer_python test "confluent_kafka.schema_registry.avro, fastavro" "confluent-kafka[avro]")"
BIN="$(custflow_bin)"
RAW_SCRIPT="$ROOT/scripts/peers/kafka_raw.py"
RATIOS=()
for round in $(seq "$ROUNDS"); do
  RAW=$("$PY" "$RAW_SCRIPT" "$CUSTFLOW_BROKERS" 1000000 98 | awk '/^produce/{gsub(",", "", $2); print $2}')
  SYN=$("$BIN" synth --customers 170000 --days 365 --topic-prefix "backfill-$(date +%s)-$round." --json | tail -1)
  RATE=$(python3 -c "import json,sys; print(round(json.loads(sys.argv[1])['events_per_sec']))" "$SYN")
  RATIO=$(python3 -c "print(round($RATE / $RAW * 100))")
  RATIOS+=("$RATIO")
  echo "{\"round\": $round, \"raw_msgs_per_sec\": $RAW, \"synth_events_per_sec\": $RATE, \"percent\": $RATIO}"
done
python3 -c "import json,statistics,sys; r=[int(x) for x in sys.argv[1:]]; print(json.dumps({'bench': 'backfill', 'percent_of_raw': r, 'median_percent': statistics.median(r)}))" "${RATIOS[@]}"
