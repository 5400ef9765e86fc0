//! The sales analytics routes (`/v1/sales/*`, scope `sales:read`): trends per period and
//! breakdown, top locations, discount effectiveness and loyalty, read from the rollups
//! the processors keep (see [`custflow_feature_store::sales`]).

use std::collections::BTreeMap;

use crate::error::ApiError;
use axum::extract::{Query, State};
use axum::Json;
use custflow_feature_store::conn::Redis;
use custflow_schemas::time::DAY_MS;
use custflow_schemas::FieldError;
use serde::{Deserialize, Serialize};
use serde_json::{json, Value};

use custflow_feature_store::keys::Keys;
use custflow_feature_store::sales::{self, Grain, RollupRow, DIMENSIONS};
use custflow_feature_store::state::{day_of, RETURN_DAYS};

use crate::auth::Scope;
use crate::routes::Routes;

/// Days of the default window (ending today).
pub const DEFAULT_DAYS: i32 = 30;

/// What the sales routes need.
#[derive(Clone)]
pub struct SalesState {
    pub redis: Redis,
    pub keys: Keys,
}

/// The sales routes.
pub fn routes() -> Routes<SalesState> {
    let sales = Some(Scope::SalesRead);
    Routes::new()
        .get("/v1/sales/trends", sales, trends)
        .get("/v1/sales/top-locations", sales, top_locations)
        .get("/v1/sales/discounts", sales, discounts)
        .get("/v1/sales/loyalty", sales, loyalty)
}

type QueryResult<T> = Result<Query<T>, axum::extract::rejection::QueryRejection>;

/// The window every route takes: `from` and `to` (inclusive) as dates (`2026-11-25`),
/// RFC 3339 timestamps or epoch milliseconds; by default the 30 days ending today (UTC).
#[derive(Debug, Default, Deserialize)]
pub struct Window {
    from: Option<String>,
    to: Option<String>,
}

fn parse_day(s: &str, path: &str) -> Result<i32, FieldError> {
    let ms = crate::features::parse_as_of(Some(s), path)
        .ok()
        .or_else(|| custflow_schemas::time::parse_rfc3339(&format!("{s}T00:00:00Z")));
    ms.map(day_of).ok_or_else(|| {
        FieldError::new(
            path,
            "format",
            format!("{s:?} is not a date (YYYY-MM-DD), RFC 3339 timestamp or epoch milliseconds"),
        )
    })
}

impl Window {
    /// (from, to) as day numbers, with every problem reported.
    fn days(&self, errs: &mut Vec<FieldError>) -> (i32, i32) {
        let to = match &self.to {
            Some(s) => parse_day(s, "to").map_err(|e| errs.push(e)).unwrap_or(0),
            None => day_of(custflow_schemas::time::now_ms()),
        };
        let from = match &self.from {
            Some(s) => parse_day(s, "from").map_err(|e| errs.push(e)).unwrap_or(0),
            None => to - (DEFAULT_DAYS - 1),
        };
        if errs.is_empty() && from > to {
            errs.push(FieldError::new("from", "range", "from is after to"));
        }
        (from, to)
    }

    /// (from, to) as day numbers, or the 400 naming every bad field.
    fn parse(&self) -> Result<(i32, i32), ApiError> {
        let mut errs = Vec::new();
        let days = self.days(&mut errs);
        if errs.is_empty() {
            Ok(days)
        } else {
            Err(ApiError::bad_request("invalid query", &errs))
        }
    }
}

fn day_label(day: i32) -> String {
    Grain::Day.label(day)
}

fn redis_down(e: sales::Error) -> ApiError {
    match e {
        sales::Error::TooManyPeriods { .. } => ApiError::bad_request(
            e.to_string(),
            &[FieldError::new("from", "range", e.to_string())],
        ),
        sales::Error::Redis(e) => ApiError::unavailable(format!("Redis does not answer: {e}"), 1),
    }
}

