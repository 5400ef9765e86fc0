//! The promotion rule of the model job: when a refit on the live population replaces the
//! model in use. It needs evidence that the population no longer looks like the model in
//! use (a likelihood-ratio test, or drift of the inputs) AND a change in what customers
//! are told (their value tier, RFM segment or retention target, or their CLV) above a
//! tolerance. docs/models.md gives the reasoning.
//!
//! The test: the model in use is a fixed hypothesis θ₀ and the refit the maximum-likelihood
//! estimate θ̂ on the same customers, so 2·(ℓ(θ̂) − ℓ(θ₀)) is χ² with the 7 free parameters
//! of BG/NBD and Gamma-Gamma when θ₀ is true. θ₀ was itself estimated (on an earlier
//! population), so on a stationary population the test rejects more often than its
//! level; the materiality tolerance is what keeps the model then. The test stops the
//! other failure: a small sample whose refit moves the scores by noise alone.

use rayon::prelude::*;
use serde::{Deserialize, Serialize};

use crate::artefact::{CustomerStats, ModelArtefact};
use crate::churn::ChurnInput;
use crate::special::chi2_sf;
use crate::summary::{compress, SummaryRow};

/// Free parameters of the pair of models the test compares (BG/NBD 4, Gamma-Gamma 3).
pub const DEGREES_OF_FREEDOM: f64 = 7.0;

/// The settings of the rule.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct PromotionRule {
    /// Level of the likelihood-ratio test: a refit is evidence of change when its p-value
    /// is below this.
    pub level: f64,
    /// Share of customers whose value tier, RFM segment or retention target the refit
    /// changes that counts as material.
    pub min_changed_share: f64,
    /// Median absolute relative change of the customers' 12-month CLV that counts as
    /// material.
    pub min_clv_shift: f64,
}

impl Default for PromotionRule {
    fn default() -> Self {
        Self {
            level: 0.001,
            min_changed_share: 0.05,
            min_clv_shift: 0.05,
        }
    }
}

/// What a refit and the model in use were found to differ by, on one population.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Comparison {
    /// Customers with orders compared.
    pub customers: usize,
    /// Log-likelihood per customer of BG/NBD + Gamma-Gamma, in use and refitted.
    pub ll_current: f64,
    pub ll_refit: f64,
    /// 2·(ℓ(refit) − ℓ(in use)) over all customers.
    pub lr_statistic: f64,
    /// P(χ²₇ > `lr_statistic`).
    pub p_value: f64,
    /// Shares of customers whose value tier, RFM segment, retention target, or any of the
    /// three would change.
    pub tier_changed: f64,
    pub segment_changed: f64,
    pub target_changed: f64,
    pub changed: f64,
    /// Median |CLV(refit) / CLV(in use) − 1| (0 where both are 0).
    pub clv_shift: f64,
    /// An input's PSI was above the drift threshold.
    pub drifted: bool,
}

/// The rule's verdict and why, in words a reader of `GET /v1/models` understands.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Decision {
    pub promote: bool,
    pub reason: String,
}

/// Log-likelihood of BG/NBD + Gamma-Gamma of one artefact on customers with orders, with
/// time measured in days whatever unit the artefact was fitted in (each purchase time's
/// density carries a factor 1/unit).
fn log_likelihood(m: &ModelArtefact, buyers: &[&CustomerStats]) -> f64 {
    let u = m.unit_days;
    let rows: Vec<SummaryRow> = buyers.iter().map(|s| SummaryRow::of_stats(s, u)).collect();
    let purchases: f64 = rows.iter().map(|r| r.x).sum();
    let xm: Vec<(f64, f64)> = rows.iter().map(|r| (r.x, r.m)).collect();
    m.bgnbd.params.log_likelihood(&compress(&rows)) - purchases * u.ln()
        + m.gamma_gamma.params.log_likelihood(&xm)
}

/// What a refit changes for one customer.
struct Change {
    tier: bool,
    segment: bool,
    target: bool,
    /// |CLV(refit) / CLV(in use) − 1|.
    clv_shift: f64,
}

/// The median of `v` (0 when empty); reorders `v`.
fn median(v: &mut [f64]) -> f64 {
    if v.is_empty() {
        return 0.0;
    }
    let mid = v.len() / 2;
    let (_, m, _) = v.select_nth_unstable_by(mid, f64::total_cmp);
    *m
}

