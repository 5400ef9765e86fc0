#!/usr/bin/env bash
# Soak (issue 14): the demo pipeline (`custflow demo`: generator, processors, scoring, model
# job, SQL sink, API in one process) at RATE events/s for SECONDS, sampled every 30 s:
# the process's RSS, Redis's used memory, the broker's RSS, consumer lag, events in and
# applied, dead letters and logged errors. Writes data/soak/samples.tsv and prints the
# summary: growth after the warm-up (the first WARMUP seconds), the largest lag, errors.
# Usage: scripts/soak.sh [SECONDS] [RATE] [CUSTOMERS]   (defaults 1800 5000 400000)
# The live generator continues the backfill population (new customers keep arriving)
# and ends when it has no events left: 400,000 customers last about 33 minutes at
# 5,000 events/s, so Redis grows with the customers; the summary gives bytes per customer.
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"
cd "$ROOT"
SECONDS_TOTAL="${1:-1800}"
RATE="${2:-5000}"
CUSTOMERS="${3:-400000}"
WARMUP="${WARMUP:-300}"
PREFIX="soak."
PORT=18090
OUT="$DATA/soak"
mkdir -p "$OUT"
# tansu's in-memory engine lists every batch a partition holds on each fetch that is
# behind, so its CPU grows with the batches it holds. With custflow's defaults
# (producers linger 5–20 ms, fetches wait 20 ms) it saturates the machine within 30
# minutes at 5,000 events/s. The soak's producers linger 100 ms and its consumers'
# fetches wait up to 1 s (tansu answers a fetch with data after half of that): fewer,
# larger batches and fewer fetches. (Lingering 250 ms made each processor batch wait
# that long for its scores' delivery, and it fell behind.) Set either variable to
# compare; RELIABILITY.md has the runs.
export CUSTFLOW_KAFKA_LINGER_MS="${CUSTFLOW_KAFKA_LINGER_MS:-100}"
export CUSTFLOW_KAFKA_FETCH_WAIT_MAX_MS="${CUSTFLOW_KAFKA_FETCH_WAIT_MAX_MS:-1000}"
bash scripts/stack.sh up >/dev/null
cargo build --release --locked -q -p custflow
BIN="$(custflow_bin)"

say "soak: $RATE events/s for $SECONDS_TOTAL s over $CUSTOMERS customers (samples every 30 s in $OUT)"
CUSTFLOW_LOG=warn "$BIN" demo --fresh --customers "$CUSTOMERS" --days 90 --rate "$RATE" \
  --duration-secs "$SECONDS_TOTAL" --topic-prefix "$PREFIX" --http "127.0.0.1:$PORT" \
  --sink "sqlite://$OUT/sink.db" >"$OUT/demo.out" 2>"$OUT/demo.log" &
PID=$!
trap 'kill "$PID" 2>/dev/null || true' EXIT
wait_for 600 "custflow demo" curl -sf "http://127.0.0.1:$PORT/healthz" -o /dev/null

