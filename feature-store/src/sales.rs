//! Sales rollups: revenue, orders, discounts, refunds and distinct customers per day,
//! ISO week and month, by location, menu category, daypart, loyalty and discount code,
//! kept by the processors in Redis (in the transaction that saves the customer states,
//! so a replayed batch never counts twice) and read by the sales API and the SQL sink.
//!
//! Rules (docs/deviations.md): an order counts in the buckets of its own event time; a
//! refund or cancellation counts (as `refunds`) in the buckets of its own event time and
//! location, with the amount the customer state took off; a category's revenue is its
//! lines' quantity × unit price; loyalty is the customer's membership when the order is
//! applied. Distinct customers per period and series are exact: the customer's state
//! remembers the series it ordered in per day. For windows of any length, location and
//! loyalty series also keep a HyperLogLog per day, whose unions estimate the customers of
//! the window.

use std::collections::{BTreeMap, HashMap};

use chrono::{Datelike, NaiveDate};
use custflow_schemas::time::DAY_MS;
use custflow_schemas::Order;
use serde::Serialize;

use crate::keys::Keys;
use crate::state::{
    day_of, daypart, CustomerState, FirstOrder, OrderEffect, Unattributed, DAYPARTS,
};

/// The length of a rollup period.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Grain {
    Day,
    Week,
    Month,
}

impl Grain {
    pub const ALL: [Grain; 3] = [Grain::Day, Grain::Week, Grain::Month];

    pub fn parse(s: &str) -> Option<Self> {
        match s {
            "day" | "d" => Some(Grain::Day),
            "week" | "w" => Some(Grain::Week),
            "month" | "m" => Some(Grain::Month),
            _ => None,
        }
    }

    pub fn as_str(self) -> &'static str {
        match self {
            Grain::Day => "day",
            Grain::Week => "week",
            Grain::Month => "month",
        }
    }

    /// The one-letter code used in Redis keys.
    pub fn code(self) -> char {
        match self {
            Grain::Day => 'd',
            Grain::Week => 'w',
            Grain::Month => 'm',
        }
    }

    /// The first day (days since 1970-01-01) of the period holding `day`.
    pub fn start(self, day: i32) -> i32 {
        match self {
            Grain::Day => day,
            // 1970-01-01 was a Thursday; ISO weeks start on Monday.
            Grain::Week => day - (day + 3).rem_euclid(7),
            Grain::Month => {
                let d = date(day);
                day - (d.day0() as i32)
            }
        }
    }

    /// The first day of the period after the one starting on `start`.
    pub fn next(self, start: i32) -> i32 {
        match self {
            Grain::Day => start + 1,
            Grain::Week => start + 7,
            Grain::Month => {
                let d = date(start);
                let (y, m) = if d.month() == 12 {
                    (d.year() + 1, 1)
                } else {
                    (d.year(), d.month() + 1)
                };
                NaiveDate::from_ymd_opt(y, m, 1).map_or(start + 31, days_of)
            }
        }
    }

    /// The period's name: `2026-11-25`, `2026-W48` (ISO week) or `2026-11`.
    pub fn label(self, start: i32) -> String {
        let d = date(start);
        match self {
            Grain::Day => d.format("%Y-%m-%d").to_string(),
            Grain::Week => {
                let w = d.iso_week();
                format!("{}-W{:02}", w.year(), w.week())
            }
            Grain::Month => d.format("%Y-%m").to_string(),
        }
    }
}

fn date(day: i32) -> NaiveDate {
    NaiveDate::from_num_days_from_ce_opt(day.saturating_add(719_163)).unwrap_or_default()
}

fn days_of(d: NaiveDate) -> i32 {
    d.num_days_from_ce() - 719_163
}

/// The breakdowns of every period.
pub const DIMENSIONS: [&str; 6] = [
    "all", "location", "category", "daypart", "loyalty", "discount",
];