fn one_of(v: &str, allowed: &[&str], path: &str, errs: &mut Vec<FieldError>) {
    if !allowed.contains(&v) {
        errs.push(FieldError::new(
            path,
            "enum",
            format!("{v:?} is not one of {}", allowed.join(", ")),
        ));
    }
}

#[derive(Debug, Deserialize)]
struct TrendsQuery {
    #[serde(flatten)]
    window: Window,
    grain: Option<String>,
    dimension: Option<String>,
    value: Option<String>,
}

/// Rollups per period of one breakdown; periods without orders show as zeros when the
/// breakdown is `all` or one value is asked for.
async fn trends(
    State(st): State<SalesState>,
    q: QueryResult<TrendsQuery>,
) -> Result<Json<Value>, ApiError> {
    let Query(q) = q?;
    let mut errs = Vec::new();
    let (from, to) = q.window.days(&mut errs);
    let grain_s = q.grain.as_deref().unwrap_or("day");
    let grain = Grain::parse(grain_s).unwrap_or(Grain::Day);
    one_of(grain_s, &["day", "week", "month"], "grain", &mut errs);
    let dimension = q.dimension.as_deref().unwrap_or("all");
    one_of(dimension, &DIMENSIONS, "dimension", &mut errs);
    if !errs.is_empty() {
        return Err(ApiError::bad_request("invalid query", &errs));
    }
    let starts = sales::period_starts(grain, from, to).map_err(redis_down)?;
    let mut rows = sales::rows(
        &mut st.redis.clone(),
        &st.keys,
        grain,
        &starts,
        Some(dimension),
    )
    .await
    .map_err(redis_down)?;
    if let Some(v) = &q.value {
        rows.retain(|r| &r.value == v);
    }
    let fill = match (dimension, &q.value) {
        ("all", _) => Some("all"),
        (_, Some(v)) => Some(v.as_str()),
        _ => None,
    };
    if let Some(value) = fill {
        let mut filled = Vec::with_capacity(starts.len());
        let mut it = rows.into_iter().peekable();
        for s in &starts {
            match it.peek() {
                Some(r) if r.period_start == i64::from(*s) * DAY_MS => {
                    filled.extend(it.next());
                }
                _ => filled.push(RollupRow::new(grain, *s, dimension, value, &[0; 7])),
            }
        }
        rows = filled;
    }
    Ok(Json(json!({
        "grain": grain.as_str(),
        "dimension": dimension,
        "from": day_label(from),
        "to": day_label(to),
        "rows": rows,
    })))
}

/// Sums of one breakdown value over a window of days.
#[derive(Debug, Default, Clone, Serialize)]
struct Totals {
    revenue: f64,
    orders: i64,
    aov: f64,
    /// Distinct customers over the window (estimated), for the dimensions that keep them.
    #[serde(skip_serializing_if = "Option::is_none")]
    customers: Option<u64>,
    discount: f64,
    discounted_orders: i64,
    refunds: f64,
    refund_count: i64,
    net_revenue: f64,
}

