"""Side-by-side reference: the Python `lifetimes` package on the CDNOW summary.

Fits BG/NBD, Pareto/NBD and Gamma-Gamma (time in weeks) and times the fits and the
scoring of every customer (P(alive), expected purchases in 39 weeks, expected AOV),
printing one JSON line. Used by scripts/bench-models.sh; never a runtime dependency.
"""
import json
import sys
import time

import pandas as pd
from lifetimes import BetaGeoFitter, GammaGammaFitter, ParetoNBDFitter

path = sys.argv[1]
df = pd.read_csv(path)
out = {"customers": int(len(df))}

t0 = time.perf_counter()
bg = BetaGeoFitter(penalizer_coef=0.0).fit(df["x"], df["t_x"], df["T"])
out["bgnbd_fit_seconds"] = time.perf_counter() - t0
out["bgnbd"] = {k: float(v) for k, v in bg.params_.items()}
out["bgnbd"]["log_likelihood"] = float(-bg._negative_log_likelihood_ * len(df)) if hasattr(bg, "_negative_log_likelihood_") else None

t0 = time.perf_counter()
pn = ParetoNBDFitter(penalizer_coef=0.0).fit(df["x"], df["t_x"], df["T"])
out["pareto_fit_seconds"] = time.perf_counter() - t0
out["pareto_nbd"] = {k: float(v) for k, v in pn.params_.items()}

rep = df[df["x"] > 0]
t0 = time.perf_counter()
gg = GammaGammaFitter(penalizer_coef=0.0).fit(rep["x"], rep["zbar"])
out["gamma_gamma_fit_seconds"] = time.perf_counter() - t0
out["gamma_gamma"] = {k: float(v) for k, v in gg.params_.items()}

# Scoring: the whole population, 20 times over, vectorised as lifetimes intends.
big = pd.concat([df] * 20, ignore_index=True)
t0 = time.perf_counter()
bg.conditional_probability_alive(big["x"], big["t_x"], big["T"])
bg.conditional_expected_number_of_purchases_up_to_time(39, big["x"], big["t_x"], big["T"])
gg.conditional_expected_average_profit(big["x"], big["zbar"])
secs = time.perf_counter() - t0
out["score_customers"] = int(len(big))
out["score_customers_per_sec"] = len(big) / secs
print(json.dumps(out))