/// The counters of a series, in this order.
pub const METRICS: [&str; 7] = [
    "revenue_cents",
    "orders",
    "discount_cents",
    "discounted_orders",
    "refund_cents",
    "refunds",
    "customers",
];
const REVENUE: usize = 0;
const ORDERS: usize = 1;
const DISCOUNT: usize = 2;
const DISCOUNTED: usize = 3;
const REFUND_CENTS: usize = 4;
const REFUNDS: usize = 5;
const CUSTOMERS: usize = 6;

const ALL: u8 = 0;
const LOCATION: u8 = 1;
const CATEGORY: u8 = 2;
const DAYPART: u8 = 3;
const LOYALTY: u8 = 4;
const DISCOUNT_DIM: u8 = 5;

/// The dimensions whose day series also keep a HyperLogLog of customers, for the
/// customers of arbitrary windows (top locations, loyalty).
pub const WINDOW_DISTINCT: [&str; 2] = ["location", "loyalty"];

/// A customer's key for one series (dimension and value), as kept in its state.
fn series_hash(dim: u8, value: &str) -> u32 {
    crate::state::fnv_from(0x811c_9dc5 ^ u32::from(dim), value)
}

/// The first days of the day, week and month holding `day`, and those periods as
/// `[start, end)` day ranges.
fn periods(day: i32) -> ([i32; 3], [(i32, i32); 3]) {
    let starts = Grain::ALL.map(|g| g.start(day));
    let ranges = [0, 1, 2].map(|i| (starts[i], Grain::ALL[i].next(starts[i])));
    (starts, ranges)
}

/// Money in cents, as the rollups count it.
pub fn cents(amount: f64) -> i64 {
    (amount * 100.0).round() as i64
}

/// The discount-dimension value of an order: its code, `none` without a discount,
/// `unnamed` for a discount without a code.
pub fn discount_label(code: Option<&str>, discounted: bool) -> &str {
    match code {
        Some(c) if !c.is_empty() => c,
        _ if discounted => "unnamed",
        _ => "none",
    }
}

/// The loyalty-dimension value.
pub fn loyalty_label(member: bool) -> &'static str {
    if member {
        "member"
    } else {
        "non_member"
    }
}

/// The category of an order line (`other` when it has none).
pub fn category_label(category: &str) -> &str {
    if category.is_empty() {
        "other"
    } else {
        category
    }
}

/// The location of an order (`unknown` when it has none).
pub fn location_label(location: Option<&str>) -> &str {
    location.filter(|l| !l.is_empty()).unwrap_or("unknown")
}

/// One series of one period: grain, first day, dimension, value.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
struct Series<'a> {
    grain: Grain,
    start: i32,
    dim: u8,
    value: &'a str,
}

/// What a batch adds to one series: counters and, for the window HyperLogLogs,
/// customers.
#[derive(Debug, Default)]
struct Acc<'a> {
    sums: [i64; 7],
    customers: Vec<&'a str>,
}

/// The rollup changes of one batch, summed per series before they go to Redis, so a
/// batch costs one command per touched counter rather than per order.
#[derive(Debug, Default)]
pub struct Rollups<'a> {
    /// Hashed with foldhash: these lookups are the rollups' main cost in the processor.
    series: HashMap<Series<'a>, Acc<'a>, foldhash::fast::RandomState>,
    cohorts: HashMap<String, i64>,
}

impl<'a> Rollups<'a> {
    fn bump(&mut self, s: Series<'a>, metric: usize, by: i64) {
        self.series.entry(s).or_default().sums[metric] += by;
    }

