//! Supervised churn: what a classifier sees of a customer, the trained champion as it is
//! stored in the model artefact, and scoring one customer with it.
//!
//! Training (point-in-time snapshots, candidate search, calibration, targeting) is in
//! the submodules; serving needs none of the training crates: a logistic model is a dot
//! product and boosted trees are walked from a compact node list, a few hundred
//! nanoseconds per customer.

pub mod metrics;
pub mod plot;
pub mod snapshot;
pub mod train;

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use crate::artefact::CustomerStats;

/// Names of the classifier inputs, in [`ChurnInput::vector`] order.
pub const FEATURES: [&str; 11] = [
    "log_frequency",
    "log_recency",
    "log_age",
    "log_days_since_last",
    "log_monetary_value",
    "log_orders_total",
    "log_spend_total",
    "log_orders_30d",
    "log_orders_90d",
    "log_spend_90d",
    "log_overdue_ratio",
];
/// Number of classifier inputs.
pub const N_FEATURES: usize = FEATURES.len();

/// What the classifier sees of one customer at one moment (time in days). Every field
/// is a feature of DESIGN §4, so the processors and a replay of transactions give the
/// same input.
#[derive(Debug, Clone, Copy, PartialEq, Default, Serialize, Deserialize)]
pub struct ChurnInput {
    pub frequency: f64,
    pub recency_days: f64,
    pub age_days: f64,
    pub monetary_value: f64,
    pub orders_total: f64,
    pub spend_total: f64,
    pub orders_30d: f64,
    pub orders_90d: f64,
    pub spend_90d: f64,
}

impl ChurnInput {
    /// The input of BTYD statistics, window counts and amounts left at zero.
    pub fn from_stats(s: &CustomerStats) -> Self {
        Self {
            frequency: s.frequency,
            recency_days: s.recency_days,
            age_days: s.age_days,
            monetary_value: s.monetary_value,
            orders_total: s.orders_total,
            spend_total: s.spend_total,
            ..Self::default()
        }
    }

    /// The BTYD statistics inside it.
    pub fn stats(&self) -> CustomerStats {
        CustomerStats {
            frequency: self.frequency,
            recency_days: self.recency_days,
            age_days: self.age_days,
            monetary_value: self.monetary_value,
            orders_total: self.orders_total,
            spend_total: self.spend_total,
        }
    }

    /// The classifier's input vector: log-compressed counts, amounts and durations, and
    /// how overdue the customer is against their own average gap.
    pub fn vector(&self) -> [f64; N_FEATURES] {
        let l = |v: f64| v.max(0.0).ln_1p();
        let since = (self.age_days - self.recency_days).max(0.0);
        let gap = if self.frequency > 0.0 {
            self.recency_days / self.frequency
        } else {
            self.age_days
        };
        [
            l(self.frequency),
            l(self.recency_days),
            l(self.age_days),
            l(since),
            l(self.monetary_value),
            l(self.orders_total),
            l(self.spend_total),
            l(self.orders_30d),
            l(self.orders_90d),
            l(self.spend_90d),
            l(since / gap.max(1.0)),
        ]
    }
}

/// One node of a boosted tree: `(feature, threshold, left, right, missing, value)`; a
/// leaf has `feature == u32::MAX` and only `value` matters. Rows go left when the
/// feature is below the threshold, to `missing` when it is NaN.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct Node(pub u32, pub f64, pub u32, pub u32, pub u32, pub f64);

/// The leaf marker of [`Node`].
pub const LEAF: u32 = u32::MAX;

/// What the artefact's purchase model says of a customer's churn.
#[derive(Debug, Clone, Copy, PartialEq, Default, Serialize, Deserialize)]
pub struct Btyd {
    /// Probability the customer is alive now.
    pub p_alive: f64,
    /// Probability of no purchase in the churn horizon: dead, or alive and quiet.
    pub no_purchase: f64,
}

