-- wrk script: feature lookups of random customers, the same 12 features from custflow
-- (MODE=custflow: GET /v1/customers/{id}/features, or POST /v1/features:batch when
-- BATCH > 1) or from Feast (MODE=feast: POST /get-online-features). IDS names a file of
-- customer ids, one per line.
local feats = {"frequency","recency","age","monetary_value","days_since_last_order",
  "orders_30d","spend_30d","avg_gap_days","p_alive","clv_12m","value_tier","rfm_segment"}
local mode = os.getenv("MODE") or "custflow"
local batch = tonumber(os.getenv("BATCH") or "1")
local ids = {}
for line in io.lines(os.getenv("IDS") or "ids.txt") do ids[#ids + 1] = line end
local counter = 0
function setup(thread) counter = counter + 1; thread:set("tid", counter) end
function init(args) math.randomseed(os.time() * 1000 + (tid or 0)) end
local function pick(n)
  local out = {}
  for i = 1, n do out[i] = '"' .. ids[math.random(1, #ids)] .. '"' end
  return out
end
function request()
  if mode == "feast" then
    local refs = {}
    for i, f in ipairs(feats) do refs[i] = '"customer_rfm:' .. f .. '"' end
    local body = '{"features":[' .. table.concat(refs, ",") .. '],"entities":{"customer_id":['
      .. table.concat(pick(batch), ",") .. ']}}'
    return wrk.format("POST", "/get-online-features", {["Content-Type"] = "application/json"}, body)
  elseif batch == 1 then
    local id = ids[math.random(1, #ids)]
    return wrk.format("GET", "/v1/customers/" .. id .. "/features?features=" .. table.concat(feats, ","))
  else
    local names = {}
    for i, f in ipairs(feats) do names[i] = '"' .. f .. '"' end
    local body = '{"customer_ids":[' .. table.concat(pick(batch), ",") .. '],"features":['
      .. table.concat(names, ",") .. ']}'
    return wrk.format("POST", "/v1/features:batch", {["Content-Type"] = "application/json"}, body)
  end
end
function done(summary, latency, requests)
  io.write(string.format("RESULT reqs=%d dur_s=%.2f rps=%.1f p50_ms=%.2f p99_ms=%.2f max_ms=%.2f errs_status=%d errs_timeout=%d\n",
    summary.requests, summary.duration/1e6, summary.requests/(summary.duration/1e6),
    latency:percentile(50)/1000, latency:percentile(99)/1000, latency.max/1000,
    summary.errors.status, summary.errors.timeout))
end