    /// Counts what order `o` did (`effect`, from applying it to the customer's `state`,
    /// which also records the series the customer ordered in).
    pub fn add(&mut self, o: &'a Order, effect: OrderEffect, state: &mut CustomerState) {
        let day = day_of(o.occurred_at);
        let location = location_label(o.location_id.as_deref());
        let part = DAYPARTS[daypart(o.occurred_at)];
        let known = state.has_profile();
        let loyalty = if known {
            loyalty_label(state.loyalty_member)
        } else {
            "unknown"
        };
        let mut unattributed = [0i64; 6];
        match effect {
            OrderEffect::None => {}
            OrderEffect::Placed => {
                let discounted = o.discount_amount > 0.0 || o.discount_code.is_some();
                let code = discount_label(o.discount_code.as_deref(), discounted);
                let (total, discount) = (cents(o.total), cents(o.discount_amount));
                // (dimension, value, revenue, order-level): a category's sales are its lines.
                let mut series: Vec<(u8, &'a str, i64, bool)> = vec![
                    (ALL, "all", total, true),
                    (LOCATION, location, total, true),
                    (DAYPART, part, total, true),
                    (LOYALTY, loyalty, total, true),
                    (DISCOUNT_DIM, code, total, true),
                ];
                for item in &o.items {
                    let c = category_label(&item.category);
                    let v = cents(f64::from(item.quantity) * item.unit_price);
                    match series.iter_mut().find(|s| s.0 == CATEGORY && s.1 == c) {
                        Some(e) => e.2 += v,
                        None => series.push((CATEGORY, c, v, false)),
                    }
                }
                let (starts, periods) = periods(day);
                let hashes: Vec<u32> = series.iter().map(|s| series_hash(s.0, s.1)).collect();
                let firsts = state.first_in_series(&hashes, day, &periods);
                for ((dim, value, revenue, order_level), firsts) in series.into_iter().zip(firsts) {
                    for (i, grain) in Grain::ALL.into_iter().enumerate() {
                        let acc = self
                            .series
                            .entry(Series {
                                grain,
                                start: starts[i],
                                dim,
                                value,
                            })
                            .or_default();
                        let m = &mut acc.sums;
                        m[REVENUE] += revenue;
                        m[ORDERS] += 1;
                        m[CUSTOMERS] += i64::from(firsts[i]);
                        if order_level {
                            m[DISCOUNT] += discount;
                            m[DISCOUNTED] += i64::from(discounted);
                        }
                        if grain == Grain::Day && (dim == LOCATION || dim == LOYALTY) {
                            acc.customers.push(&o.customer_id);
                        }
                    }
                }
                unattributed[REVENUE] = total;
                unattributed[ORDERS] = 1;
                unattributed[DISCOUNT] = discount;
                unattributed[DISCOUNTED] = i64::from(discounted);
            }
            OrderEffect::Adjusted { amount, cancelled } => {
                let amount = cents(amount);
                if amount <= 0 && !cancelled {
                    return;
                }
                for grain in Grain::ALL {
                    let start = grain.start(day);
                    let at = |dim, value| Series {
                        grain,
                        start,
                        dim,
                        value,
                    };
                    for s in [
                        at(ALL, "all"),
                        at(LOCATION, location),
                        at(DAYPART, part),
                        at(LOYALTY, loyalty),
                    ] {
                        self.bump(s, REFUND_CENTS, amount);
                        self.bump(s, REFUNDS, 1);
                    }
                    for item in &o.items {
                        let s = at(CATEGORY, category_label(&item.category));
                        let v = cents(f64::from(item.quantity) * item.unit_price);
                        self.bump(s, REFUND_CENTS, v);
                        self.bump(s, REFUNDS, 1);
                    }
                }
                unattributed[REFUND_CENTS] = amount;
                unattributed[REFUNDS] = 1;
            }
        }
        if !known && unattributed != [0; 6] {
            let u = match state.unattributed.iter_mut().find(|u| u.day == day) {
                Some(u) => u,
                None => {
                    state.unattributed.push(Unattributed { day, sums: [0; 6] });
                    let last = state.unattributed.len() - 1;
                    &mut state.unattributed[last]
                }
            };
            for (a, b) in u.sums.iter_mut().zip(unattributed) {
                *a += b;
            }
        }
    }

