//! The versioned model artefact (parameters, cut-points, centroids, fit metrics,
//! training window) and scoring one customer with it.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use crate::bgnbd::{BgNbd, Fitted};
use crate::churn::{Btyd, ChurnInput, ChurnModel, Offer};
use crate::clv::{clv_of, discounted_if_alive, ClvSettings, PurchaseModel};
use crate::gamma_gamma::GammaGamma;
use crate::kmeans::{self, KMeansModel};
use crate::pareto::ParetoNbd;
use crate::rfm::{segment, RfmCuts, TierCuts};

/// What the model was trained on.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct TrainingWindow {
    /// First and last day (days since 1970-01-01) of the calibration transactions.
    pub first_day: i64,
    pub calibration_end_day: i64,
    /// End of the holdout period, when one was scored.
    pub holdout_end_day: Option<i64>,
    pub customers: usize,
    pub transactions: usize,
}

/// Which purchase model serves `p_alive` and expected purchases.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Champion {
    Bgnbd,
    ParetoNbd,
}

impl Champion {
    pub fn as_str(self) -> &'static str {
        match self {
            Champion::Bgnbd => "bgnbd",
            Champion::ParetoNbd => "pareto_nbd",
        }
    }
}

/// Everything needed to score a customer, versioned.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ModelArtefact {
    pub version: String,
    pub created_at_ms: i64,
    /// Length of the model's time unit in days (1 = days, 7 = weeks).
    pub unit_days: f64,
    pub training: TrainingWindow,
    pub bgnbd: Fitted<BgNbd>,
    pub pareto_nbd: Option<Fitted<ParetoNbd>>,
    pub gamma_gamma: Fitted<GammaGamma>,
    pub champion: Champion,
    pub clv: ClvSettings,
    pub rfm: RfmCuts,
    pub tiers: TierCuts,
    pub kmeans: Option<KMeansModel>,
    /// Fit and holdout metrics by name (`holdout_mae.bgnbd`, …).
    pub metrics: BTreeMap<String, f64>,
    /// The training population's distribution of each model input, for drift (PSI)
    /// checks; empty for artefacts made before it existed.
    #[serde(default)]
    pub drift_reference: BTreeMap<String, crate::drift::Reference>,
    /// The supervised churn champion (`custflow train-churn`); without it
    /// `churn_probability` is the purchase model's probability of no purchase in the
    /// next [`Self::churn_horizon_days`].
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub churn: Option<ChurnModel>,
    /// Days ahead that `churn_probability` speaks of: churned means no purchase in them.
    /// The churn model's label horizon when there is one (they are one setting).
    #[serde(default = "default_churn_horizon_days")]
    pub churn_horizon_days: f64,
}

/// The churn horizon of artefacts made before it was a setting (and the default of the
/// commands that make artefacts).
pub const DEFAULT_CHURN_HORIZON_DAYS: f64 = 90.0;

fn default_churn_horizon_days() -> f64 {
    DEFAULT_CHURN_HORIZON_DAYS
}

/// A customer's statistics, time in days.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct CustomerStats {
    /// Repeat purchase days.
    pub frequency: f64,
    /// Days from the first to the last purchase day.
    pub recency_days: f64,
    /// Days from the first purchase day to `as_of`.
    pub age_days: f64,
    /// Mean value of the repeat purchase days.
    pub monetary_value: f64,
    pub orders_total: f64,
    pub spend_total: f64,
}

/// Scores of DESIGN §4.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Scores {
    pub p_alive: f64,
    pub churn_probability: f64,
    pub expected_orders_90d: f64,
    pub expected_aov: f64,
    pub clv_12m: f64,
    pub value_tier: &'static str,
    pub r_score: u8,
    pub f_score: u8,
    pub m_score: u8,
    pub rfm_segment: &'static str,
    pub cluster: Option<String>,
    /// Whether a retention offer pays for this customer (see [`ModelArtefact::score`]).
    pub retention_target: bool,
    /// Expected profit of a retention offer: churn probability × acceptance × CLV − cost.
    pub expected_retention_profit: f64,
}

impl ModelArtefact {
    fn purchase_model(&self) -> &dyn PurchaseModelDyn {
        match (self.champion, &self.pareto_nbd) {
            (Champion::ParetoNbd, Some(p)) => &p.params,
            _ => &self.bgnbd.params,
        }
    }

    /// This artefact with `churn` as its churn model, as a new version made at `now_ms`;
    /// the served horizon becomes the churn model's label horizon.
    pub fn with_churn(&self, churn: ChurnModel, now_ms: i64) -> Self {
        Self {
            version: format!("m{now_ms}"),
            created_at_ms: now_ms,
            churn_horizon_days: churn.horizon_days,
            churn: Some(churn),
            ..self.clone()
        }
    }

    /// The purchase model's churn view of a customer: P(alive) and the probability of no
    /// purchase in the next `horizon_days`.
    pub fn btyd(&self, s: &CustomerStats, horizon_days: f64) -> Btyd {
        let (x, t_x, t) = self.btyd_inputs(s);
        let model = self.purchase_model();
        Btyd {
            p_alive: model.p_alive_dyn(x, t_x, t),
            no_purchase: model.no_purchase_dyn(horizon_days / self.unit_days, x, t_x, t),
        }
    }

