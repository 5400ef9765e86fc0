#!/usr/bin/env bash
# `custflow fit` as a whole process (CSV read, summary, BG/NBD, Pareto/NBD, Gamma-Gamma,
# RFM cut-points, k-means, artefact written) against Python `lifetimes` loading the same
# file, building the summary and fitting BG/NBD and Gamma-Gamma (issue 33), side by side:
# RUNS fresh processes each, medians. Needs no services.
# Usage: scripts/bench-fit.sh [file] [calibration-end] [runs]
#   (default: testdata/cdnow/CDNOW_sample.txt 1997-09-30 7)
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"
cd "$ROOT"
FILE="${1:-testdata/cdnow/CDNOW_sample.txt}"
CAL_END="${2:-1997-09-30}"
RUNS="${3:-7}"
cargo build --release --locked -q --bin custflow
BIN="$(custflow_bin)"
PY="$(peer_python lifetimes "lifetimes, pandas" lifetimes)"
WORK="$(mktemp -d)"
trap 'rm -rf "$WORK"' EXIT
for _ in $(seq "$RUNS"); do
  "$PY" scripts/peers/lifetimes_fit.py "$FILE" "$CAL_END" >> "$WORK/lifetimes.jsonl"
done
python3 - "$BIN" "$FILE" "$CAL_END" "$RUNS" "$WORK" <<'PY'
import json, statistics, subprocess, sys, time
bin_, path, cal_end, runs, work = sys.argv[1], sys.argv[2], sys.argv[3], int(sys.argv[4]), sys.argv[5]
walls, last = [], None
for i in range(runs):
    t = time.perf_counter()
    out = subprocess.run([bin_, "fit", "--input", path, "--format", "cdnow", "--calibration-end", cal_end,
                          "--unit", "week", "--output", f"{work}/model.json", "--json"],
                         check=True, capture_output=True, text=True).stdout
    walls.append(time.perf_counter() - t)
    last = json.loads(out.strip().splitlines()[-1])
lt = [json.loads(l) for l in open(f"{work}/lifetimes.jsonl")]
ours, theirs = statistics.median(walls), statistics.median(r["total_seconds"] for r in lt)
print(json.dumps({
    "bench": "fit", "file": path, "customers": last["customers"], "runs": runs,
    "custflow_process_seconds": round(ours, 4),
    "custflow_fit_seconds": round(last["fit_seconds"], 4),
    "lifetimes_seconds": round(theirs, 4),
    "lifetimes_steps": {k: round(statistics.median(r[k] for r in lt), 4)
                        for k in ("load_summary_seconds", "bgnbd_seconds", "gamma_gamma_seconds")},
    "ratio": round(theirs / ours, 1),
    "custflow_bgnbd": last["models"]["bgnbd"]["params"], "lifetimes_bgnbd": lt[-1]["bgnbd"],
    "custflow_gamma_gamma": last["models"]["gamma_gamma"]["params"], "lifetimes_gamma_gamma": lt[-1]["gamma_gamma"],
}))
PY
