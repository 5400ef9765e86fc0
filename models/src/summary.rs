//! From transactions to the BTYD summary of each customer: frequency `x` (repeat
//! purchase days), recency `t_x`, age `T` and the mean value of repeat days `m`.
//!
//! Definitions as in DESIGN §4 and `lifetimes.utils.summary_data_from_transaction_data`
//! with freq 'D': transactions are summed per calendar day; a day whose refunds
//! (negative values) bring its net value to ≤ 0 is not a purchase day, while a day of
//! zero-value orders (free orders, as in CDNOW) is; the first purchase day is excluded
//! from `m`.

use std::collections::BTreeMap;

use crate::artefact::CustomerStats;
use crate::input::Transactions;

/// One customer's summary, in the caller's time unit.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct SummaryRow {
    /// Repeat purchase days: distinct purchase days − 1.
    pub x: f64,
    /// Time from the first to the last purchase day.
    pub t_x: f64,
    /// Time from the first purchase day to `as_of`.
    pub t: f64,
    /// Mean net value of the repeat purchase days (0 when x = 0).
    pub m: f64,
    /// Net value of all purchase days, the first included.
    pub spend: f64,
}

impl SummaryRow {
    /// The live statistics of this row, in days (`unit_days`: the row's time unit).
    pub fn stats(&self, unit_days: f64) -> CustomerStats {
        CustomerStats {
            frequency: self.x,
            recency_days: self.t_x * unit_days,
            age_days: self.t * unit_days,
            monetary_value: self.m,
            orders_total: self.x + 1.0,
            spend_total: self.spend,
        }
    }

    /// The BTYD summary of a customer's statistics (in days), in a unit of `unit_days`.
    pub fn of_stats(s: &CustomerStats, unit_days: f64) -> Self {
        Self {
            x: s.frequency,
            t_x: s.recency_days / unit_days,
            t: s.age_days / unit_days,
            m: s.monetary_value,
            spend: s.spend_total,
        }
    }
}

/// A summary row shared by `weight` customers (fits run on distinct rows).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct WeightedRow {
    pub x: f64,
    pub t_x: f64,
    pub t: f64,
    pub weight: f64,
}

/// Summaries by customer id.
pub type Summary = BTreeMap<String, SummaryRow>;

/// Days since 1970-01-01 of a proleptic Gregorian date (Howard Hinnant's algorithm).
pub fn days_from_civil(y: i64, m: u32, d: u32) -> i64 {
    let y = if m <= 2 { y - 1 } else { y };
    let era = y.div_euclid(400);
    let yoe = y - era * 400;
    let m = i64::from(m);
    let doy = (153 * (if m > 2 { m - 3 } else { m + 9 }) + 2) / 5 + i64::from(d) - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    era * 146_097 + doe - 719_468
}

/// Parses `YYYYMMDD` into days since 1970-01-01.
pub fn parse_yyyymmdd(s: &str) -> Option<i64> {
    let b: &[u8; 8] = s.as_bytes().try_into().ok()?;
    if !b.iter().all(u8::is_ascii_digit) {
        return None;
    }
    let n = |r: std::ops::Range<usize>| b[r].iter().fold(0, |n, d| n * 10 + u32::from(d - b'0'));
    let (y, m, d) = (n(0..4), n(4..6), n(6..8));
    ((1..=12).contains(&m) && (1..=31).contains(&d)).then(|| days_from_civil(i64::from(y), m, d))
}

/// Summarises `(customer, day, value)` transactions up to and including `as_of_day`,
/// measuring time in units of `unit_days` days (1 for days, 7 for weeks).
pub fn summarise<'a>(
    transactions: impl IntoIterator<Item = (&'a str, i64, f64)>,
    as_of_day: i64,
    unit_days: f64,
) -> Summary {
    summarise_transactions(&transactions.into_iter().collect(), as_of_day, unit_days)
}

