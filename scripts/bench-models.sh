#!/usr/bin/env bash
# The model lifecycle under the demo (issue 35): `custflow demo --fresh` at its default
# settings for SECS seconds of live events, then how many refits the model job promoted
# and kept, and how many scores each customer was sent. Needs the stack
# (scripts/stack.sh up) and port 8080 free.
# Usage: scripts/bench-models.sh [secs] (default 600)
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"
cd "$ROOT"
SECS="${1:-600}"
cargo build --release --locked -q --bin custflow
BIN="$(custflow_bin)"
OUT="$(mktemp)"
trap 'rm -f "$OUT"' EXIT
"$BIN" demo --fresh --duration-secs "$SECS" --json > "$OUT"
python3 - "$OUT" <<'PY'
import json, sys
s = json.loads(open(sys.argv[1]).read().strip().splitlines()[-1])
customers = max(1, s["sink_rows"])
print(f"{s['seconds']:.0f} s of demo: {s['promotions']} refits promoted, {s['refits_kept']} kept, "
      f"{s['models']} models in the sink; {s['scores']} scores for {s['sink_rows']} customers "
      f"= {s['scores'] / customers:.1f} per customer")
PY
