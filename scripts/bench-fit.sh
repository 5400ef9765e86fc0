#!/usr/bin/env bash
# `custflow fit` as a whole process (CSV read, summary, BG/NBD, Pareto/NBD, Gamma-Gamma,
# RFM cut-points, k-means, artefact written) against Python `lifetimes` loading the same
# file, building the summary and fitting BG/NBD and Gamma-Gamma (issue 33), side by side:
# RUNS fresh processes each, medians. Needs no services.
# Usage: scripts/bench-fit.sh [file | synthetic:N] [calibration-end] [runs]
#   (default: testdata/cdnow/CDNOW_sample.txt 1997-09-30 7). `synthetic:N` writes a
#   CDNOW-format file of N customers drawn from BG/NBD and Gamma-Gamma with the published
#   CDNOW parameters (weeks; first purchases over Q1 1997, history to 1998-06-30), e.g.
#   synthetic:23570 for the size of the full CDNOW file.
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
if [[ "$FILE" == synthetic:* ]]; then
  python3 - "${FILE#synthetic:}" "$WORK/synthetic.txt" <<'PY'
import datetime, random, sys
n, path = int(sys.argv[1]), sys.argv[2]
rnd = random.Random(33)
r, alpha, a, b = 0.243, 4.414, 0.793, 2.426          # BG/NBD, weeks
p, q, gamma = 6.25, 3.74, 15.44                      # Gamma-Gamma
start, weeks = datetime.date(1997, 1, 1), 78
with open(path, "w") as f:
    for c in range(1, n + 1):
        first = rnd.randrange(84)                    # first purchase in Q1 1997 (day)
        lam = rnd.gammavariate(r, 1 / alpha)         # purchases per week while alive
        drop = rnd.betavariate(a, b)
        nu = rnd.gammavariate(q, 1 / gamma)
        t, horizon = 0.0, weeks - first / 7
        # The first purchase, then repeat purchases at rate lam; after each repeat the
        # customer drops out with probability drop.
        while True:
            day = start + datetime.timedelta(days=first + int(t * 7))
            f.write(f" {c:05d} {c:05d} {day:%Y%m%d}  1   {rnd.gammavariate(p, 1 / nu):.2f}\n")
            if t > 0 and rnd.random() < drop:
                break
            t += rnd.expovariate(lam) if lam > 0 else horizon
            if t >= horizon:
                break
PY
  FILE="$WORK/synthetic.txt"
fi
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