    /// Once the customer's first profile is applied, moves the sales counted under
    /// loyalty `unknown` to its group, customers included.
    pub fn attribute(&mut self, customer: &'a str, state: &mut CustomerState) {
        if !state.has_profile() || state.unattributed.is_empty() {
            return;
        }
        let group = loyalty_label(state.loyalty_member);
        let unknown = series_hash(LOYALTY, "unknown");
        let at = |grain, start, value| Series {
            grain,
            start,
            dim: LOYALTY,
            value,
        };
        let mut counted: Vec<(Grain, i32)> = Vec::new();
        for (d, _) in state.sales_seen.iter().filter(|(_, h)| *h == unknown) {
            counted.extend(Grain::ALL.map(|g| (g, g.start(*d))));
        }
        counted.sort_unstable();
        counted.dedup();
        for (grain, start) in counted {
            self.bump(at(grain, start, "unknown"), CUSTOMERS, -1);
        }
        state.sales_seen.retain(|(_, h)| *h != unknown);
        let hash = series_hash(LOYALTY, group);
        for u in std::mem::take(&mut state.unattributed) {
            let (starts, periods) = periods(u.day);
            let firsts = if u.sums[ORDERS] > 0 {
                state.first_in_series(&[hash], u.day, &periods)[0]
            } else {
                [false; 3]
            };
            for (i, grain) in Grain::ALL.into_iter().enumerate() {
                for (m, v) in u.sums.iter().enumerate() {
                    self.bump(at(grain, starts[i], "unknown"), m, -v);
                    self.bump(at(grain, starts[i], group), m, *v);
                }
                self.bump(at(grain, starts[i], group), CUSTOMERS, i64::from(firsts[i]));
                if grain == Grain::Day && u.sums[ORDERS] > 0 {
                    let acc = self.series.entry(at(grain, starts[i], group)).or_default();
                    acc.customers.push(customer);
                }
            }
        }
    }

    /// Moves a customer between first-order cohorts when its first order (or whether it
    /// came back) changed.
    pub fn cohort(&mut self, before: Option<&FirstOrder>, after: Option<&FirstOrder>) {
        if before == after {
            return;
        }
        for (f, sign) in [(before, -1), (after, 1)] {
            let Some(f) = f else { continue };
            let label = discount_label(f.discount_code.as_deref(), f.discounted);
            *self.cohorts.entry(format!("first|{label}")).or_default() += sign;
            if f.returned {
                *self.cohorts.entry(format!("returned|{label}")).or_default() += sign;
            }
        }
    }

    /// Adds the batch's counter changes, which came from input partition `partition`'s
    /// events (or, on a standalone Redis, from any), to the pipeline the processor's
    /// script runs. The distinct-customer HyperLogLogs are [`Rollups::write_customers`].
    pub fn write(&self, pipe: &mut redis::Pipeline, keys: &Keys, partition: i32) {
        let mut labels: HashMap<(Grain, i32), String> = HashMap::new();
        for (s, acc) in &self.series {
            let period = labels
                .entry((s.grain, s.start))
                .or_insert_with(|| s.grain.label(s.start));
            let key = keys.sales(s.grain.code(), period, partition);
            let dim = DIMENSIONS[usize::from(s.dim)];
            for (i, v) in acc.sums.iter().enumerate().filter(|(_, v)| **v != 0) {
                pipe.hincr(&key, format!("{dim}|{}|{}", s.value, METRICS[i]), *v)
                    .ignore();
            }
        }
        let mut dirty: Vec<String> = self
            .series
            .keys()
            .map(|s| format!("{}|{}", s.grain.code(), s.start))
            .collect();
        dirty.sort();
        dirty.dedup();
        if !dirty.is_empty() {
            pipe.sadd(keys.sales_dirty(partition), dirty).ignore();
        }
        let cohorts = keys.sales_cohorts(partition);
        for (field, d) in self.cohorts.iter().filter(|(_, d)| **d != 0) {
            pipe.hincr(&cohorts, field, *d).ignore();
        }
    }