/// A trained classifier's raw score (log-odds of churn before calibration).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum Classifier {
    /// The log-odds of the purchase model's probability of no purchase in the horizon.
    NoPurchase,
    /// The log-odds of 1 − P(alive) of the purchase model (kind `bgnbd`, its name before
    /// the no-purchase probability replaced it). It ranks badly: every one-time buyer
    /// is alive by construction under BG/NBD, so it is a reference candidate only.
    #[serde(rename = "bgnbd")]
    OneMinusPAlive,
    /// Logistic regression on standardised inputs.
    Logistic {
        mean: Vec<f64>,
        scale: Vec<f64>,
        coef: Vec<f64>,
        intercept: f64,
    },
    /// Gradient-boosted trees: base score plus the leaf value of every tree.
    Trees { base: f64, trees: Vec<Vec<Node>> },
}

/// Log-odds, clamped away from ±∞.
pub fn logit(p: f64) -> f64 {
    let p = p.clamp(1e-9, 1.0 - 1e-9);
    (p / (1.0 - p)).ln()
}

/// The logistic function.
pub fn sigmoid(z: f64) -> f64 {
    1.0 / (1.0 + (-z).exp())
}

impl Classifier {
    /// Raw score of one input vector; `btyd` serves the purchase-model classifiers.
    pub fn raw(&self, x: &[f64; N_FEATURES], btyd: Btyd) -> f64 {
        match self {
            Classifier::NoPurchase => logit(btyd.no_purchase),
            Classifier::OneMinusPAlive => logit(1.0 - btyd.p_alive),
            Classifier::Logistic {
                mean,
                scale,
                coef,
                intercept,
            } => {
                let mut z = *intercept;
                for i in 0..N_FEATURES.min(coef.len()).min(mean.len()).min(scale.len()) {
                    z += coef[i] * (x[i] - mean[i]) / scale[i];
                }
                z
            }
            Classifier::Trees { base, trees } => {
                let mut z = *base;
                for t in trees {
                    z += walk(t, x);
                }
                z
            }
        }
    }
}

/// The leaf value a row reaches in one tree (0 for a malformed tree).
fn walk(tree: &[Node], x: &[f64; N_FEATURES]) -> f64 {
    let mut i = 0usize;
    // A well-formed tree is shallower than its node count; the bound stops a cycle.
    for _ in 0..tree.len() {
        let Some(n) = tree.get(i) else { return 0.0 };
        if n.0 == LEAF {
            return n.5;
        }
        let v = x.get(n.0 as usize).copied().unwrap_or(f64::NAN);
        i = if v.is_nan() {
            n.4
        } else if v < n.1 {
            n.2
        } else {
            n.3
        } as usize;
    }
    0.0
}

/// Platt scaling: P(churn) = σ(a · raw + b).
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct Platt {
    pub a: f64,
    pub b: f64,
}

impl Platt {
    pub const IDENTITY: Platt = Platt { a: 1.0, b: 0.0 };

    pub fn apply(&self, raw: f64) -> f64 {
        sigmoid(self.a * raw + self.b)
    }
}

/// The retention offer behind `retention_target`: what it costs per targeted customer
/// and the share of would-be churners it keeps.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct Offer {
    pub cost: f64,
    pub acceptance: f64,
}

impl Default for Offer {
    fn default() -> Self {
        Self {
            cost: 2.0,
            acceptance: 0.3,
        }
    }
}

impl Offer {
    /// Expected profit of targeting one customer: the value kept when a churner accepts,
    /// less the offer's cost.
    pub fn expected_profit(&self, churn_probability: f64, clv: f64) -> f64 {
        churn_probability * self.acceptance * clv.max(0.0) - self.cost
    }
}

/// The supervised churn champion, as stored in the model artefact.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ChurnModel {
    /// Which candidate won, with its settings (`gbt(depth=4,trees=100,lr=0.1)`, …).
    pub name: String,
    pub trained_at_ms: i64,
    /// Churned means no purchase within this many days after the snapshot.
    pub horizon_days: f64,
    pub classifier: Classifier,
    pub calibration: Platt,
    pub offer: Offer,
    /// Customers at or above this churn probability are retention targets (the
    /// threshold of the highest realised profit on the holdout).
    pub threshold: f64,
    /// Holdout metrics of the champion and of every candidate (`auc.<name>`, …).
    pub metrics: BTreeMap<String, f64>,
}

