"""Peer for the processing benchmark (issue 5): the RFM features of custflow's DESIGN §4
computed by a Quix Streams application from custflow's JSON `orders` topic, written to
Redis with Quix's own RedisSink (batched per checkpoint).

Usage: python quix_features.py BROKER ORDERS_TOPIC REDIS_DB
Stops after 3 s without new messages; prints one JSON line with events/s, where the time
runs from the first message to the end of the final Redis flush (the idle wait excluded).
Per customer it keeps the net value per day (refunds and cancellations subtract from the
original order's day, as custflow does) and writes orders_total, spend_total, frequency,
recency, monetary_value, first/last purchase day to key `quix:<customer_id>`.
"""
import json
import sys
import threading
import time
import uuid
from datetime import datetime

from quixstreams import Application
from quixstreams.sinks.community.redis import RedisSink

broker, topic, db = sys.argv[1], sys.argv[2], int(sys.argv[3])
app = Application(
    broker_address=broker,
    consumer_group="quix-features-" + uuid.uuid4().hex[:6],
    auto_offset_reset="earliest",
    state_dir="/tmp/quix-state-" + uuid.uuid4().hex[:6],
    processing_guarantee="at-least-once",
)
seen = {"n": 0, "t0": None, "last": None}
DAY_MS = 86_400_000


def millis(v):
    if isinstance(v, (int, float)):
        return int(v)
    return int(datetime.fromisoformat(v.replace("Z", "+00:00")).timestamp() * 1000)


def features(order, state):
    now = time.perf_counter()
    if seen["t0"] is None:
        seen["t0"] = now
    seen["n"] += 1
    seen["last"] = now
    s = state.get("s", {"days": {}, "orders": {}, "placed": 0})
    at = millis(order["occurred_at"])
    oid = order["order_id"]
    if order["status"] == "placed":
        if oid not in s["orders"]:
            day = str(at // DAY_MS)
            s["orders"][oid] = [day, order["total"], False]  # day, still open, cancelled
            s["days"][day] = s["days"].get(day, 0.0) + order["total"]
            s["placed"] += 1
    elif oid in s["orders"] and not s["orders"][oid][2]:
        day, open_, _ = s["orders"][oid]
        cancel = order["status"] == "cancelled"
        amount = open_ if cancel else min(order["total"], open_)
        s["orders"][oid] = [day, open_ - amount, cancel]
        s["days"][day] -= amount
        if cancel:
            s["placed"] -= 1
    state.set("s", s)
    days = sorted(int(d) for d, v in s["days"].items() if v > 0)
    out = {"orders_total": s["placed"], "spend_total": round(sum(s["days"].values()), 2)}
    if days:
        repeat = [s["days"][str(d)] for d in days[1:]]
        out.update(first_day=days[0], last_day=days[-1], frequency=len(days) - 1,
                   recency=days[-1] - days[0],
                   monetary_value=round(sum(repeat) / len(repeat), 4) if repeat else 0.0)
    return out


def watchdog():
    while True:
        time.sleep(0.5)
        if seen["last"] is not None and time.perf_counter() - seen["last"] > 3:
            seen["stop_at"] = time.perf_counter()
            app.stop()
            return


sdf = app.dataframe(app.topic(topic, value_deserializer="json"))
sdf = sdf.apply(features, stateful=True)
sdf.sink(RedisSink(host="127.0.0.1", port=6379, db=db, value_serializer=json.dumps,
                   key_serializer=lambda key, value: b"quix:" + key))
threading.Thread(target=watchdog, daemon=True).start()
app.run()
done = time.perf_counter()
busy = (seen["last"] - seen["t0"]) + (done - seen["stop_at"])
print(json.dumps({"peer": "quixstreams", "orders": seen["n"], "seconds": round(busy, 2),
                  "events_per_sec": round(seen["n"] / busy)}), flush=True)
