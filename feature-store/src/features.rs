//! Features of DESIGN §4 computed from a [`CustomerState`] as of an instant, so a lookup
//! is correct at the time asked even when no event arrived since.

use serde::Serialize;

use custflow_models::artefact::CustomerStats;
use custflow_models::churn::ChurnInput;
use custflow_schemas::time::DAY_MS;

use crate::state::{day_of, CustomerState, Day, DAYPARTS};

/// Days without an order after which a customer is at risk (DESIGN §4 default).
pub const DEFAULT_AT_RISK_DAYS: f64 = 45.0;

/// Whether a day is a purchase day: net value > 0, or exactly 0 with no refund (a free
/// order). See docs/deviations.md.
pub fn is_purchase_day(d: &Day) -> bool {
    d.orders > 0 && (d.net > 0.0 || (d.net == 0.0 && !d.refunded))
}

/// Event time of the customer's last purchase, whatever the clock (for the at-risk index).
pub fn last_purchase_at(s: &CustomerState) -> Option<i64> {
    s.days
        .iter()
        .rev()
        .find(|d| is_purchase_day(d))
        .map(Day::last_at)
        .or(s.folded.last_day.map(|_| s.folded.last_at))
}

/// The features of one customer as of an instant, named as in DESIGN §4.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Features {
    pub as_of: String,
    #[serde(skip)]
    pub as_of_ms: i64,
    pub first_order_at: Option<String>,
    pub last_order_at: Option<String>,
    pub orders_total: u32,
    pub spend_total: f64,
    pub frequency: u32,
    pub recency: f64,
    pub age: f64,
    pub monetary_value: f64,
    pub days_since_last_order: Option<f64>,
    pub aov: Option<f64>,
    pub orders_7d: u32,
    pub orders_30d: u32,
    pub orders_90d: u32,
    pub spend_7d: f64,
    pub spend_30d: f64,
    pub spend_90d: f64,
    pub avg_gap_days: Option<f64>,
    pub spend_change_pct: Option<f64>,
    pub at_risk: bool,
    pub discount_share: Option<f64>,
    pub favourite_category: Option<String>,
    pub favourite_location: Option<String>,
    pub favourite_daypart: Option<String>,
    pub loyalty_member: bool,
    pub last_activity_at: Option<String>,
}

impl Features {
    /// The statistics the models score.
    pub fn stats(&self) -> CustomerStats {
        CustomerStats {
            frequency: f64::from(self.frequency),
            recency_days: self.recency,
            age_days: self.age,
            monetary_value: self.monetary_value,
            orders_total: f64::from(self.orders_total),
            spend_total: self.spend_total,
        }
    }

    /// What the models (and the churn classifier) score.
    pub fn churn_input(&self) -> ChurnInput {
        ChurnInput {
            orders_30d: f64::from(self.orders_30d),
            orders_90d: f64::from(self.orders_90d),
            spend_90d: self.spend_90d,
            ..ChurnInput::from_stats(&self.stats())
        }
    }
}

/// A sum that is +0.0 when empty (Rust's float `Sum` starts at −0.0).
fn total(it: impl Iterator<Item = f64>) -> f64 {
    it.fold(0.0, |a, b| a + b)
}

fn ts(ms: i64) -> String {
    custflow_schemas::time::format_rfc3339(ms)
}

/// Computes every feature as of `as_of_ms`; days after `as_of` are ignored.
pub fn compute(s: &CustomerState, as_of_ms: i64, at_risk_days: f64) -> Features {
    let as_of_day = day_of(as_of_ms);
    let f = &s.folded;
    let recent: Vec<&Day> = s.days.iter().filter(|d| d.day <= as_of_day).collect();
    let purchase: Vec<&&Day> = recent.iter().filter(|d| is_purchase_day(d)).collect();

    let first = f
        .first_day
        .map(|d| (d, f.first_at))
        .or_else(|| purchase.first().map(|d| (d.day, d.first_at())));
    let last = purchase
        .last()
        .map(|d| (d.day, d.last_at()))
        .or(f.last_day.map(|d| (d, f.last_at)));
    let purchase_days = f.purchase_days + purchase.len() as u32;
    let frequency = purchase_days.saturating_sub(1);
    // Sum of repeat purchase days: all recent purchase days, minus the first one when
    // it is recent (nothing folded yet).
    let recent_sum = total(purchase.iter().map(|d| d.net));
    let repeat_sum = if f.first_day.is_some() {
        f.repeat_sum + recent_sum
    } else {
        recent_sum - purchase.first().map_or(0.0, |d| d.net)
    };
    let orders_total = f.orders + recent.iter().map(|d| d.orders).sum::<u32>();
    let spend_total = f.spend + total(recent.iter().map(|d| d.net));
    let window = |n: i32| recent.iter().filter(move |d| d.day > as_of_day - n);
    let spend_between = |from: i32, to: i32| -> f64 {
        total(
            recent
                .iter()
                .filter(|d| d.day > as_of_day - to && d.day <= as_of_day - from)
                .map(|d| d.net),
        )
    };
    let (recency, age) = match (first, last) {
        (Some((fd, _)), Some((ld, _))) => (f64::from(ld - fd), f64::from(as_of_day - fd)),
        _ => (0.0, 0.0),
    };
    let days_since_last_order = last.map(|(_, at)| (as_of_ms - at) as f64 / DAY_MS as f64);
    let discounted = f.discounted
        + s.orders
            .iter()
            .filter(|r| r.day <= as_of_day && r.discounted && !r.cancelled)
            .count() as u32;
    let prior_30 = spend_between(30, 60);
    let daypart = (0..5)
        .filter(|i| s.daypart[*i] > 0.0)
        .max_by(|a, b| s.daypart[*a].total_cmp(&s.daypart[*b]).then(b.cmp(a)))
        .map(|i| DAYPARTS[i].to_owned());
    Features {
        as_of: ts(as_of_ms),
        as_of_ms,
        first_order_at: first.map(|(_, at)| ts(at)),
        last_order_at: last.map(|(_, at)| ts(at)),
        orders_total,
        spend_total,
        frequency,
        recency,
        age,
        monetary_value: if frequency > 0 {
            repeat_sum / f64::from(frequency)
        } else {
            0.0
        },
        days_since_last_order,
        aov: (orders_total > 0).then(|| spend_total / f64::from(orders_total)),
        orders_7d: window(7).map(|d| d.orders).sum(),
        orders_30d: window(30).map(|d| d.orders).sum(),
        orders_90d: window(90).map(|d| d.orders).sum(),
        spend_7d: total(window(7).map(|d| d.net)),
        spend_30d: total(window(30).map(|d| d.net)),
        spend_90d: total(window(90).map(|d| d.net)),
        avg_gap_days: (orders_total >= 2).then(|| recency / f64::from(orders_total - 1)),
        spend_change_pct: (prior_30 != 0.0)
            .then(|| (spend_between(0, 30) - prior_30) / prior_30 * 100.0),
        at_risk: days_since_last_order.is_some_and(|d| d > at_risk_days),
        discount_share: (orders_total > 0).then(|| f64::from(discounted) / f64::from(orders_total)),
        favourite_category: s.category.mode().map(str::to_owned),
        favourite_location: s.location.mode().map(str::to_owned),
        favourite_daypart: daypart,
        loyalty_member: s.loyalty_member,
        last_activity_at: (s.last_activity_at > 0).then(|| ts(s.last_activity_at)),
    }
}
