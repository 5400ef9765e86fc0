-- wrk script: POST /v1/events with one order (see BENCHMARKS.md).
wrk.method = "POST"
wrk.headers["Content-Type"] = "application/json"
wrk.body = "{\"type\": \"order\", \"event_id\": \"s1\", \"order_id\": \"so1\", \"customer_id\": \"sc1\", \"occurred_at\": \"2026-11-25T16:12:24Z\", \"status\": \"placed\", \"currency\": \"EUR\", \"items\": [{\"sku\": \"burger\", \"category\": \"mains\", \"quantity\": 1, \"unit_price\": 9.5}], \"total\": 9.5}"
