//! Customer lifetime value: discounted expected spend over monthly steps (DESIGN §4),
//! the scheme of lifetimes' `customer_lifetime_value`.

use serde::{Deserialize, Serialize};

use crate::bgnbd::BgNbd;
use crate::pareto::ParetoNbd;

/// A model of repeat purchases conditional on a customer's history.
pub trait PurchaseModel {
    /// Expected repeat purchases in the next `horizon` given (x, t_x, T).
    fn expected(&self, horizon: f64, x: f64, t_x: f64, t: f64) -> f64;
    /// Expected repeat purchases in the next `horizon` of a customer alive at T after x
    /// repeat purchases: [`Self::expected`] is [`Self::p_alive`] times it.
    fn expected_if_alive(&self, horizon: f64, x: f64, t: f64) -> f64;
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
    fn expected_if_alive(&self, horizon: f64, x: f64, t: f64) -> f64 {
        BgNbd::expected_if_alive(self, horizon, x, t)
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
    fn expected_if_alive(&self, horizon: f64, x: f64, t: f64) -> f64 {
        ParetoNbd::expected_if_alive(self, horizon, x, t)
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
    clv_of(expected_aov, discounted_purchases(model, x, t_x, t, s))
}

/// Σ_{i=1..months} (E[X(i·L)] − E[X((i−1)·L)]) / (1+d)^i: the discounted purchases that
/// CLV multiplies the expected order value by; P(alive) times [`discounted_if_alive`].
pub fn discounted_purchases(
    model: &impl PurchaseModel,
    x: f64,
    t_x: f64,
    t: f64,
    s: ClvSettings,
) -> f64 {
    model.p_alive(x, t_x, t) * discounted_if_alive(model, x, t, s)
}

/// [`discounted_purchases`] of a customer known to be alive at T after x repeat
/// purchases: it depends on (x, T) alone, so customers sharing them share it.
pub fn discounted_if_alive(model: &impl PurchaseModel, x: f64, t: f64, s: ClvSettings) -> f64 {
    let mut total = 0.0;
    let mut prev = 0.0;
    let mut discount = 1.0;
    for i in 1..=s.months {
        let e = non_negative(model.expected_if_alive(f64::from(i) * s.month_length, x, t));
        discount /= 1.0 + s.monthly_discount;
        total += (e - prev) * discount;
        prev = e;
    }
    total
}

/// CLV from the expected order value and the [`discounted_purchases`]: never negative,
/// 0 where the model gives no finite value.
pub fn clv_of(expected_aov: f64, discounted_purchases: f64) -> f64 {
    non_negative(expected_aov * discounted_purchases)
}

/// The floor of every expectation the models give out: never negative, 0 where the
/// value is not finite.
pub fn non_negative(v: f64) -> f64 {
    if v.is_finite() {
        v.max(0.0)
    } else {
        0.0
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The definition: Σ aov · (E[X(i·L)] − E[X((i−1)·L)]) / (1+d)^i from the
    /// conditional expectation itself.
    fn clv_by_definition(m: &impl PurchaseModel, aov: f64, x: f64, t_x: f64, t: f64) -> f64 {
        let s = ClvSettings::DAYS;
        let (mut total, mut prev) = (0.0, 0.0);
        for i in 1..=s.months {
            let e = m.expected(f64::from(i) * s.month_length, x, t_x, t);
            total += aov * (e - prev) / (1.0 + s.monthly_discount).powi(i as i32);
            prev = e;
        }
        total.max(0.0)
    }

    fn agrees(m: &impl PurchaseModel) {
        for (x, t_x, t) in [
            (0.0, 0.0, 200.0),
            (1.0, 30.0, 300.0),
            (7.0, 250.0, 260.0),
            (25.0, 10.0, 365.0),
        ] {
            let want = clv_by_definition(m, 42.0, x, t_x, t);
            let got = clv(m, 42.0, x, t_x, t, ClvSettings::DAYS);
            assert!(
                (got - want).abs() <= 1e-10 * want.max(1.0),
                "({x}, {t_x}, {t}): {got} vs {want}"
            );
            // The conditional expectation is P(alive) times the expectation if alive.
            let e = m.expected(90.0, x, t_x, t);
            let parts = m.p_alive(x, t_x, t) * m.expected_if_alive(90.0, x, t);
            assert!((e - parts).abs() <= 1e-12 * e.max(1.0), "{e} vs {parts}");
        }
    }

    #[test]
    fn clv_from_the_shared_part_is_the_defining_sum() {
        // CDNOW's published parameters, in days.
        agrees(&BgNbd {
            r: 0.243,
            alpha: 4.414 * 7.0,
            a: 0.793,
            b: 2.426,
        });
        agrees(&ParetoNbd {
            r: 0.553,
            alpha: 10.58 * 7.0,
            s: 0.606,
            beta: 11.67 * 7.0,
        });
    }
}
