//! Training sets without leakage: each customer's features as of a cut-off day, computed
//! only from transactions up to that day, labelled by what happened in the following
//! horizon (churned = no purchase day in (cut-off, cut-off + horizon]).
//!
//! Days follow DESIGN §4 as the processors apply them: a day's transactions are netted,
//! and a day whose net value is ≤ 0 after a refund is not a purchase day.

use std::collections::HashMap;

use super::ChurnInput;
use crate::error::{Error, Result};
use crate::summary::is_purchase_day;

/// One customer at one cut-off.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Snapshot {
    /// Index into [`Snapshots::customers`].
    pub customer: u32,
    pub cutoff_day: i64,
    pub input: ChurnInput,
    pub churned: bool,
}

/// Snapshots of many customers at several cut-offs.
#[derive(Debug, Clone, Default)]
pub struct Snapshots {
    pub customers: Vec<String>,
    pub rows: Vec<Snapshot>,
}

/// `count` cut-offs `spacing` days apart, the last one `horizon` days before
/// `last_day` (so its labels are complete), none before `first_day + spacing`.
pub fn cutoffs(
    first_day: i64,
    last_day: i64,
    horizon: i64,
    spacing: i64,
    count: usize,
) -> Vec<i64> {
    let spacing = spacing.max(1);
    let mut out: Vec<i64> = (0..count as i64)
        .map(|k| last_day - horizon - k * spacing)
        .filter(|&c| c >= first_day + spacing)
        .collect();
    out.sort_unstable();
    out
}

/// A customer's transactions: per day (day, net, refunded, orders) ascending.
type Days = Vec<(i64, f64, bool, u32)>;

/// Features of every customer with a purchase day on or before each cut-off, labelled
/// over `horizon_days`. Every cut-off's label window must end by `last_day`, the last
/// day the transactions cover.
pub fn snapshots(
    tx: &[(String, i64, f64)],
    cutoffs: &[i64],
    horizon_days: i64,
    last_day: i64,
) -> Result<Snapshots> {
    if horizon_days < 1 {
        return Err(Error::InvalidInput(
            "the horizon must be at least 1 day".into(),
        ));
    }
    if let Some(c) = cutoffs.iter().find(|&&c| c + horizon_days > last_day) {
        return Err(Error::InvalidInput(format!(
            "cut-off day {c} + {horizon_days} days is after the last transaction day {last_day}: its labels are not known yet"
        )));
    }
    let (customers, by_customer) = group(tx);
    let mut out = Snapshots {
        customers,
        rows: Vec::new(),
    };
    for (i, t) in by_customer.into_iter().enumerate() {
        let days = per_day(t);
        for &cutoff in cutoffs {
            if let Some((input, churned)) = at_cutoff(&days, cutoff, horizon_days) {
                out.rows.push(Snapshot {
                    customer: i as u32,
                    cutoff_day: cutoff,
                    input,
                    churned,
                });
            }
        }
    }
    Ok(out)
}

/// Every customer's features as of `day`, unlabelled (`churned` is false): the input
/// of a model judged against labels from elsewhere.
pub fn features_at(tx: &[(String, i64, f64)], day: i64) -> Snapshots {
    let (customers, by_customer) = group(tx);
    let mut out = Snapshots {
        customers,
        rows: Vec::new(),
    };
    for (i, t) in by_customer.into_iter().enumerate() {
        if let Some((input, _)) = at_cutoff(&per_day(t), day, 0) {
            out.rows.push(Snapshot {
                customer: i as u32,
                cutoff_day: day,
                input,
                churned: false,
            });
        }
    }
    out
}

/// Customer ids in order of appearance, and each one's (day, value) transactions.
fn group(tx: &[(String, i64, f64)]) -> (Vec<String>, Vec<Vec<(i64, f64)>>) {
    let mut index: HashMap<&str, usize> = HashMap::new();
    let (mut customers, mut by_customer) = (Vec::new(), Vec::<Vec<(i64, f64)>>::new());
    for (c, d, v) in tx {
        let i = *index.entry(c.as_str()).or_insert_with(|| {
            customers.push(c.clone());
            by_customer.push(Vec::new());
            customers.len() - 1
        });
        by_customer[i].push((*d, *v));
    }
    (customers, by_customer)
}