/// Compares a refit with the model in use on the customers of `inputs` (those with
/// orders), as of the time their inputs were taken.
pub fn compare(
    current: &ModelArtefact,
    refit: &ModelArtefact,
    inputs: &[ChurnInput],
    drifted: bool,
) -> Comparison {
    let buyers: Vec<&ChurnInput> = inputs.iter().filter(|i| i.orders_total > 0.0).collect();
    let n = buyers.len();
    if n == 0 {
        return Comparison {
            drifted,
            p_value: 1.0,
            ..Comparison::default()
        };
    }
    let stats: Vec<CustomerStats> = buyers.iter().map(|i| i.stats()).collect();
    let refs: Vec<&CustomerStats> = stats.iter().collect();
    let (ll_current, ll_refit) = rayon::join(
        || log_likelihood(current, &refs),
        || log_likelihood(refit, &refs),
    );
    let lr = 2.0 * (ll_refit - ll_current);
    let per: Vec<Change> = buyers
        .par_iter()
        .map(|i| {
            let (a, b) = (current.score(i), refit.score(i));
            let (ca, cb) = (a.clv_12m, b.clv_12m);
            let shift = if ca.abs() < 1e-12 && cb.abs() < 1e-12 {
                0.0
            } else {
                (cb - ca).abs() / ca.abs().max(1e-12)
            };
            Change {
                tier: a.value_tier != b.value_tier,
                segment: a.rfm_segment != b.rfm_segment,
                target: a.retention_target != b.retention_target,
                clv_shift: shift,
            }
        })
        .collect();
    let share = |f: fn(&Change) -> bool| per.iter().filter(|p| f(p)).count() as f64 / n as f64;
    let mut shifts: Vec<f64> = per.iter().map(|p| p.clv_shift).collect();
    Comparison {
        customers: n,
        ll_current: ll_current / n as f64,
        ll_refit: ll_refit / n as f64,
        lr_statistic: lr,
        p_value: if lr.is_nan() {
            f64::NAN
        } else {
            chi2_sf(lr, DEGREES_OF_FREEDOM)
        },
        tier_changed: share(|p| p.tier),
        segment_changed: share(|p| p.segment),
        target_changed: share(|p| p.target),
        changed: share(|p| p.tier || p.segment || p.target),
        clv_shift: median(&mut shifts),
        drifted,
    }
}

/// Percent with one decimal.
fn pct(x: f64) -> String {
    format!("{:.1}%", 100.0 * x)
}

