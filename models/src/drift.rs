//! Drift of the model inputs: the population stability index (PSI) of recency, frequency
//! and monetary value between the population a model was trained on and the live one.
//!
//! The training population is kept as decile bins (edges and the share in each), so a
//! live sample is compared without the training data. PSI = Σ (live − ref) · ln(live /
//! ref) over the bins; by the usual reading, below 0.1 is stable, 0.1–0.25 a moderate
//! shift and above 0.25 a large one.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use crate::artefact::CustomerStats;

/// Shares below this are floored, so an empty bin gives a large but finite PSI.
const FLOOR: f64 = 1e-4;
/// Bins of a reference (deciles).
const BINS: usize = 10;
/// The inputs watched, by name.
pub const INPUTS: [&str; 3] = ["recency", "frequency", "monetary"];

/// One model input as a customer's statistics give it (time in days).
pub fn input(name: &str, s: &CustomerStats) -> Option<f64> {
    match name {
        "recency" => Some(s.recency_days),
        "frequency" => Some(s.frequency),
        "monetary" => Some(s.monetary_value),
        _ => None,
    }
}

/// The distribution of one input in the training population.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Reference {
    /// Upper bin edges, ascending and distinct; the last bin is open above.
    pub edges: Vec<f64>,
    /// The share of the training population in each bin (`edges.len() + 1` bins).
    pub shares: Vec<f64>,
}

impl Reference {
    /// Decile bins of `values` (non-finite values ignored); `None` without values.
    pub fn of(values: &[f64]) -> Option<Self> {
        let mut v: Vec<f64> = values.iter().copied().filter(|x| x.is_finite()).collect();
        if v.is_empty() {
            return None;
        }
        v.sort_by(f64::total_cmp);
        let mut edges: Vec<f64> = (1..BINS)
            .map(|i| v[(i * v.len() / BINS).min(v.len() - 1)])
            .collect();
        // Ties (many customers with frequency 0) merge bins.
        edges.dedup();
        let shares = Self::shares_of(&edges, &v);
        Some(Self { edges, shares })
    }

    fn shares_of(edges: &[f64], values: &[f64]) -> Vec<f64> {
        let mut counts = vec![0usize; edges.len() + 1];
        let mut n = 0usize;
        for x in values.iter().filter(|x| x.is_finite()) {
            // Bin i holds edges[i-1] < x ≤ edges[i].
            counts[edges.partition_point(|e| *e < *x)] += 1;
            n += 1;
        }
        counts
            .into_iter()
            .map(|c| c as f64 / n.max(1) as f64)
            .collect()
    }

    /// The PSI of a live sample against this reference; `None` for an empty sample.
    pub fn psi(&self, live: &[f64]) -> Option<f64> {
        if !live.iter().any(|x| x.is_finite()) {
            return None;
        }
        let actual = Self::shares_of(&self.edges, live);
        Some(
            self.shares
                .iter()
                .zip(actual)
                .map(|(e, a)| {
                    let (e, a) = (e.max(FLOOR), a.max(FLOOR));
                    (a - e) * (a / e).ln()
                })
                .sum(),
        )
    }
}

/// References of every input of [`INPUTS`] in a population.
pub fn references(stats: &[CustomerStats]) -> BTreeMap<String, Reference> {
    INPUTS
        .iter()
        .filter_map(|name| {
            let values: Vec<f64> = stats.iter().filter_map(|s| input(name, s)).collect();
            Some(((*name).to_owned(), Reference::of(&values)?))
        })
        .collect()
}

/// The PSI of every input that has a reference, for a live population.
pub fn psi(
    references: &BTreeMap<String, Reference>,
    live: &[CustomerStats],
) -> BTreeMap<String, f64> {
    references
        .iter()
        .filter_map(|(name, r)| {
            let values: Vec<f64> = live.iter().filter_map(|s| input(name, s)).collect();
            Some((name.clone(), r.psi(&values)?))
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample(n: usize, scale: f64) -> Vec<f64> {
        // A deterministic skewed sample: quantiles of an exponential distribution.
        (0..n)
            .map(|i| -scale * (1.0 - (i as f64 + 0.5) / n as f64).ln())
            .collect()
    }

    #[test]
    fn the_same_population_is_stable_and_a_shift_is_not() {
        let train = sample(10_000, 30.0);
        let r = Reference::of(&train).unwrap();
        assert_eq!(r.shares.len(), r.edges.len() + 1);
        assert!((r.shares.iter().sum::<f64>() - 1.0).abs() < 1e-9);
        assert!(r.psi(&train).unwrap() < 1e-3);
        // Another sample of the same distribution stays below 0.1.
        assert!(r.psi(&sample(3_000, 30.0)).unwrap() < 0.1);
        // Recency half as long: a large shift.
        let shifted = r.psi(&sample(10_000, 15.0)).unwrap();
        assert!(shifted > 0.25, "{shifted}");
        // A bigger shift scores higher.
        assert!(r.psi(&sample(10_000, 5.0)).unwrap() > shifted);
        assert_eq!(r.psi(&[]), None);
        assert_eq!(r.psi(&[f64::NAN]), None);
    }

    #[test]
    fn ties_merge_bins_and_empty_bins_stay_finite() {
        // 70 % of customers never came back: frequency 0.
        let train: Vec<f64> = (0..1000)
            .map(|i| if i < 700 { 0.0 } else { (i - 699) as f64 })
            .collect();
        let r = Reference::of(&train).unwrap();
        assert!(r.edges.windows(2).all(|w| w[0] < w[1]), "{:?}", r.edges);
        assert!((r.shares[0] - 0.7).abs() < 1e-9, "{:?}", r.shares);
        // Everyone came back: the zero bin is empty, the PSI large and finite.
        let live: Vec<f64> = (1..=1000).map(f64::from).collect();
        let p = r.psi(&live).unwrap();
        assert!(p.is_finite() && p > 1.0, "{p}");
        assert_eq!(Reference::of(&[]), None);
    }

    #[test]
    fn references_and_psi_cover_the_three_inputs() {
        let stats: Vec<CustomerStats> = (0..500)
            .map(|i| CustomerStats {
                frequency: f64::from(i % 7),
                recency_days: f64::from(i),
                age_days: f64::from(i) + 30.0,
                monetary_value: 10.0 + f64::from(i % 13),
                orders_total: f64::from(i % 7 + 1),
                spend_total: 100.0,
            })
            .collect();
        let refs = references(&stats);
        assert_eq!(
            refs.keys().map(String::as_str).collect::<Vec<_>>(),
            ["frequency", "monetary", "recency"]
        );
        let same = psi(&refs, &stats);
        assert!(same.values().all(|v| *v < 1e-3), "{same:?}");
        let older: Vec<CustomerStats> = stats
            .iter()
            .map(|s| CustomerStats {
                recency_days: s.recency_days * 3.0,
                ..*s
            })
            .collect();
        let moved = psi(&refs, &older);
        assert!(
            moved["recency"] > 0.25 && moved["frequency"] < 1e-3,
            "{moved:?}"
        );
    }
}