    /// Adds the batch's customers to the day HyperLogLogs of their series. `PFADD` is
    /// idempotent, so on a cluster (where these keys share a slot of their own) they are
    /// sent before the partition's script rather than inside it.
    pub fn write_customers(&self, pipe: &mut redis::Pipeline, keys: &Keys) {
        for (s, acc) in self.series.iter().filter(|(_, a)| !a.customers.is_empty()) {
            let period = s.grain.label(s.start);
            let dim = DIMENSIONS[usize::from(s.dim)];
            pipe.cmd("PFADD")
                .arg(keys.sales_customers(&period, dim, s.value))
                .arg(&acc.customers)
                .ignore();
        }
    }

    /// Whether the batch changed nothing.
    pub fn is_empty(&self) -> bool {
        self.series.is_empty() && self.cohorts.is_empty()
    }
}

/// One series of one period, as the API and the SQL table show it. Money in the
/// currency's units.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct RollupRow {
    pub grain: &'static str,
    pub period: String,
    /// Start of the period (epoch ms, UTC).
    pub period_start: i64,
    pub dimension: String,
    pub value: String,
    pub revenue: f64,
    pub orders: i64,
    /// Revenue per order.
    pub aov: f64,
    pub customers: u64,
    pub discount: f64,
    pub discounted_orders: i64,
    pub refunds: f64,
    pub refund_count: i64,
    /// Revenue minus refunds.
    pub net_revenue: f64,
}

impl RollupRow {
    /// The row of one series from its counters (in the order of [`METRICS`]).
    pub fn new(grain: Grain, start: i32, dim: &str, value: &str, m: &[i64; 7]) -> Self {
        Self {
            grain: grain.as_str(),
            period: grain.label(start),
            period_start: i64::from(start) * DAY_MS,
            dimension: dim.to_owned(),
            value: value.to_owned(),
            revenue: m[REVENUE] as f64 / 100.0,
            orders: m[ORDERS],
            aov: ratio(m[REVENUE] as f64 / 100.0, m[ORDERS] as f64),
            customers: u64::try_from(m[CUSTOMERS]).unwrap_or(0),
            discount: m[DISCOUNT] as f64 / 100.0,
            discounted_orders: m[DISCOUNTED],
            refunds: m[REFUND_CENTS] as f64 / 100.0,
            refund_count: m[REFUNDS],
            net_revenue: (m[REVENUE] - m[REFUND_CENTS]) as f64 / 100.0,
        }
    }
}

/// `a / b`, 0 when `b` is 0, rounded to cents-and-a-bit for display.
pub fn ratio(a: f64, b: f64) -> f64 {
    if b == 0.0 {
        0.0
    } else {
        ((a / b) * 10_000.0).round() / 10_000.0
    }
}

/// Errors of reading rollups.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("Redis: {0}")]
    Redis(#[from] redis::RedisError),
    #[error("{periods} periods asked; at most {MAX_PERIODS} per request")]
    TooManyPeriods { periods: usize },
}

/// Most periods one read covers.
pub const MAX_PERIODS: usize = 1000;

/// The first days of the `grain` periods overlapping days `from..=to`.
pub fn period_starts(grain: Grain, from: i32, to: i32) -> Result<Vec<i32>, Error> {
    let mut out = Vec::new();
    let mut s = grain.start(from);
    while s <= to {
        out.push(s);
        if out.len() > MAX_PERIODS {
            let periods = ((to - from) as usize).max(out.len());
            return Err(Error::TooManyPeriods { periods });
        }
        s = grain.next(s);
    }
    Ok(out)
}