/// Per value of `dimension`: the day rollups of the window summed, and the distinct
/// customers over the window.
async fn window_totals(
    st: &SalesState,
    from: i32,
    to: i32,
    dimension: &str,
) -> Result<(Vec<i32>, BTreeMap<String, Totals>), ApiError> {
    let starts = sales::period_starts(Grain::Day, from, to).map_err(redis_down)?;
    let mut conn = st.redis.clone();
    let rows = sales::rows(&mut conn, &st.keys, Grain::Day, &starts, Some(dimension))
        .await
        .map_err(redis_down)?;
    let mut out: BTreeMap<String, Totals> = BTreeMap::new();
    let mut cents: BTreeMap<String, (i64, i64, i64)> = BTreeMap::new();
    for r in rows {
        let t = out.entry(r.value.clone()).or_default();
        t.orders += r.orders;
        t.discounted_orders += r.discounted_orders;
        t.refund_count += r.refund_count;
        let c = cents.entry(r.value).or_default();
        c.0 += sales::cents(r.revenue);
        c.1 += sales::cents(r.discount);
        c.2 += sales::cents(r.refunds);
    }
    for (value, t) in &mut out {
        let (rev, disc, refunds) = cents.get(value).copied().unwrap_or_default();
        t.revenue = rev as f64 / 100.0;
        t.discount = disc as f64 / 100.0;
        t.refunds = refunds as f64 / 100.0;
        t.net_revenue = (rev - refunds) as f64 / 100.0;
        t.aov = sales::ratio(t.revenue, t.orders as f64);
        if sales::WINDOW_DISTINCT.contains(&dimension) {
            let n =
                sales::distinct_over(&mut conn, &st.keys, Grain::Day, &starts, dimension, value)
                    .await
                    .map_err(redis_down)?;
            t.customers = Some(n);
        }
    }
    Ok((starts, out))
}

#[derive(Debug, Deserialize)]
struct TopQuery {
    #[serde(flatten)]
    window: Window,
    by: Option<String>,
    limit: Option<String>,
}

const TOP_BY: [&str; 5] = ["revenue", "aov", "orders", "orders_per_day", "customers"];

/// Locations ranked by revenue, average order value, orders, orders per day or
/// customers over the window.
async fn top_locations(
    State(st): State<SalesState>,
    q: QueryResult<TopQuery>,
) -> Result<Json<Value>, ApiError> {
    let Query(q) = q?;
    let mut errs = Vec::new();
    let (from, to) = q.window.days(&mut errs);
    let by = q.by.as_deref().unwrap_or("revenue");
    one_of(by, &TOP_BY, "by", &mut errs);
    let limit = match q.limit.as_deref().map(str::parse::<usize>) {
        None => 10,
        Some(Ok(n)) if (1..=100).contains(&n) => n,
        Some(_) => {
            errs.push(FieldError::new(
                "limit",
                "range",
                "limit is a number from 1 to 100",
            ));
            0
        }
    };
    if !errs.is_empty() {
        return Err(ApiError::bad_request("invalid query", &errs));
    }
    let (starts, totals) = window_totals(&st, from, to, "location").await?;
    let days = starts.len().max(1) as f64;
    let mut list: Vec<Value> = totals
        .into_iter()
        .map(|(location, t)| {
            let per_day = sales::ratio(t.orders as f64, days);
            let mut v = json!({"location": location, "orders_per_day": per_day});
            if let (Some(o), Ok(Value::Object(t))) = (v.as_object_mut(), serde_json::to_value(t)) {
                o.extend(t);
            }
            v
        })
        .collect();
    let key = |v: &Value| v.get(by).and_then(Value::as_f64).unwrap_or(0.0);
    list.sort_by(|a, b| key(b).total_cmp(&key(a)));
    list.truncate(limit);
    for (i, v) in list.iter_mut().enumerate() {
        if let Some(o) = v.as_object_mut() {
            o.insert("rank".into(), json!(i + 1));
        }
    }
    Ok(Json(json!({
        "from": day_label(from),
        "to": day_label(to),
        "days": starts.len(),
        "by": by,
        "locations": list,
    })))
}