/// [`summarise`] of transactions read with their ids interned.
pub fn summarise_transactions(tx: &Transactions, as_of_day: i64, unit_days: f64) -> Summary {
    // Customers in the order of their ids (the summary's), each one's transactions in
    // input order by a counting sort, then by day (stable: a day's values add up in input
    // order): one pass, no map per customer, no string compared per transaction.
    let ids = tx.ids();
    // Sorted by their first 16 bytes as one big-endian integer (zero-padded: the same
    // order as the bytes'), then by the whole id where those are equal.
    let mut order: Vec<(u128, u32)> = ids
        .iter()
        .zip(0..)
        .map(|(id, c)| {
            let mut head = [0u8; 16];
            let n = id.len().min(16);
            head[..n].copy_from_slice(&id.as_bytes()[..n]);
            (u128::from_be_bytes(head), c)
        })
        .collect();
    order.sort_unstable_by(|a, b| {
        a.0.cmp(&b.0)
            .then_with(|| ids[a.1 as usize].cmp(&ids[b.1 as usize]))
    });
    let order: Vec<u32> = order.into_iter().map(|(_, c)| c).collect();
    let mut rank = vec![0u32; ids.len()];
    for (r, &c) in order.iter().enumerate() {
        rank[c as usize] = r as u32;
    }
    let mut start = vec![0usize; ids.len() + 1];
    for &(c, day, _) in tx.rows() {
        if day <= as_of_day {
            start[rank[c as usize] as usize + 1] += 1;
        }
    }
    for i in 1..start.len() {
        start[i] += start[i - 1];
    }
    let mut next = start.clone();
    let mut sorted = vec![(0i64, 0.0f64); start[ids.len()]];
    for &(c, day, value) in tx.rows() {
        if day <= as_of_day {
            let at = &mut next[rank[c as usize] as usize];
            sorted[*at] = (day, value);
            *at += 1;
        }
    }
    let mut rows: Vec<(String, SummaryRow)> = Vec::with_capacity(ids.len());
    // The purchase days of the customer at hand: (day, net value).
    let mut purchase: Vec<(i64, f64)> = Vec::new();
    for (r, &c) in order.iter().enumerate() {
        let same = &mut sorted[start[r]..start[r + 1]];
        same.sort_by_key(|t| t.0);
        purchase.clear();
        for day in same.chunk_by(|a, b| a.0 == b.0) {
            // Net value of the day and whether a refund touched it.
            let net: f64 = day.iter().map(|t| t.1).sum();
            if is_purchase_day(net, day.iter().any(|t| t.1 < 0.0)) {
                purchase.push((day[0].0, net));
            }
        }
        let (Some(first), Some(last)) = (purchase.first(), purchase.last()) else {
            continue;
        };
        let x = purchase.len() - 1;
        let m = if x == 0 {
            0.0
        } else {
            purchase[1..].iter().map(|(_, v)| v).sum::<f64>() / x as f64
        };
        rows.push((
            ids[c as usize].clone(),
            SummaryRow {
                x: x as f64,
                t_x: (last.0 - first.0) as f64 / unit_days,
                t: (as_of_day - first.0) as f64 / unit_days,
                m,
                spend: purchase.iter().map(|(_, v)| v).sum(),
            },
        ));
    }
    rows.into_iter().collect()
}

/// Whether a day with this net value is a purchase day (see the module docs).
pub fn is_purchase_day(net: f64, refunded: bool) -> bool {
    net > 0.0 || (net == 0.0 && !refunded)
}

/// Groups identical (x, t_x, T) rows, so likelihoods are evaluated once per distinct
/// row; the groups come sorted by (x, t_x, T), so fits are reproducible to the last bit.
pub fn compress<'a>(rows: impl IntoIterator<Item = &'a SummaryRow>) -> Vec<WeightedRow> {
    let mut keys: Vec<[f64; 3]> = rows.into_iter().map(|r| [r.x, r.t_x, r.t]).collect();
    keys.sort_unstable_by(|a, b| {
        a[0].total_cmp(&b[0])
            .then(a[1].total_cmp(&b[1]))
            .then(a[2].total_cmp(&b[2]))
    });
    let mut out: Vec<WeightedRow> = Vec::new();
    for [x, t_x, t] in keys {
        match out.last_mut() {
            Some(w) if [w.x, w.t_x, w.t].map(f64::to_bits) == [x, t_x, t].map(f64::to_bits) => {
                w.weight += 1.0
            }
            _ => out.push(WeightedRow {
                x,
                t_x,
                t,
                weight: 1.0,
            }),
        }
    }
    out
}

/// Rows of the sample a fit starts from ([`stride_sample`]); below four times as many
/// rows the whole is as cheap to fit from the start.
pub const SAMPLE_FIT_ROWS: usize = 1000;