/// The rows of the `grain` periods starting on `starts`, of one dimension (or all),
/// ordered by period, dimension and value. One round trip.
pub async fn rows<C: redis::aio::ConnectionLike + Send>(
    conn: &mut C,
    keys: &Keys,
    grain: Grain,
    starts: &[i32],
    dimension: Option<&str>,
) -> Result<Vec<RollupRow>, Error> {
    if starts.is_empty() {
        return Ok(Vec::new());
    }
    let shards = keys.shards(crate::keys::partitions(conn, keys).await?);
    let labels: Vec<String> = starts.iter().map(|s| grain.label(*s)).collect();
    let mut pipe = redis::pipe();
    for l in &labels {
        for p in &shards {
            pipe.cmd("HGETALL").arg(keys.sales(grain.code(), l, *p));
        }
    }
    let replies: Vec<HashMap<String, i64>> = if shards.is_empty() {
        Vec::new()
    } else {
        pipe.query_async(conn).await?
    };
    // The shards of one period, summed.
    let hashes = replies.chunks(shards.len().max(1)).map(|parts| {
        let mut sum: HashMap<&str, i64> = HashMap::new();
        for (f, v) in parts.iter().flatten() {
            *sum.entry(f.as_str()).or_default() += v;
        }
        sum
    });
    let mut series: Vec<(i32, String, String, [i64; 7])> = Vec::new();
    for (start, h) in starts.iter().zip(hashes) {
        let mut per: BTreeMap<(String, String), [i64; 7]> = BTreeMap::new();
        let h = h.into_iter().map(|(f, v)| (f.to_owned(), v));
        for (field, v) in h {
            let Some((dim, rest)) = field.split_once('|') else {
                continue;
            };
            let Some((value, metric)) = rest.rsplit_once('|') else {
                continue;
            };
            if dimension.is_some_and(|d| d != dim) {
                continue;
            }
            let Some(i) = METRICS.iter().position(|m| *m == metric) else {
                continue;
            };
            per.entry((dim.to_owned(), value.to_owned())).or_default()[i] = v;
        }
        // A series whose counters all went back to zero (sales moved to another loyalty
        // group) has nothing to show.
        series.extend(
            per.into_iter()
                .filter(|(_, m)| m.iter().any(|v| *v != 0))
                .map(|((d, v), m)| (*start, d, v, m)),
        );
    }
    let dim_rank = |d: &str| {
        DIMENSIONS
            .iter()
            .position(|x| *x == d)
            .unwrap_or(usize::MAX)
    };
    let mut out: Vec<RollupRow> = series
        .iter()
        .map(|(start, dim, value, m)| RollupRow::new(grain, *start, dim, value, m))
        .collect();
    out.sort_by(|a, b| {
        (a.period_start, dim_rank(&a.dimension), &a.value).cmp(&(
            b.period_start,
            dim_rank(&b.dimension),
            &b.value,
        ))
    });
    Ok(out)
}

/// The day HyperLogLog keys of one series over the `grain` periods starting on `starts`.
fn day_keys(keys: &Keys, grain: Grain, starts: &[i32], dim: &str, value: &str) -> Vec<String> {
    starts
        .iter()
        .flat_map(|s| *s..grain.next(*s))
        .map(|d| keys.sales_customers(&Grain::Day.label(d), dim, value))
        .collect()
}

/// Distinct customers of one series of a [`WINDOW_DISTINCT`] dimension over several
/// periods: the union of their days' HyperLogLogs (an estimate).
pub async fn distinct_over<C: redis::aio::ConnectionLike + Send>(
    conn: &mut C,
    keys: &Keys,
    grain: Grain,
    starts: &[i32],
    dim: &str,
    value: &str,
) -> Result<u64, Error> {
    if starts.is_empty() {
        return Ok(0);
    }
    Ok(redis::cmd("PFCOUNT")
        .arg(day_keys(keys, grain, starts, dim, value))
        .query_async(conn)
        .await?)
}