    /// P(alive), expected purchases and CLV without the population-relative parts.
    pub fn value(&self, s: &CustomerStats) -> (f64, f64, f64, f64) {
        let (x, t_x, t) = self.btyd_inputs(s);
        let model = self.purchase_model();
        let p_alive = model.p_alive_dyn(x, t_x, t);
        let expected_90d = model.expected_dyn(90.0 / self.unit_days, x, t_x, t);
        let aov = self.expected_aov(s);
        let clv = clv_of(aov, p_alive * self.discounted_if_alive(x, t));
        (p_alive, expected_90d, aov, clv)
    }

    /// The purchase model's inputs of a customer: (x, t_x, T) in the model's time unit.
    pub fn btyd_inputs(&self, s: &CustomerStats) -> (f64, f64, f64) {
        let u = self.unit_days;
        (s.frequency, s.recency_days / u, s.age_days / u)
    }

    /// Gamma-Gamma's expected order value of a customer.
    pub fn expected_aov(&self, s: &CustomerStats) -> f64 {
        self.gamma_gamma
            .params
            .expected_aov(s.frequency, s.monetary_value)
    }

    /// P(alive) of a customer with these [`Self::btyd_inputs`].
    pub fn p_alive(&self, (x, t_x, t): (f64, f64, f64)) -> f64 {
        self.purchase_model().p_alive_dyn(x, t_x, t)
    }

    /// The discounted purchases of the CLV horizon of a customer alive at T after x
    /// repeat purchases ([`crate::clv::discounted_if_alive`]): a customer's CLV is
    /// `clv_of(expected_aov, p_alive · this)`.
    pub fn discounted_if_alive(&self, x: f64, t: f64) -> f64 {
        self.purchase_model().discounted_if_alive_dyn(
            x,
            t,
            ClvSettings {
                month_length: self.clv.month_length / self.unit_days,
                ..self.clv
            },
        )
    }

    /// Every score of one customer. With a churn model, it serves `churn_probability`
    /// and targets customers at or above its profit-maximising threshold; without one,
    /// churn is the purchase model's probability of no purchase in the horizon and a
    /// customer is a target when the default offer's expected profit is positive.
    pub fn score(&self, input: &ChurnInput) -> Scores {
        let s = &input.stats();
        let (p_alive, expected_orders_90d, expected_aov, clv_12m) = self.value(s);
        let u = self.unit_days;
        let btyd = Btyd {
            p_alive,
            no_purchase: self.purchase_model().no_purchase_dyn(
                self.churn_horizon_days / u,
                s.frequency,
                s.recency_days / u,
                s.age_days / u,
            ),
        };
        let (churn_probability, retention_target, expected_retention_profit) = match &self.churn {
            Some(c) => {
                let k = c.score(input, btyd, clv_12m);
                (k.churn_probability, k.retention_target, k.expected_profit)
            }
            None => {
                let p = btyd.no_purchase;
                let profit = Offer::default().expected_profit(p, clv_12m);
                (p, profit > 0.0, profit)
            }
        };
        let days_since_last = (s.age_days - s.recency_days).max(0.0);
        let (r, f, m) = self
            .rfm
            .scores(days_since_last, s.orders_total, s.spend_total);
        let cluster = self.kmeans.as_ref().map(|k| {
            k.assign(&kmeans::point(
                days_since_last,
                s.frequency,
                s.monetary_value,
            ))
            .to_owned()
        });
        Scores {
            p_alive,
            churn_probability,
            expected_orders_90d,
            expected_aov,
            clv_12m,
            value_tier: self.tiers.tier(clv_12m),
            r_score: r,
            f_score: f,
            m_score: m,
            rfm_segment: segment(r, f),
            cluster,
            retention_target,
            expected_retention_profit,
        }
    }
}

/// Object-safe view of a purchase model, so the champion can be picked at run time.
trait PurchaseModelDyn {
    fn p_alive_dyn(&self, x: f64, t_x: f64, t: f64) -> f64;
    fn no_purchase_dyn(&self, h: f64, x: f64, t_x: f64, t: f64) -> f64;
    fn expected_dyn(&self, h: f64, x: f64, t_x: f64, t: f64) -> f64;
    fn discounted_if_alive_dyn(&self, x: f64, t: f64, s: ClvSettings) -> f64;
}

impl<M: PurchaseModel> PurchaseModelDyn for M {
    fn p_alive_dyn(&self, x: f64, t_x: f64, t: f64) -> f64 {
        self.p_alive(x, t_x, t)
    }
    fn no_purchase_dyn(&self, h: f64, x: f64, t_x: f64, t: f64) -> f64 {
        self.p_no_purchase(h, x, t_x, t)
    }
    fn expected_dyn(&self, h: f64, x: f64, t_x: f64, t: f64) -> f64 {
        self.expected(h, x, t_x, t)
    }
    fn discounted_if_alive_dyn(&self, x: f64, t: f64, s: ClvSettings) -> f64 {
        discounted_if_alive(self, x, t, s)
    }
}
