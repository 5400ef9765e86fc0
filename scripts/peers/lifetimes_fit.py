"""The Python `lifetimes` package doing what `custflow fit` does first, timed in-process.

Loads a CDNOW-format transaction file (customer id, sample id, YYYYMMDD, CDs, value),
builds the summary with `summary_data_from_transaction_data` (days, scaled to weeks, as
the published CDNOW summary), fits BG/NBD and Gamma-Gamma, and prints one JSON line with
the seconds of each step (imports not counted). Used by scripts/bench-fit.sh; never a
runtime dependency.
"""
import json
import sys
import time

import pandas as pd
from lifetimes import BetaGeoFitter, GammaGammaFitter
from lifetimes.utils import summary_data_from_transaction_data

path, calibration_end = sys.argv[1], sys.argv[2]
t0 = time.perf_counter()
df = pd.read_csv(path, sep=r"\s+", header=None, names=["customer", "sample", "date", "cds", "value"],
                 dtype={"date": str})
df["date"] = pd.to_datetime(df["date"], format="%Y%m%d")
summary = summary_data_from_transaction_data(
    df, "customer", "date", monetary_value_col="value",
    observation_period_end=calibration_end, freq="D", freq_multiplier=7)
t1 = time.perf_counter()
bg = BetaGeoFitter().fit(summary["frequency"], summary["recency"], summary["T"])
t2 = time.perf_counter()
repeat = summary[summary["frequency"] > 0]
gg = GammaGammaFitter().fit(repeat["frequency"], repeat["monetary_value"])
t3 = time.perf_counter()
print(json.dumps({
    "customers": int(len(summary)),
    "load_summary_seconds": t1 - t0, "bgnbd_seconds": t2 - t1, "gamma_gamma_seconds": t3 - t2,
    "total_seconds": t3 - t0,
    "bgnbd": {k: float(v) for k, v in bg.params_.items()},
    "gamma_gamma": {k: float(v) for k, v in gg.params_.items()},
}))
