//! RFM quintile scores against population cut-points, the named segments of DESIGN §4,
//! and value tiers by CLV percentiles.

use serde::{Deserialize, Serialize};

/// The value at quantile `q` (0..=1) of sorted data, linear interpolation (numpy's default).
pub fn quantile_sorted(sorted: &[f64], q: f64) -> f64 {
    if sorted.is_empty() {
        return 0.0;
    }
    let pos = q.clamp(0.0, 1.0) * (sorted.len() - 1) as f64;
    let (lo, hi) = (pos.floor() as usize, pos.ceil() as usize);
    sorted[lo] + (sorted[hi] - sorted[lo]) * (pos - lo as f64)
}

/// Cut-points at the 20th, 40th, 60th and 80th percentiles of finite values.
pub fn quintile_cuts(values: impl IntoIterator<Item = f64>) -> [f64; 4] {
    let mut v: Vec<f64> = values.into_iter().filter(|x| x.is_finite()).collect();
    v.sort_by(f64::total_cmp);
    [0.2, 0.4, 0.6, 0.8].map(|q| quantile_sorted(&v, q))
}

/// 1..=5: one more than the number of cut-points strictly below `value`.
pub fn score_high_is_good(value: f64, cuts: &[f64; 4]) -> u8 {
    1 + cuts.iter().filter(|c| value > **c).count() as u8
}

/// 1..=5 where smaller values are better (recency in days since the last order).
pub fn score_low_is_good(value: f64, cuts: &[f64; 4]) -> u8 {
    6 - score_high_is_good(value, cuts)
}

/// The population's percentiles (0th … 100th) of one measure.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Percentiles(pub Vec<f64>);

impl Percentiles {
    pub fn of(values: impl IntoIterator<Item = f64>) -> Self {
        let mut v: Vec<f64> = values.into_iter().filter(|x| x.is_finite()).collect();
        v.sort_by(f64::total_cmp);
        Self(
            (0..=100)
                .map(|p| quantile_sorted(&v, f64::from(p) / 100.0))
                .collect(),
        )
    }

    /// Share of the population strictly below `x` (0..1).
    pub fn share_below(&self, x: f64) -> f64 {
        self.0.partition_point(|p| *p < x) as f64 / self.0.len().max(1) as f64
    }

    /// 1..=5 quintile score, 5 = highest. Ties take the lowest rank (pandas'
    /// `rank(method="min")`): when most customers have one order, they all score F = 1
    /// and the repeat buyers spread over the upper scores.
    pub fn quintile(&self, x: f64) -> u8 {
        ((self.share_below(x) * 5.0).floor() + 1.0).clamp(1.0, 5.0) as u8
    }
}

/// Population percentiles of R (days since last order), F (orders) and M (spend).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct RfmCuts {
    pub recency_days: Percentiles,
    pub frequency: Percentiles,
    pub monetary: Percentiles,
}

impl RfmCuts {
    /// Percentiles of (days since last order, orders, spend) of the population.
    pub fn from_population(rows: &[(f64, f64, f64)]) -> Self {
        Self {
            recency_days: Percentiles::of(rows.iter().map(|r| r.0)),
            frequency: Percentiles::of(rows.iter().map(|r| r.1)),
            monetary: Percentiles::of(rows.iter().map(|r| r.2)),
        }
    }

    /// (r, f, m) scores, 5 = most recent / most frequent / highest spend; ties take the
    /// lowest rank (see [`Percentiles::quintile`]).
    pub fn scores(&self, days_since_last: f64, orders: f64, spend: f64) -> (u8, u8, u8) {
        (
            6 - self.recency_days.quintile(days_since_last),
            self.frequency.quintile(orders),
            self.monetary.quintile(spend),
        )
    }
}

/// The named RFM segment of an (R, F) pair, per DESIGN §4.
pub fn segment(r: u8, f: u8) -> &'static str {
    match (r, f) {
        (1..=2, 1..=2) => "hibernating",
        (1..=2, 3..=4) => "at_risk",
        (1..=2, _) => "cant_lose",
        (3, 1..=2) => "about_to_sleep",
        (3, 3) => "need_attention",
        (3..=4, 4..=5) => "loyal",
        (4, 1) => "promising",
        (5, 1) => "new",
        (4..=5, 2..=3) => "potential_loyalist",
        _ => "champions",
    }
}

