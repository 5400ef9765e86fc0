#!/usr/bin/env bash
# Processing into a Redis Cluster (issue 10): starts a local cluster of three
# redis-server primaries (ports 7101-7103, nothing kept on disk), runs the processing
# benchmark (scripts/bench-process.sh) against it and stops the cluster again.
# Usage: scripts/bench-cluster.sh [customers] [process flags…]
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"
cd "$ROOT"
PORTS=(7101 7102 7103)
DIR="$DATA/bench-cluster"
stop() {
  for p in "${PORTS[@]}"; do redis-cli -p "$p" shutdown nosave >/dev/null 2>&1 || true; done
  rm -rf "$DIR"
}
trap stop EXIT
stop
for p in "${PORTS[@]}"; do
  mkdir -p "$DIR/$p"
  (cd "$DIR/$p" && redis-server --port "$p" --bind 127.0.0.1 --cluster-enabled yes \
    --cluster-config-file nodes.conf --save "" --appendonly no --daemonize yes \
    --logfile "$DIR/$p/redis.log")
done
for p in "${PORTS[@]}"; do wait_for 30 "redis on $p" port_open "$p"; done
redis-cli --cluster create "${PORTS[@]/#/127.0.0.1:}" --cluster-replicas 0 --cluster-yes >/dev/null
cluster_ok() {
  local p
  for p in "${PORTS[@]}"; do
    redis-cli -p "$p" cluster info | grep -q cluster_state:ok || return 1
  done
}
wait_for 60 "the Redis Cluster" cluster_ok
CUSTOMERS="${1:-100000}"
shift || true
BENCH_REDIS_NODES="${PORTS[*]}" bash scripts/bench-process.sh "$CUSTOMERS" \
  --redis "redis://127.0.0.1:${PORTS[0]}" "$@"