/// Every k-th row of rows sorted as [`compress`] sorts them (so the sample spreads over
/// x and t_x), about `n` of them, with weights scaled so the sample weighs as much as all
/// rows: its likelihood is on the whole's scale. `None` when there are fewer than 4n
/// rows.
pub fn stride_sample(rows: &[WeightedRow], n: usize) -> Option<Vec<WeightedRow>> {
    if rows.len() < 4 * n.max(1) {
        return None;
    }
    let sample: Vec<WeightedRow> = rows
        .iter()
        .step_by(rows.len() / n.max(1))
        .copied()
        .collect();
    let total: f64 = rows.iter().map(|r| r.weight).sum();
    let scale = total / sample.iter().map(|r| r.weight).sum::<f64>();
    Some(
        sample
            .into_iter()
            .map(|r| WeightedRow {
                weight: r.weight * scale,
                ..r
            })
            .collect(),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stride_samples_weigh_as_much_as_all_rows() {
        let rows: Vec<WeightedRow> = (0..10_000)
            .map(|i| WeightedRow {
                x: (i % 7) as f64,
                t_x: (i % 13) as f64,
                t: 20.0,
                weight: (1 + i % 3) as f64,
            })
            .collect();
        let sample = stride_sample(&rows, 1000).unwrap();
        assert_eq!(sample.len(), 1000);
        let weight = |r: &[WeightedRow]| r.iter().map(|r| r.weight).sum::<f64>();
        assert!((weight(&sample) - weight(&rows)).abs() < 1e-9 * weight(&rows));
        // Every x is in the sample, and each row is one of the rows.
        for x in 0..7 {
            assert!(sample.iter().any(|r| r.x == x as f64));
        }
        assert!(sample
            .iter()
            .all(|s| rows.iter().any(|r| (r.x, r.t_x, r.t) == (s.x, s.t_x, s.t))));
        assert_eq!(stride_sample(&rows[..3999], 1000), None);
    }

    #[test]
    fn civil_days() {
        assert_eq!(days_from_civil(1970, 1, 1), 0);
        assert_eq!(parse_yyyymmdd("19970101"), Some(9862));
        assert_eq!(
            parse_yyyymmdd("20000301").unwrap() - parse_yyyymmdd("20000228").unwrap(),
            2
        );
        assert_eq!(parse_yyyymmdd("1997011"), None);
        assert_eq!(parse_yyyymmdd("19971301"), None);
    }

    #[test]
    fn purchase_days_refunds_and_cutoff() {
        let tx = [
            ("a", 0, 10.0),
            ("a", 0, 5.0), // same day: one purchase day worth 15
            ("a", 3, 20.0),
            ("a", 7, 8.0),
            ("a", 7, -8.0), // fully refunded: not a purchase day
            ("a", 9, 30.0),
            ("a", 40, 99.0), // after as_of
            ("b", 5, 12.0),
            ("c", 2, 0.0), // a free order is a purchase day
        ];
        let s = summarise(tx.iter().map(|(c, d, v)| (*c, *d, *v)), 10, 1.0);
        assert_eq!(
            s["a"],
            SummaryRow {
                x: 2.0,
                t_x: 9.0,
                t: 10.0,
                m: 25.0,
                spend: 65.0
            }
        );
        assert_eq!(
            s["b"],
            SummaryRow {
                x: 0.0,
                t_x: 0.0,
                t: 5.0,
                m: 0.0,
                spend: 12.0
            }
        );
        assert_eq!(
            s["c"],
            SummaryRow {
                x: 0.0,
                t_x: 0.0,
                t: 8.0,
                m: 0.0,
                spend: 0.0
            }
        );
        let w = compress(s.values());
        assert_eq!(w.len(), 3);
    }

    #[test]
    fn customers_come_in_the_order_of_their_ids_whatever_the_input_order() {
        // Ids longer than the 16 bytes sorted as one integer, sharing them, and ids that
        // are prefixes of others.
        let ids = [
            "customer-000000000002",
            "customer-000000000001",
            "customer-00000000000",
            "10",
            "1",
            "2",
            "customer-",
        ];
        let tx: Vec<(&str, i64, f64)> = ids
            .iter()
            .enumerate()
            .flat_map(|(i, id)| [(*id, 5 - i as i64, 1.0), (*id, 9, 2.0)])
            .rev()
            .collect();
        let s = summarise(tx.iter().copied(), 10, 1.0);
        let mut want: Vec<&str> = ids.to_vec();
        want.sort();
        assert_eq!(s.keys().map(String::as_str).collect::<Vec<_>>(), want);
        for (i, id) in ids.iter().enumerate() {
            assert_eq!(s[*id].x, 1.0);
            assert_eq!(s[*id].t, (10 - (5 - i as i64)) as f64);
        }
    }
}