impl PromotionRule {
    /// Whether the refit compared in `c` replaces the model in use.
    pub fn decide(&self, c: &Comparison) -> Decision {
        let keep = |reason: String| Decision {
            promote: false,
            reason,
        };
        if !c.ll_refit.is_finite() || c.p_value.is_nan() {
            return keep("the refit failed: its log-likelihood is not finite".into());
        }
        // Worse beyond the optimiser's tolerance (a refit on an unchanged population
        // lands on the same optimum, give or take rounding).
        if c.ll_refit < c.ll_current - 1e-9 * c.ll_current.abs().max(1.0) {
            return keep(format!(
                "the refit fits worse than the model in use ({:.4} < {:.4} per customer)",
                c.ll_refit, c.ll_current
            ));
        }
        let significant = c.p_value < self.level;
        let test = format!(
            "likelihood ratio {:.1} (p = {:.2e}, level {})",
            c.lr_statistic, c.p_value, self.level
        );
        if !significant && !c.drifted {
            return keep(format!(
                "no evidence of change: {test}, and no input drifted"
            ));
        }
        let evidence = match (significant, c.drifted) {
            (true, true) => format!("{test} and drift"),
            (true, false) => test,
            _ => format!("drift of the inputs ({test})"),
        };
        let change = format!(
            "{} of customers change tier, segment or retention target (tier {}, segment {}, \
             target {}; tolerance {}), median CLV change {} (tolerance {})",
            pct(c.changed),
            pct(c.tier_changed),
            pct(c.segment_changed),
            pct(c.target_changed),
            pct(self.min_changed_share),
            pct(c.clv_shift),
            pct(self.min_clv_shift)
        );
        if c.changed < self.min_changed_share && c.clv_shift < self.min_clv_shift {
            return keep(format!("not material: {change}; evidence was {evidence}"));
        }
        Decision {
            promote: true,
            reason: format!("{evidence}; {change}"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn comparison() -> Comparison {
        Comparison {
            customers: 1000,
            ll_current: -10.0,
            ll_refit: -9.9,
            lr_statistic: 200.0,
            p_value: 1e-30,
            tier_changed: 0.1,
            segment_changed: 0.02,
            target_changed: 0.01,
            changed: 0.12,
            clv_shift: 0.2,
            drifted: false,
        }
    }

    #[test]
    fn evidence_and_a_material_change_promote() {
        let d = PromotionRule::default().decide(&comparison());
        assert!(d.promote, "{d:?}");
        assert!(d.reason.contains("likelihood ratio 200.0"), "{}", d.reason);
        assert!(d.reason.contains("12.0% of customers"), "{}", d.reason);
    }

    #[test]
    fn a_significant_refit_that_changes_nothing_material_is_kept() {
        let c = Comparison {
            changed: 0.01,
            tier_changed: 0.01,
            clv_shift: 0.02,
            ..comparison()
        };
        let d = PromotionRule::default().decide(&c);
        assert!(!d.promote && d.reason.starts_with("not material"), "{d:?}");
        // Either measure alone is enough.
        let clv_only = Comparison {
            clv_shift: 0.06,
            ..c.clone()
        };
        assert!(PromotionRule::default().decide(&clv_only).promote);
        let share_only = Comparison { changed: 0.05, ..c };
        assert!(PromotionRule::default().decide(&share_only).promote);
    }

    #[test]
    fn a_material_change_without_evidence_is_kept_unless_the_inputs_drifted() {
        let c = Comparison {
            lr_statistic: 10.0,
            p_value: chi2_sf(10.0, DEGREES_OF_FREEDOM),
            ..comparison()
        };
        let d = PromotionRule::default().decide(&c);
        assert!(
            !d.promote && d.reason.starts_with("no evidence of change"),
            "{d:?}"
        );
        let drifted = Comparison { drifted: true, ..c };
        let d = PromotionRule::default().decide(&drifted);
        assert!(d.promote && d.reason.starts_with("drift"), "{d:?}");
    }

    #[test]
    fn a_failed_or_worse_refit_is_never_promoted_even_with_drift() {
        for c in [
            Comparison {
                ll_refit: f64::NAN,
                p_value: f64::NAN,
                drifted: true,
                ..comparison()
            },
            Comparison {
                ll_refit: -10.5,
                drifted: true,
                ..comparison()
            },
        ] {
            let d = PromotionRule::default().decide(&c);
            assert!(!d.promote, "{c:?} {d:?}");
        }
    }

    /// 600 customers of a deterministic spread of histories.
    fn inputs() -> Vec<ChurnInput> {
        (0..600)
            .map(|c| {
                let x = (c % 7) as f64;
                let age = 100.0 + (c % 300) as f64;
                let recency = if x > 0.0 {
                    age * (0.2 + (c % 5) as f64 / 6.0)
                } else {
                    0.0
                };
                let m = 10.0 + (c % 13) as f64 * 3.0;
                ChurnInput::from_stats(&CustomerStats {
                    frequency: x,
                    recency_days: recency,
                    age_days: age,
                    monetary_value: if x > 0.0 { m } else { 0.0 },
                    orders_total: x + 1.0,
                    spend_total: m * (x + 1.0),
                })
            })
            .collect()
    }

    fn fitted(inputs: &[ChurnInput]) -> ModelArtefact {
        let stats: Vec<CustomerStats> = inputs.iter().map(ChurnInput::stats).collect();
        crate::fit::fit_population(&stats, "v", 0, 20_000, 7).unwrap()
    }

    #[test]
    fn a_model_against_itself_changes_nothing_and_is_kept() {
        let inputs = inputs();
        let m = fitted(&inputs);
        let c = compare(&m, &m, &inputs, false);
        assert_eq!(c.customers, 600);
        assert_eq!(c.lr_statistic, 0.0);
        assert_eq!(c.p_value, 1.0);
        assert_eq!((c.changed, c.clv_shift), (0.0, 0.0));
        let d = PromotionRule::default().decide(&c);
        assert!(!d.promote && d.reason.starts_with("no evidence"), "{d:?}");
    }

    #[test]
    fn the_likelihood_does_not_depend_on_the_unit_the_model_was_fitted_in() {
        let inputs = inputs();
        let days = fitted(&inputs);
        // The same model with time in weeks: α in weeks, the rest unchanged.
        let mut weeks = days.clone();
        weeks.unit_days = 7.0;
        weeks.bgnbd.params.alpha /= 7.0;
        let buyers: Vec<CustomerStats> = inputs.iter().map(ChurnInput::stats).collect();
        let refs: Vec<&CustomerStats> = buyers.iter().collect();
        let (a, b) = (log_likelihood(&days, &refs), log_likelihood(&weeks, &refs));
        assert!((a - b).abs() < 1e-8 * a.abs(), "{a} vs {b}");
    }

    #[test]
    fn a_model_whose_purchase_rate_doubled_is_a_material_significant_change() {
        let inputs = inputs();
        let current = fitted(&inputs);
        // Everyone bought twice as often in the same time.
        let doubled: Vec<ChurnInput> = inputs
            .iter()
            .map(|i| {
                let mut s = i.stats();
                s.frequency *= 2.0;
                s.orders_total = s.frequency + 1.0;
                s.spend_total = s.monetary_value.max(10.0) * s.orders_total;
                ChurnInput::from_stats(&s)
            })
            .collect();
        let refit = fitted(&doubled);
        let c = compare(&current, &refit, &doubled, false);
        assert!(c.ll_refit > c.ll_current, "{c:?}");
        assert!(c.p_value < 1e-6, "{c:?}");
        let d = PromotionRule::default().decide(&c);
        assert!(d.promote, "{d:?} {c:?}");
    }

    #[test]
    fn the_median_takes_the_middle_value() {
        assert_eq!(median(&mut []), 0.0);
        assert_eq!(median(&mut [3.0, 1.0, 2.0]), 2.0);
        assert_eq!(median(&mut [5.0, 0.0, 0.0, 9.0, 1.0]), 1.0);
    }
}