/// The churn scores of one customer.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct ChurnScore {
    pub churn_probability: f64,
    pub retention_target: bool,
    pub expected_profit: f64,
}

impl ChurnModel {
    /// Calibrated probability of no purchase within the horizon.
    pub fn probability(&self, input: &ChurnInput, btyd: Btyd) -> f64 {
        self.calibration
            .apply(self.classifier.raw(&input.vector(), btyd))
    }

    /// Probability, targeting decision and expected profit of one customer.
    pub fn score(&self, input: &ChurnInput, btyd: Btyd, clv: f64) -> ChurnScore {
        let p = self.probability(input, btyd);
        ChurnScore {
            churn_probability: p,
            retention_target: p >= self.threshold,
            expected_profit: self.offer.expected_profit(p, clv),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn trees_walk_left_right_and_missing() {
        // x0 < 1 → -1; else x1 < 0.5 → 2 else 3; NaN x0 → 5.
        let tree = vec![
            Node(0, 1.0, 1, 2, 3, 0.0),
            Node(LEAF, 0.0, 0, 0, 0, -1.0),
            Node(1, 0.5, 4, 5, 4, 0.0),
            Node(LEAF, 0.0, 0, 0, 0, 5.0),
            Node(LEAF, 0.0, 0, 0, 0, 2.0),
            Node(LEAF, 0.0, 0, 0, 0, 3.0),
        ];
        let c = Classifier::Trees {
            base: 0.5,
            trees: vec![tree],
        };
        let mut x = [0.0; N_FEATURES];
        let b = Btyd::default();
        assert_eq!(c.raw(&x, b), -0.5);
        x[0] = 2.0;
        assert_eq!(c.raw(&x, b), 2.5);
        x[1] = 0.7;
        assert_eq!(c.raw(&x, b), 3.5);
        x[0] = f64::NAN;
        assert_eq!(c.raw(&x, b), 5.5);
        // A cycle ends instead of looping.
        let cyclic = Classifier::Trees {
            base: 0.0,
            trees: vec![vec![Node(0, 1.0, 0, 0, 0, 0.0)]],
        };
        assert_eq!(cyclic.raw(&x, b), 0.0);
    }

    #[test]
    fn btyd_classifiers_serve_their_probability_before_calibration() {
        let mut m = ChurnModel {
            name: "btyd_no_purchase".into(),
            trained_at_ms: 0,
            horizon_days: 90.0,
            classifier: Classifier::NoPurchase,
            calibration: Platt::IDENTITY,
            offer: Offer::default(),
            threshold: 0.5,
            metrics: BTreeMap::new(),
        };
        let b = Btyd {
            p_alive: 1.0,
            no_purchase: 0.7,
        };
        let s = m.score(&ChurnInput::default(), b, 100.0);
        assert!((s.churn_probability - 0.7).abs() < 1e-9);
        assert!(s.retention_target);
        assert!((s.expected_profit - (0.7 * 0.3 * 100.0 - 2.0)).abs() < 1e-9);
        // The old kind keeps its meaning in stored artefacts.
        let old: Classifier = serde_json::from_str(r#"{"kind":"bgnbd"}"#).unwrap();
        assert_eq!(old, Classifier::OneMinusPAlive);
        m.classifier = old;
        assert!(m.score(&ChurnInput::default(), b, 100.0).churn_probability < 1e-6);
    }

    #[test]
    fn vector_is_finite_for_a_new_customer() {
        let v = ChurnInput {
            orders_total: 1.0,
            spend_total: 10.0,
            ..ChurnInput::default()
        }
        .vector();
        assert!(v.iter().all(|x| x.is_finite()));
    }
}
