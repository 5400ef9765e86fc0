#!/usr/bin/env bash
# Redis Cluster benchmark (issue 10): starts a local cluster of three redis-server
# primaries (ports 7101-7103, nothing kept on disk), runs the processing benchmark
# (scripts/bench-process.sh) into it, then serves that deployment (`custflow serve`) and
# measures feature lookups at a fixed rate (`custflow bench lookup`: single lookups at
# 5,000/s, batches of 100 at 200/s). With --standalone, the same against the stack's
# Redis, for comparison. The cluster is stopped at the end.
# Usage: scripts/bench-cluster.sh [--standalone] [customers] [process flags…]
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"
cd "$ROOT"
STANDALONE=0
if [[ "${1:-}" == "--standalone" ]]; then
  STANDALONE=1
  shift
fi
CUSTOMERS="${1:-100000}"
shift || true
PORTS=(7101 7102 7103)
DIR="$DATA/bench-cluster"
SERVE_PID=""
stop() {
  [[ -n "$SERVE_PID" ]] && kill "$SERVE_PID" 2>/dev/null
  if ((!STANDALONE)); then
    for p in "${PORTS[@]}"; do redis-cli -p "$p" shutdown nosave >/dev/null 2>&1 || true; done
    rm -rf "$DIR"
  fi
}
trap stop EXIT
if ((STANDALONE)); then
  NODES="$REDIS_PORT"
  URL="$CUSTFLOW_REDIS_URL"
else
  stop
  for p in "${PORTS[@]}"; do
    mkdir -p "$DIR/$p"
    (cd "$DIR/$p" && redis-server --port "$p" --bind 127.0.0.1 --cluster-enabled yes \
      --cluster-config-file nodes.conf --save "" --appendonly no --daemonize yes \
      --logfile "$DIR/$p/redis.log")
  done
  for p in "${PORTS[@]}"; do wait_for 30 "redis on $p" port_open "$p"; done
  redis-cli --cluster create "${PORTS[@]/#/127.0.0.1:}" --cluster-replicas 0 \
    --cluster-yes >/dev/null
  cluster_ok() {
    local p
    for p in "${PORTS[@]}"; do
      redis-cli -p "$p" cluster info | grep -q cluster_state:ok || return 1
    done
  }
  wait_for 60 "the Redis Cluster" cluster_ok
  NODES="${PORTS[*]}"
  URL="redis://127.0.0.1:${PORTS[0]}"
fi
PREFIX="bench-$(date +%s)."
BENCH_PREFIX="$PREFIX" BENCH_REDIS_NODES="$NODES" bash scripts/bench-process.sh \
  "$CUSTOMERS" --redis "$URL" "$@"

BIN="$(custflow_bin)"
HTTP="127.0.0.1:18091"
"$BIN" serve --redis "$URL" --topic-prefix "$PREFIX" --http "$HTTP" \
  >"$LOGS/bench-cluster-serve.log" 2>&1 &
SERVE_PID=$!
ready() { curl -sf "http://$HTTP/readyz" >/dev/null; }
wait_for 60 "custflow serve" ready
for load in "--rate 5000 --batch 1" "--rate 200 --batch 100"; do
  # shellcheck disable=SC2086 # the load is two flags
  "$BIN" bench lookup --redis "$URL" --topic-prefix "$PREFIX" --target "http://$HTTP" \
    $load --duration-secs 20 | tail -1
done