/// Per discount code over the window: orders, revenue, average order value and its
/// uplift over orders without a discount; and, over all time, the share of customers
/// whose first order used the code who came back within 30 days.
async fn discounts(
    State(st): State<SalesState>,
    q: QueryResult<Window>,
) -> Result<Json<Value>, ApiError> {
    let Query(w) = q?;
    let (from, to) = w.parse()?;
    let (_, totals) = window_totals(&st, from, to, "discount").await?;
    let cohorts = sales::cohorts(&mut st.redis.clone(), &st.keys)
        .await
        .map_err(redis_down)?;
    let all_orders: i64 = totals.values().map(|t| t.orders).sum();
    let base = totals.get("none").cloned().unwrap_or_default();
    let cohort = |label: &str| {
        let (first, returned) = cohorts.get(label).copied().unwrap_or_default();
        json!({
            "first_orders": first,
            "returned_within_30d": returned,
            "return_rate_30d": sales::ratio(returned as f64, first as f64),
        })
    };
    let base_rate = {
        let (f, r) = cohorts.get("none").copied().unwrap_or_default();
        sales::ratio(r as f64, f as f64)
    };
    let mut codes: Vec<Value> = Vec::new();
    let mut labels: Vec<&String> = totals.keys().chain(cohorts.keys()).collect();
    labels.sort();
    labels.dedup();
    for label in labels.into_iter().filter(|l| *l != "none") {
        let t = totals.get(label).cloned().unwrap_or_default();
        let c = cohort(label);
        let rate = c["return_rate_30d"].as_f64().unwrap_or(0.0);
        codes.push(json!({
            "code": label,
            "orders": t.orders,
            "revenue": t.revenue,
            "discount": t.discount,
            "aov": t.aov,
            "aov_uplift": if base.aov > 0.0 && t.orders > 0 { sales::ratio(t.aov - base.aov, base.aov) } else { 0.0 },
            "share_of_orders": sales::ratio(t.orders as f64, all_orders as f64),
            "first_order_cohort": c,
            "return_rate_uplift": sales::ratio(rate - base_rate, 1.0),
        }));
    }
    Ok(Json(json!({
        "from": day_label(from),
        "to": day_label(to),
        "return_days": RETURN_DAYS,
        "without_discount": {
            "orders": base.orders,
            "revenue": base.revenue,
            "aov": base.aov,
            "first_order_cohort": cohort("none"),
        },
        "codes": codes,
    })))
}

/// Members against non-members over the window: spend, orders, customers, spend and
/// orders per customer; and month-over-month retention for the months of the window.
async fn loyalty(
    State(st): State<SalesState>,
    q: QueryResult<Window>,
) -> Result<Json<Value>, ApiError> {
    let Query(w) = q?;
    let (from, to) = w.parse()?;
    let (_, totals) = window_totals(&st, from, to, "loyalty").await?;
    let months = sales::period_starts(Grain::Month, from, to).map_err(redis_down)?;
    let conn = st.redis.clone();
    let mut groups = serde_json::Map::new();
    for group in ["member", "non_member"] {
        let t = totals.get(group).cloned().unwrap_or_default();
        let customers = t.customers.unwrap_or(0);
        let mut retention = Vec::new();
        for m in &months {
            let prev = Grain::Month.start(m - 1);
            let count = |starts: Vec<i32>| {
                let (keys, mut conn) = (st.keys.clone(), conn.clone());
                async move {
                    sales::distinct_over(&mut conn, &keys, Grain::Month, &starts, "loyalty", group)
                        .await
                        .map_err(redis_down)
                }
            };
            let active = count(vec![*m]).await?;
            let before = count(vec![prev]).await?;
            let both = count(vec![prev, *m]).await?;
            // |previous ∩ this| = |previous| + |this| − |previous ∪ this| (estimates).
            let retained = (before + active).saturating_sub(both).min(before);
            retention.push(json!({
                "month": Grain::Month.label(*m),
                "active_customers": active,
                "previous_month_customers": before,
                "retained_from_previous_month": retained,
                "retention_rate": sales::ratio(retained as f64, before as f64),
            }));
        }
        groups.insert(
            group.to_owned(),
            json!({
                "revenue": t.revenue,
                "orders": t.orders,
                "customers": customers,
                "aov": t.aov,
                "spend_per_customer": sales::ratio(t.revenue, customers as f64),
                "orders_per_customer": sales::ratio(t.orders as f64, customers as f64),
                "retention": retention,
            }),
        );
    }
    Ok(Json(json!({
        "from": day_label(from),
        "to": day_label(to),
        "groups": groups,
    })))
}
