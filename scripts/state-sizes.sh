#!/usr/bin/env bash
# Bytes of the stored customer states (`<prefix>cf:{id}:f`, postcard) of one deployment:
# count, mean, p50, p99 and max, as JSON (issue 30). Redis adds its own overhead per key
# on top (bench-process.sh reports used_memory per customer beside it).
# Usage: scripts/state-sizes.sh PREFIX [redis ports…] (default the stack's Redis).
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"
PREFIX="${1:?usage: scripts/state-sizes.sh PREFIX [redis ports…]}"
shift
PORTS="${*:-$REDIS_PORT}"
for port in $PORTS; do
  # The standalone layout's state keys, or a cluster's (docs/deviations.md).
  { redis-cli -p "$port" --scan --pattern "${PREFIX}cf:{*}:f"
    redis-cli -p "$port" --scan --pattern "${PREFIX}cf:{p*}:*:f"; } |
    awk '{gsub(/"/, "\\\""); print "STRLEN \"" $0 "\""}' |
    redis-cli -p "$port"
done | python3 -c '
import json, sys
v = sorted(int(x) for x in sys.stdin.read().split() if x.strip().lstrip("-").isdigit())
q = lambda p: v[min(len(v) - 1, int(p * len(v)))] if v else 0
print(json.dumps({"states": len(v), "mean_bytes": round(sum(v) / max(len(v), 1)),
  "p50_bytes": q(0.5), "p99_bytes": q(0.99), "max_bytes": v[-1] if v else 0}))'