/// Every segment name, for counts that must list empty segments too.
pub const SEGMENTS: [&str; 10] = [
    "champions",
    "loyal",
    "potential_loyalist",
    "new",
    "promising",
    "need_attention",
    "about_to_sleep",
    "at_risk",
    "cant_lose",
    "hibernating",
];

/// CLV cut-points of the value tiers.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct TierCuts {
    /// 20th percentile of clv_12m.
    pub p20: f64,
    /// 80th percentile of clv_12m.
    pub p80: f64,
}

impl TierCuts {
    pub fn from_population(clv: impl IntoIterator<Item = f64>) -> Self {
        let mut v: Vec<f64> = clv.into_iter().filter(|x| x.is_finite()).collect();
        v.sort_by(f64::total_cmp);
        Self {
            p20: quantile_sorted(&v, 0.2),
            p80: quantile_sorted(&v, 0.8),
        }
    }

    /// `top20` above the 80th percentile, `bottom20` at or below the 20th, else `mid60`.
    pub fn tier(&self, clv: f64) -> &'static str {
        if clv > self.p80 {
            "top20"
        } else if clv <= self.p20 {
            "bottom20"
        } else {
            "mid60"
        }
    }
}

pub const TIERS: [&str; 3] = ["top20", "mid60", "bottom20"];

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_rf_pair_has_the_documented_segment() {
        let want = [
            // f = 1..5 for r = 1..5
            [
                "hibernating",
                "hibernating",
                "at_risk",
                "at_risk",
                "cant_lose",
            ],
            [
                "hibernating",
                "hibernating",
                "at_risk",
                "at_risk",
                "cant_lose",
            ],
            [
                "about_to_sleep",
                "about_to_sleep",
                "need_attention",
                "loyal",
                "loyal",
            ],
            [
                "promising",
                "potential_loyalist",
                "potential_loyalist",
                "loyal",
                "loyal",
            ],
            [
                "new",
                "potential_loyalist",
                "potential_loyalist",
                "champions",
                "champions",
            ],
        ];
        for r in 1..=5u8 {
            for f in 1..=5u8 {
                assert_eq!(
                    segment(r, f),
                    want[r as usize - 1][f as usize - 1],
                    "r={r} f={f}"
                );
                assert!(SEGMENTS.contains(&segment(r, f)));
            }
        }
    }

    #[test]
    fn quintiles_and_tiers() {
        let v: Vec<f64> = (1..=100).map(f64::from).collect();
        let cuts = quintile_cuts(v.iter().copied());
        assert_eq!(cuts, [20.8, 40.6, 60.4, 80.2]);
        assert_eq!(score_high_is_good(100.0, &cuts), 5);
        assert_eq!(score_high_is_good(1.0, &cuts), 1);
        assert_eq!(score_low_is_good(1.0, &cuts), 5);
        let p = Percentiles::of(v.iter().copied());
        let counts = [1u8, 2, 3, 4, 5].map(|q| v.iter().filter(|x| p.quintile(**x) == q).count());
        assert_eq!(counts, [20, 20, 20, 20, 20]);
        // Ties: 60% with one order, then 2, 3, 4 and 5 orders at 10% each.
        let f: Vec<f64> = (0..100)
            .map(|i| {
                if i < 60 {
                    1.0
                } else {
                    f64::from(2 + (i - 60) / 10)
                }
            })
            .collect();
        let p = Percentiles::of(f.iter().copied());
        assert_eq!(
            [1.0, 2.0, 3.0, 4.0, 5.0].map(|x| p.quintile(x)),
            [1, 4, 4, 5, 5]
        );
        let tiers = TierCuts::from_population(v.iter().copied());
        let counts = TIERS.map(|t| v.iter().filter(|x| tiers.tier(**x) == t).count());
        assert_eq!(counts, [20, 60, 20]);
    }
}
