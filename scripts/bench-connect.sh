#!/usr/bin/env bash
# The CSV spool-dir source into the broker (issue 9): ROWS CDNOW-format rows (default
# 2,000,000) in one file, `custflow connect --exit-when-idle` on a fresh topic prefix,
# then the source alone without a broker (`custflow bench csv`) for its own cost.
# Usage: scripts/bench-connect.sh [rows]
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"
cd "$ROOT"
ROWS="${1:-2000000}"
bash scripts/stack.sh up >/dev/null
cargo build --release --locked -q --bin custflow
BIN="$(custflow_bin)"
WORK="$(mktemp -d)"
trap 'rm -rf "$WORK"' EXIT
mkdir -p "$WORK/in"
python3 - "$ROWS" "$WORK/rows.txt" <<'PY'
import random, sys
rows, path = int(sys.argv[1]), sys.argv[2]
rnd = random.Random(7)
with open(path, "w") as f:
    for i in range(rows):
        c = rnd.randint(1, 200000)
        f.write(f" {c:05d} {c:05d} 1997{rnd.randint(1,12):02d}{rnd.randint(1,28):02d}  {rnd.randint(1,5)}   {rnd.uniform(5,100):.2f}\r\n")
PY
PREFIX="bench-connect-$(date +%s)."
"$BIN" bench csv "$WORK/rows.txt" --preset cdnow | tail -1
mv "$WORK/rows.txt" "$WORK/in/rows.txt"
cat > "$WORK/cdnow.json" <<JSON
{"name": "bench-cdnow", "config": {"connector.class": "SpoolDirCsvSource", "csv.preset": "cdnow",
 "input.path": "$WORK/in", "finished.path": "$WORK/done", "topic": "${PREFIX}orders"}}
JSON
OUT=$("$BIN" connect --topic-prefix "$PREFIX" --exit-when-idle --json --connect-http 127.0.0.1:0 "$WORK/cdnow.json" | tail -1)
python3 -c "import json,sys; s=json.loads(sys.argv[1]); s['bench']='connect'; s['rows']=int(sys.argv[2]); print(json.dumps(s))" "$OUT" "$ROWS"