/// First-order cohorts per discount label: (first orders, customers who came back).
pub async fn cohorts<C: redis::aio::ConnectionLike + Send>(
    conn: &mut C,
    keys: &Keys,
) -> Result<BTreeMap<String, (i64, i64)>, Error> {
    let mut pipe = redis::pipe();
    for p in keys.shards(crate::keys::partitions(conn, keys).await?) {
        pipe.cmd("HGETALL").arg(keys.sales_cohorts(p));
    }
    let parts: Vec<HashMap<String, i64>> = if pipe.is_empty() {
        Vec::new()
    } else {
        pipe.query_async(conn).await?
    };
    let h = parts.into_iter().flatten();
    let mut out: BTreeMap<String, (i64, i64)> = BTreeMap::new();
    for (field, v) in h {
        match field.split_once('|') {
            Some(("first", l)) => out.entry(l.to_owned()).or_default().0 += v,
            Some(("returned", l)) => out.entry(l.to_owned()).or_default().1 += v,
            _ => {}
        }
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use custflow_schemas::{OrderItem, OrderStatus};

    fn day(y: i32, m: u32, d: u32) -> i32 {
        NaiveDate::from_ymd_opt(y, m, d)
            .map(days_of)
            .unwrap_or_default()
    }

    #[test]
    fn periods_start_and_name_like_the_calendar() {
        let d = day(2026, 11, 25); // a Wednesday
        assert_eq!(Grain::Day.label(d), "2026-11-25");
        assert_eq!(Grain::Week.start(d), day(2026, 11, 23));
        assert_eq!(Grain::Week.label(Grain::Week.start(d)), "2026-W48");
        assert_eq!(Grain::Month.start(d), day(2026, 11, 1));
        assert_eq!(Grain::Month.label(Grain::Month.start(d)), "2026-11");
        assert_eq!(Grain::Month.next(day(2026, 12, 1)), day(2027, 1, 1));
        // ISO week 1 of 2021 starts on 2021-01-04; 2021-01-03 is in 2020-W53.
        assert_eq!(
            Grain::Week.label(Grain::Week.start(day(2021, 1, 3))),
            "2020-W53"
        );
        assert_eq!(Grain::Week.label(day(2021, 1, 4)), "2021-W01");
        assert_eq!(
            period_starts(Grain::Month, day(2026, 1, 15), day(2026, 3, 1)).unwrap(),
            vec![day(2026, 1, 1), day(2026, 2, 1), day(2026, 3, 1)]
        );
        assert!(period_starts(Grain::Day, 0, 5000).is_err());
    }

    fn order(status: OrderStatus, total: f64, code: Option<&str>) -> Order {
        Order {
            event_id: "e".into(),
            order_id: "o".into(),
            customer_id: "c-1".into(),
            occurred_at: i64::from(day(2026, 11, 25)) * DAY_MS + 12 * 3_600_000,
            status,
            location_id: Some("loc-1".into()),
            channel: None,
            currency: "EUR".into(),
            items: vec![
                OrderItem {
                    sku: "a".into(),
                    category: "mains".into(),
                    quantity: 2,
                    unit_price: 5.0,
                },
                OrderItem {
                    sku: "b".into(),
                    category: "drinks".into(),
                    quantity: 1,
                    unit_price: 2.5,
                },
            ],
            discount_code: code.map(Into::into),
            discount_amount: if code.is_some() { 1.25 } else { 0.0 },
            total,
        }
    }

    #[test]
    fn an_order_counts_once_in_every_breakdown_of_every_grain() {
        let placed = order(OrderStatus::Placed, 11.25, Some("WELCOME10"));
        let mut r = Rollups::default();
        let mut state = CustomerState {
            loyalty_member: true,
            profile_at: 1,
            ..CustomerState::default()
        };
        r.add(&placed, OrderEffect::Placed, &mut state);
        let start = day(2026, 11, 25);
        let s = |dim, value| Series {
            grain: Grain::Day,
            start,
            dim,
            value,
        };
        let sums = |r: &Rollups<'_>, k| r.series[&k].sums;
        assert_eq!(sums(&r, s(ALL, "all")), [1125, 1, 125, 1, 0, 0, 1]);
        assert_eq!(sums(&r, s(LOYALTY, "member")), [1125, 1, 125, 1, 0, 0, 1]);
        assert_eq!(sums(&r, s(DAYPART, "lunch"))[ORDERS], 1);
        assert_eq!(sums(&r, s(DISCOUNT_DIM, "WELCOME10"))[REVENUE], 1125);
        assert_eq!(sums(&r, s(CATEGORY, "mains"))[REVENUE], 1000);
        assert_eq!(sums(&r, s(CATEGORY, "drinks"))[REVENUE], 250);
        // 3 grains × (5 order-level series + 2 categories); window HyperLogLogs for the
        // location and loyalty days.
        assert_eq!(r.series.len(), 21);
        let with_customers = r.series.values().filter(|a| !a.customers.is_empty());
        assert_eq!(with_customers.count(), 2);
        // A second order of the customer the same day: one more order, not customer.
        let mut again = placed.clone();
        again.order_id = "o2".into();
        r.add(&again, OrderEffect::Placed, &mut state);
        let all = sums(&r, s(ALL, "all"));
        assert_eq!((all[ORDERS], all[CUSTOMERS]), (2, 1));
        // Effects that changed nothing count nothing; refunds count where they happen.
        r.add(&placed, OrderEffect::None, &mut state);
        assert_eq!(sums(&r, s(ALL, "all"))[ORDERS], 2);
        let mut refund = order(OrderStatus::Refunded, 4.0, None);
        refund.items.clear();
        r.add(
            &refund,
            OrderEffect::Adjusted {
                amount: 4.0,
                cancelled: false,
            },
            &mut state,
        );
        assert_eq!(sums(&r, s(ALL, "all")), [2250, 2, 250, 2, 400, 1, 1]);
        assert!(!r.series.contains_key(&s(DISCOUNT_DIM, "none")));
    }

    #[test]
    fn orders_before_the_first_profile_move_to_its_loyalty_group() {
        let placed = order(OrderStatus::Placed, 11.25, None);
        let mut r = Rollups::default();
        let mut state = CustomerState::default();
        r.add(&placed, OrderEffect::Placed, &mut state);
        let s = |value| Series {
            grain: Grain::Month,
            start: Grain::Month.start(day(2026, 11, 25)),
            dim: LOYALTY,
            value,
        };
        assert_eq!(r.series[&s("unknown")].sums, [1125, 1, 0, 0, 0, 0, 1]);
        // The profile arrives: the month's unknown series nets to zero, members get it.
        state.profile_at = 1;
        state.loyalty_member = true;
        r.attribute("c-1", &mut state);
        assert_eq!(r.series[&s("unknown")].sums, [0; 7]);
        assert_eq!(r.series[&s("member")].sums, [1125, 1, 0, 0, 0, 0, 1]);
        assert!(state.unattributed.is_empty());
        // Later orders count for members directly, the customer once.
        let mut again = placed.clone();
        again.order_id = "o2".into();
        r.add(&again, OrderEffect::Placed, &mut state);
        assert_eq!(r.series[&s("member")].sums, [2250, 2, 0, 0, 0, 0, 1]);
    }

    #[test]
    fn cohorts_move_when_the_first_order_changes() {
        let mut r = Rollups::default();
        let first = FirstOrder {
            at: 0,
            discount_code: Some("X".into()),
            discounted: true,
            returned: false,
        };
        r.cohort(None, Some(&first));
        let back = FirstOrder {
            returned: true,
            ..first.clone()
        };
        r.cohort(Some(&first), Some(&back));
        r.cohort(Some(&back), Some(&back));
        assert_eq!(r.cohorts["first|X"], 1);
        assert_eq!(r.cohorts["returned|X"], 1);
    }
}
