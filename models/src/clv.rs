//! Customer lifetime value: discounted expected spend over monthly steps (DESIGN §4),
//! the scheme of lifetimes' `customer_lifetime_value`.

use serde::{Deserialize, Serialize};

use crate::bgnbd::BgNbd;
use crate::pareto::ParetoNbd;

/// A model of repeat purchases conditional on a customer's history.
pub trait PurchaseModel {
    /// Expected repeat purchases in the next `horizon` given (x, t_x, T).
    fn expected(&self, horizon: f64, x: f64, t_x: f64, t: f64) -> f64;
    /// Probability the customer is alive.
    fn p_alive(&self, x: f64, t_x: f64, t: f64) -> f64;
    /// Probability of no purchase in the next `horizon` given (x, t_x, T): the served
    /// churn probability without a trained classifier.
    fn p_no_purchase(&self, horizon: f64, x: f64, t_x: f64, t: f64) -> f64;
}

impl PurchaseModel for BgNbd {
    fn expected(&self, horizon: f64, x: f64, t_x: f64, t: f64) -> f64 {
        self.expected_conditional(horizon, x, t_x, t)
    }
    fn p_alive(&self, x: f64, t_x: f64, t: f64) -> f64 {
        BgNbd::p_alive(self, x, t_x, t)
    }
    fn p_no_purchase(&self, horizon: f64, x: f64, t_x: f64, t: f64) -> f64 {
        BgNbd::p_no_purchase(self, horizon, x, t_x, t)
    }
}

impl PurchaseModel for ParetoNbd {
    fn expected(&self, horizon: f64, x: f64, t_x: f64, t: f64) -> f64 {
        self.expected_conditional(horizon, x, t_x, t)
    }
    fn p_alive(&self, x: f64, t_x: f64, t: f64) -> f64 {
        ParetoNbd::p_alive(self, x, t_x, t)
    }
    fn p_no_purchase(&self, horizon: f64, x: f64, t_x: f64, t: f64) -> f64 {
        ParetoNbd::p_no_purchase(self, horizon, x, t_x, t)
    }
}

/// How CLV is discounted and over how long.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct ClvSettings {
    /// Number of months summed (12 for `clv_12m`).
    pub months: u32,
    /// Discount rate per month (0.01 = 1%).
    pub monthly_discount: f64,
    /// Length of a month in the model's time unit: 30 for days, 4.345 for weeks.
    pub month_length: f64,
}

impl ClvSettings {
    /// 12 months, 1% a month, time in days.
    pub const DAYS: ClvSettings = ClvSettings {
        months: 12,
        monthly_discount: 0.01,
        month_length: 30.0,
    };
}

/// Σ_{i=1..months} aov · (E[X(i·L)] − E[X((i−1)·L)]) / (1+d)^i.
pub fn clv(
    model: &impl PurchaseModel,
    expected_aov: f64,
    x: f64,
    t_x: f64,
    t: f64,
    s: ClvSettings,
) -> f64 {
    let mut total = 0.0;
    let mut prev = 0.0;
    let mut discount = 1.0;
    for i in 1..=s.months {
        let e = model.expected(f64::from(i) * s.month_length, x, t_x, t);
        discount /= 1.0 + s.monthly_discount;
        total += expected_aov * (e - prev) * discount;
        prev = e;
    }
    if total.is_finite() {
        total.max(0.0)
    } else {
        0.0
    }
}