/// One customer's transactions netted per day.
fn per_day(mut t: Vec<(i64, f64)>) -> Days {
    t.sort_by_key(|x| x.0);
    let mut days: Days = Vec::new();
    for (d, v) in t {
        match days.last_mut() {
            Some(last) if last.0 == d => {
                last.1 += v;
                last.2 |= v < 0.0;
                last.3 += u32::from(v > 0.0);
            }
            _ => days.push((d, v, v < 0.0, u32::from(v > 0.0))),
        }
    }
    days
}

/// One customer's input and label at a cut-off; `None` before their first purchase.
fn at_cutoff(days: &Days, cutoff: i64, horizon: i64) -> Option<(ChurnInput, bool)> {
    let (mut first, mut last, mut count, mut repeat_sum) = (None, 0i64, 0u32, 0.0);
    let mut s = ChurnInput::default();
    for &(d, net, refunded, orders) in days.iter().take_while(|x| x.0 <= cutoff) {
        s.orders_total += f64::from(orders);
        s.spend_total += net;
        if d > cutoff - 30 {
            s.orders_30d += f64::from(orders);
        }
        if d > cutoff - 90 {
            s.orders_90d += f64::from(orders);
            s.spend_90d += net;
        }
        if is_purchase_day(net, refunded) {
            if first.is_some() {
                repeat_sum += net;
            }
            first.get_or_insert(d);
            last = d;
            count += 1;
        }
    }
    let first = first?;
    s.frequency = f64::from(count - 1);
    s.recency_days = (last - first) as f64;
    s.age_days = (cutoff - first) as f64;
    s.monetary_value = if count > 1 {
        repeat_sum / s.frequency
    } else {
        0.0
    };
    let bought = days.iter().any(|&(d, net, refunded, _)| {
        d > cutoff && d <= cutoff + horizon && is_purchase_day(net, refunded)
    });
    Some((s, !bought))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tx(rows: &[(&str, i64, f64)]) -> Vec<(String, i64, f64)> {
        rows.iter()
            .map(|(c, d, v)| (c.to_string(), *d, *v))
            .collect()
    }

    #[test]
    fn features_use_only_the_past_and_labels_only_the_horizon() {
        let t = tx(&[
            ("a", 0, 10.0),
            ("a", 10, 20.0),
            ("a", 10, 5.0),
            ("a", 100, 30.0), // after the first cut-off
            ("b", 50, 7.0),   // b's only purchase, refunded the same day
            ("b", 50, -7.0),
            ("c", 200, 1.0), // first purchase after every cut-off
        ]);
        let s = snapshots(&t, &[20, 120], 90, 250).unwrap();
        let get = |c: &str, cut: i64| {
            let i = s.customers.iter().position(|x| x == c).unwrap() as u32;
            s.rows
                .iter()
                .find(|r| r.customer == i && r.cutoff_day == cut)
                .copied()
        };
        let a = get("a", 20).unwrap();
        assert_eq!(a.input.frequency, 1.0);
        assert_eq!(a.input.recency_days, 10.0);
        assert_eq!(a.input.age_days, 20.0);
        assert_eq!(a.input.monetary_value, 25.0);
        assert_eq!(a.input.orders_total, 3.0);
        assert_eq!(a.input.orders_30d, 3.0);
        assert_eq!(a.input.spend_total, 35.0);
        assert!(!a.churned, "a buys on day 100, inside (20, 110]");
        let a2 = get("a", 120).unwrap();
        assert_eq!(a2.input.frequency, 2.0);
        assert_eq!(a2.input.orders_30d, 1.0);
        assert_eq!(a2.input.orders_90d, 1.0);
        assert!(a2.churned, "nothing in (120, 210]");
        assert!(get("b", 120).is_none(), "a refunded day is not a purchase");
        assert!(get("c", 120).is_none(), "no rows before the first purchase");
        assert!(
            snapshots(&t, &[200], 90, 250).is_err(),
            "labels not known yet"
        );
    }

    #[test]
    fn cutoffs_end_one_horizon_before_the_data() {
        assert_eq!(cutoffs(0, 400, 90, 30, 3), vec![250, 280, 310]);
        assert_eq!(
            cutoffs(250, 400, 90, 30, 3),
            vec![280, 310],
            "none before first + spacing"
        );
    }
}