broker_pid() { pgrep -f "tansu broker" | head -1; }
# cpu_s PID: CPU seconds (user + system) the process has used.
cpu_s() { awk -v t="$(getconf CLK_TCK)" '{printf "%.0f", ($14 + $15) / t}' "/proc/$1/stat" 2>/dev/null || echo 0; }
printf 'elapsed_s\trss_mb\tredis_mb\tbroker_rss_mb\tlag\tevents_in\tapplied\tdead_lettered\terror_lines\tcustomers\tcpu_s\tbroker_cpu_s\n' >"$OUT/samples.tsv"
START=$(date +%s)
while kill -0 "$PID" 2>/dev/null; do
  now=$(date +%s)
  rss=$(awk '/VmRSS/ {printf "%.0f", $2/1024}' "/proc/$PID/status" 2>/dev/null || echo 0)
  redis=$(redis-cli info memory | awk -F: '/^used_memory:/ {printf "%.0f", $2/1048576}')
  bpid=$(broker_pid)
  brss=$(awk '/VmRSS/ {printf "%.0f", $2/1024}' "/proc/$bpid/status" 2>/dev/null || echo 0)
  stats=$(curl -sf "http://127.0.0.1:$PORT/v1/stats" || echo '{}')
  read -r lag events applied dead < <(python3 -c 'import json,sys
s=json.loads(sys.argv[1] or "{}")
print(s.get("lag",0), s.get("events_in",0), s.get("applied",0), s.get("dead_lettered",0))' "$stats")
  errors=$(grep -c "ERROR" "$OUT/demo.log" || true)
  # Customers with a value tier, from the processors' segment counts.
  customers=$(redis-cli hgetall "${PREFIX}cf:segments" | paste - - | awk -F'\t' '$1 ~ /^tier:/ {n += $2} END {print n + 0}')
  printf '%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\n' "$((now - START))" "$rss" "$redis" "$brss" \
    "$lag" "$events" "$applied" "$dead" "$errors" "$customers" "$(cpu_s "$PID")" "$(cpu_s "$bpid")" \
    | tee -a "$OUT/samples.tsv"
  sleep 30
done
wait "$PID" || die "custflow demo failed; see $OUT/demo.log"
trap - EXIT

python3 - "$OUT/samples.tsv" "$WARMUP" <<'EOF'
import csv, sys
# The last sample may be taken while the process stops (its figures read 0): not counted.
rows = [r for r in csv.DictReader(open(sys.argv[1]), delimiter="\t") if float(r["events_in"]) > 0]
warm = int(sys.argv[2])
after = [r for r in rows if int(r["elapsed_s"]) >= warm] or rows
def f(r, k): return float(r[k])
first, last = after[0], after[-1]
hours = max((f(last, "elapsed_s") - f(first, "elapsed_s")) / 3600, 1e-9)
events = f(rows[-1], "events_in") - f(rows[0], "events_in")
span = max(f(rows[-1], "elapsed_s") - f(rows[0], "elapsed_s"), 1)
print(f"samples {len(rows)}, {span:.0f} s; events in {events:.0f} ({events / span:.0f}/s)")
for k, name in [("rss_mb", "process RSS"), ("redis_mb", "Redis used memory"), ("broker_rss_mb", "broker RSS (in-memory storage)")]:
    print(f"{name}: {f(first, k):.0f} MB after warm-up ({first['elapsed_s']} s) -> {f(last, k):.0f} MB at the end; "
          f"growth {f(last, k) - f(first, k):+.0f} MB ({(f(last, k) - f(first, k)) / hours:+.0f} MB/h); peak {max(f(r, k) for r in after):.0f} MB")
per = lambda r: f(r, "redis_mb") * 1048576 / max(f(r, "customers"), 1)
print(f"customers {f(first, 'customers'):.0f} -> {f(last, 'customers'):.0f}; Redis per customer {per(first):.0f} B -> {per(last):.0f} B")
behind = lambda r: f(r, "events_in") - f(r, "applied")
worst = max(after, key=behind)
print(f"lag after warm-up: max {max(f(r, 'lag') for r in after):.0f} (consumer lag); events in minus applied: "
      f"max {behind(worst):.0f} at {worst['elapsed_s']} s ({behind(worst) / max(events / span, 1):.0f} s of input), last {behind(last):.0f}")
print(f"dead letters {f(last, 'dead_lettered'):.0f}, ERROR log lines {f(last, 'error_lines'):.0f}")
if "cpu_s" in first:
    secs = max(f(last, "elapsed_s") - f(first, "elapsed_s"), 1)
    print(f"CPU after warm-up: custflow {(f(last, 'cpu_s') - f(first, 'cpu_s')) / secs:.2f} cores, "
          f"broker {(f(last, 'broker_cpu_s') - f(first, 'broker_cpu_s')) / secs:.2f} cores")
EOF
