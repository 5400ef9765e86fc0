//! Pareto/NBD (Schmittlein, Morrison & Colombo 1987): purchases at rate λ ~ Gamma(r, α)
//! during an exponential lifetime with rate μ ~ Gamma(s, β).

use serde::{Deserialize, Serialize};

use crate::bgnbd::Fitted;
use crate::error::{Error, Result};
use crate::optimize::fit_positive;
use crate::special::{adaptive_gauss_legendre, ln_gamma, ln_hyp2f1, log_add_exp, log_sub_exp};
use crate::summary::WeightedRow;

/// Pareto/NBD parameters.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct ParetoNbd {
    pub r: f64,
    pub alpha: f64,
    pub s: f64,
    pub beta: f64,
}

impl ParetoNbd {
    /// ln A₀ of Fader & Hardie's note on the Pareto/NBD likelihood.
    fn ln_a0(&self, x: f64, t_x: f64, t: f64) -> f64 {
        let ParetoNbd { r, alpha, s, beta } = *self;
        let (lo, hi, second) = if alpha < beta {
            (alpha, beta, r + x)
        } else {
            (beta, alpha, s + 1.0)
        };
        let rsx = r + s + x;
        let (q1, q2) = (hi + t_x, hi + t);
        let ln_p1 = ln_hyp2f1(rsx, second, rsx + 1.0, (hi - lo) / q1);
        let ln_p2 = ln_hyp2f1(rsx, second, rsx + 1.0, (hi - lo) / q2);
        let (ln_q1, ln_q2) = (q1.ln(), q2.ln());
        log_sub_exp(ln_p1 + rsx * ln_q2, ln_p2 + rsx * ln_q1) - rsx * (ln_q1 + ln_q2)
    }

    /// ln Γ(r+x)/Γ(r) + r ln α + s ln β − (r+x) ln(α+T) − s ln(β+T): the "alive" part.
    fn ln_alive_part(&self, x: f64, t: f64) -> f64 {
        let ParetoNbd { r, alpha, s, beta } = *self;
        ln_gamma(r + x) - ln_gamma(r) + r * alpha.ln() + s * beta.ln()
            - (r + x) * (alpha + t).ln()
            - s * (beta + t).ln()
    }

    /// Log-likelihood of one customer.
    pub fn ln_l(&self, x: f64, t_x: f64, t: f64) -> f64 {
        let ParetoNbd { r, alpha, s, beta } = *self;
        let a1 = ln_gamma(r + x) - ln_gamma(r) + r * alpha.ln() + s * beta.ln();
        let a2 = log_add_exp(
            -(r + x) * (alpha + t).ln() - s * (beta + t).ln(),
            s.ln() + self.ln_a0(x, t_x, t) - (r + s + x).ln(),
        );
        a1 + a2
    }

    /// Total log-likelihood of weighted summary rows.
    pub fn log_likelihood(&self, rows: &[WeightedRow]) -> f64 {
        if !(self.r > 0.0 && self.alpha > 0.0 && self.s > 0.0 && self.beta > 0.0) {
            return f64::NEG_INFINITY;
        }
        rows.iter()
            .map(|row| row.weight * self.ln_l(row.x, row.t_x, row.t))
            .sum()
    }

    /// Maximum-likelihood fit (Nelder–Mead on log parameters, starting from all ones).
    pub fn fit(rows: &[WeightedRow]) -> Result<Fitted<Self>> {
        if rows.iter().map(|r| r.weight).sum::<f64>() < 2.0 {
            return Err(Error::NotEnoughData(
                "Pareto/NBD needs at least 2 customers".into(),
            ));
        }
        fit_positive(
            4,
            |p| ParetoNbd {
                r: p[0],
                alpha: p[1],
                s: p[2],
                beta: p[3],
            },
            |m| m.log_likelihood(rows),
            "Pareto/NBD",
        )
    }

    /// Probability the customer is still alive at age `t`.
    pub fn p_alive(&self, x: f64, t_x: f64, t: f64) -> f64 {
        let p = (self.ln_alive_part(x, t) - self.ln_l(x, t_x, t)).exp();
        if p.is_finite() {
            p.clamp(0.0, 1.0)
        } else {
            1.0
        }
    }

    /// Probability of no purchase in the next `horizon`, given (x, t_x, T): dead now, or
    /// alive and not buying before dying or the horizon's end. Given alive, λ ~
    /// Gamma(r+x, α+T) and μ ~ Gamma(s, β+T) independently, and the first purchase comes
    /// at time u with density λ e^{−(λ+μ)u}, so
    /// `P(a purchase | alive) = ∫₀ʰ E[λe^{−λu}] E[e^{−μu}] du`
    /// `= ∫₀ʰ (r+x)/(α+T) · ((α+T)/(α+T+u))^(r+x+1) · ((β+T)/(β+T+u))^s du`.
    /// Substituting y = 1 − ((α+T)/(α+T+u))^(r+x) turns it into `∫₀^Y ((β+T)/(β+T+u(y)))^s dy`
    /// with a bounded, monotone integrand, taken by adaptive Gauss–Legendre quadrature to
    /// 1e-10.
    /// With s → 0 (nobody dies) it is BG/NBD's `1 − ((α+T)/(α+T+h))^(r+x)`.
    pub fn p_no_purchase(&self, horizon: f64, x: f64, t_x: f64, t: f64) -> f64 {
        if horizon.is_nan() || horizon <= 0.0 {
            return 1.0;
        }
        let alive = self.p_alive(x, t_x, t);
        let (k, a, b) = (self.r + x, self.alpha + t, self.beta + t);
        let top = -(k * (-horizon / (a + horizon)).ln_1p()).exp_m1();
        // u(y) = a · ((1 − y)^(−1/k) − 1); the integrand ((b/(b+u))^s.
        let integrand = |y: f64| {
            let u = a * (-(-y).ln_1p() / k).exp_m1();
            (-self.s * (u / b).ln_1p()).exp()
        };
        let buys = adaptive_gauss_legendre(&integrand, 0.0, top, 1e-10);
        let p = 1.0 - alive * buys;
        if p.is_finite() {
            p.clamp(0.0, 1.0)
        } else {
            1.0 - alive
        }
    }

    /// Expected repeat purchases in the next `horizon`, given (x, t_x, T).
    pub fn expected_conditional(&self, horizon: f64, x: f64, t_x: f64, t: f64) -> f64 {
        if horizon <= 0.0 {
            return 0.0;
        }
        let ParetoNbd { r, alpha, s, beta } = *self;
        let decay = if (s - 1.0).abs() < 1e-9 {
            ((beta + t + horizon) / (beta + t)).ln()
        } else {
            (1.0 - ((beta + t) / (beta + t + horizon)).powf(s - 1.0)) / (s - 1.0)
        };
        let v = self.p_alive(x, t_x, t) * (r + x) * (beta + t) / (alpha + t) * decay;
        if v.is_finite() {
            v.max(0.0)
        } else {
            0.0
        }
    }
}
