"""Copies custflow's served features into a Feast offline source, so Feast's feature
server can serve the same 12 features for the same customers (scripts/bench-api.sh).

Usage: feast_export.py API_BASE IDS_FILE PARQUET_OUT
"""
import json
import sys
import urllib.request
from datetime import datetime, timezone

import pandas as pd

FEATURES = ["frequency", "recency", "age", "monetary_value", "days_since_last_order",
            "orders_30d", "spend_30d", "avg_gap_days", "p_alive", "clv_12m",
            "value_tier", "rfm_segment"]

base, ids_file, out = sys.argv[1:4]
ids = [line.strip() for line in open(ids_file) if line.strip()]
rows = []
for i in range(0, len(ids), 1000):
    body = json.dumps({"customer_ids": ids[i:i + 1000], "features": FEATURES}).encode()
    req = urllib.request.Request(f"{base}/v1/features:batch", body,
                                 {"Content-Type": "application/json"})
    for c in json.load(urllib.request.urlopen(req))["customers"]:
        if "features" not in c:
            continue
        row = {"customer_id": c["customer_id"], **c["features"], **(c.get("scores") or {})}
        rows.append({k: row.get(k) for k in ["customer_id", *FEATURES]})
df = pd.DataFrame(rows)
for col in ("frequency", "orders_30d"):
    df[col] = df[col].fillna(0).astype("int64")
for col in ("recency", "age", "monetary_value", "days_since_last_order", "spend_30d",
            "avg_gap_days", "p_alive", "clv_12m"):
    df[col] = df[col].astype("float64")
for col in ("value_tier", "rfm_segment"):
    df[col] = df[col].fillna("").astype(str)
ts = pd.Timestamp(datetime.now(timezone.utc))
df["event_timestamp"] = ts
df["created"] = ts
df.to_parquet(out, index=False)
print(f"{len(df)} customers -> {out}")
