//! BG/NBD (Fader, Hardie & Lee 2005): purchases at rate λ ~ Gamma(r, α) while alive;
//! after each purchase the customer drops out with probability p ~ Beta(a, b).

use serde::{Deserialize, Serialize};

use crate::error::{Error, Result};
use crate::optimize::{fit_positive_bfgs, fit_positive_bfgs_sampled};
use crate::special::{digamma, ln_gamma, ln_hyp2f1, log_add_exp, log_add_exp_weights};
use crate::summary::{stride_sample, WeightedRow, SAMPLE_FIT_ROWS};

/// BG/NBD parameters.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct BgNbd {
    pub r: f64,
    pub alpha: f64,
    pub a: f64,
    pub b: f64,
}

pub use crate::optimize::Fitted;

impl BgNbd {
    /// Total log-likelihood of weighted summary rows.
    pub fn log_likelihood(&self, rows: &[WeightedRow]) -> f64 {
        let BgNbd { r, alpha, a, b } = *self;
        if !(r > 0.0 && alpha > 0.0 && a > 0.0 && b > 0.0) {
            return f64::NEG_INFINITY;
        }
        let ln_alpha = alpha.ln();
        let (ln_a, lg_r, lg_b, lg_ab) = (a.ln(), ln_gamma(r), ln_gamma(b), ln_gamma(a + b));
        let mut total = 0.0;
        // Rows come sorted by x: terms that depend on x only are computed once per x.
        let mut cur_x = f64::NAN;
        let mut x_terms = 0.0;
        let mut ln_bx1 = 0.0;
        for row in rows {
            let x = row.x;
            if x != cur_x {
                cur_x = x;
                x_terms = ln_gamma(r + x) - lg_r + r * ln_alpha + lg_ab + ln_gamma(b + x)
                    - lg_b
                    - ln_gamma(a + b + x);
                ln_bx1 = if x > 0.0 { (b + x - 1.0).ln() } else { 0.0 };
            }
            let a3 = -(r + x) * (alpha + row.t).ln();
            let ll = if x > 0.0 {
                let a4 = ln_a - ln_bx1 - (r + x) * (alpha + row.t_x).ln();
                log_add_exp(a3, a4)
            } else {
                a3
            };
            total += row.weight * (x_terms + ll);
        }
        total
    }

    /// Total log-likelihood of weighted summary rows and its gradient in (r, α, a, b).
    pub fn ll_gradient(&self, rows: &[WeightedRow]) -> (f64, [f64; 4]) {
        let BgNbd { r, alpha, a, b } = *self;
        if !(r > 0.0 && alpha > 0.0 && a > 0.0 && b > 0.0) {
            return (f64::NEG_INFINITY, [f64::NAN; 4]);
        }
        let ln_alpha = alpha.ln();
        let (ln_a, lg_r, lg_b, lg_ab) = (a.ln(), ln_gamma(r), ln_gamma(b), ln_gamma(a + b));
        let (dg_r, dg_b, dg_ab) = (digamma(r), digamma(b), digamma(a + b));
        let (mut total, mut grad) = (0.0, [0.0; 4]);
        // Terms that depend on x only, computed once per x (rows come sorted by x):
        // value, ∂r, ∂a, ∂b, ln(b+x−1), 1/(b+x−1).
        let mut cur_x = f64::NAN;
        let mut xt = [0.0; 6];
        for row in rows {
            let x = row.x;
            if x != cur_x {
                cur_x = x;
                let dg_abx = digamma(a + b + x);
                xt = [
                    ln_gamma(r + x) - lg_r + r * ln_alpha + lg_ab + ln_gamma(b + x)
                        - lg_b
                        - ln_gamma(a + b + x),
                    digamma(r + x) - dg_r + ln_alpha,
                    dg_ab - dg_abx,
                    dg_ab + digamma(b + x) - dg_b - dg_abx,
                    if x > 0.0 { (b + x - 1.0).ln() } else { 0.0 },
                    if x > 0.0 { 1.0 / (b + x - 1.0) } else { 0.0 },
                ];
            }
            let (ln_t, ln_tx) = ((alpha + row.t).ln(), (alpha + row.t_x).ln());
            let a3 = -(r + x) * ln_t;
            // The weights of the two terms of ln(e^A3 + e^A4): w3 + w4 = 1.
            let (ll, w3, w4) = if x > 0.0 {
                log_add_exp_weights(a3, ln_a - xt[4] - (r + x) * ln_tx)
            } else {
                (a3, 1.0, 0.0)
            };
            let w = row.weight;
            total += w * (xt[0] + ll);
            grad[0] += w * (xt[1] - w3 * ln_t - w4 * ln_tx);
            grad[1] += w * (r / alpha - (r + x) * (w3 / (alpha + row.t) + w4 / (alpha + row.t_x)));
            grad[2] += w * (xt[2] + w4 / a);
            grad[3] += w * (xt[3] - w4 * xt[5]);
        }
        (total, grad)
    }

    /// Maximum-likelihood fit: BFGS on log parameters with the analytic gradient,
    /// starting from all ones (Nelder–Mead if BFGS stalls); on many rows, from the
    /// optimum of a sample of them.
    pub fn fit(rows: &[WeightedRow]) -> Result<Fitted<Self>> {
        if rows.iter().map(|r| r.weight).sum::<f64>() < 2.0 {
            return Err(Error::NotEnoughData(
                "BG/NBD needs at least 2 customers".into(),
            ));
        }
        let sample = stride_sample(rows, SAMPLE_FIT_ROWS);
        fit_positive_bfgs_sampled(
            &[1.0; 4],
            Self::of,
            sample.map(|sample| move |m: &Self| Self::ll_of(&sample, m)),
            |m| Self::ll_of(rows, m),
            "BG/NBD",
        )
    }

    /// [`BgNbd::fit`] from given starting parameters (r, α, a, b), on all rows.
    pub fn fit_from(rows: &[WeightedRow], start: [f64; 4]) -> Result<Fitted<Self>> {
        fit_positive_bfgs(&start, Self::of, |m| Self::ll_of(rows, m), "BG/NBD")
    }

    fn of(p: &[f64]) -> Self {
        BgNbd {
            r: p[0],
            alpha: p[1],
            a: p[2],
            b: p[3],
        }
    }

    fn ll_of(rows: &[WeightedRow], m: &Self) -> (f64, Option<Vec<f64>>) {
        let (ll, g) = m.ll_gradient(rows);
        (ll, Some(g.to_vec()))
    }

    /// ln of the odds term a/(b+x−1)·((α+T)/(α+t_x))^(r+x); −∞ when x = 0.
    fn ln_death_odds(&self, x: f64, t_x: f64, t: f64) -> f64 {
        if x <= 0.0 {
            return f64::NEG_INFINITY;
        }
        self.a.ln() - (self.b + x - 1.0).ln()
            + (self.r + x) * ((self.alpha + t).ln() - (self.alpha + t_x).ln())
    }

    /// Probability the customer is still alive at age `t`.
    pub fn p_alive(&self, x: f64, t_x: f64, t: f64) -> f64 {
        let o = self.ln_death_odds(x, t_x, t);
        if o == f64::NEG_INFINITY {
            1.0
        } else {
            1.0 / (1.0 + o.exp())
        }
    }

    /// Probability of no purchase in the next `horizon`, given (x, t_x, T): dead now, or
    /// alive and quiet. Alive, the customer drops out only at a purchase, so quiet means
    /// no purchase at rate λ, whose posterior given alive is Gamma(r+x, α+T):
    /// `1 − P(alive) + P(alive) · ((α+T)/(α+T+h))^(r+x)`.
    pub fn p_no_purchase(&self, horizon: f64, x: f64, t_x: f64, t: f64) -> f64 {
        if horizon.is_nan() || horizon <= 0.0 {
            return 1.0;
        }
        let alive = self.p_alive(x, t_x, t);
        let a = self.alpha + t;
        let quiet = ((self.r + x) * (-horizon / (a + horizon)).ln_1p()).exp();
        let p = 1.0 - alive + alive * quiet;
        if p.is_finite() {
            p.clamp(0.0, 1.0)
        } else {
            1.0 - alive
        }
    }

    /// Expected repeat purchases in the next `horizon`, given (x, t_x, T).
    pub fn expected_conditional(&self, horizon: f64, x: f64, t_x: f64, t: f64) -> f64 {
        crate::clv::non_negative(self.expected_if_alive(horizon, x, t) * self.p_alive(x, t_x, t))
    }

    /// Expected purchases in the next `horizon` of a customer alive at age T after x
    /// repeat purchases: the conditional expectation is P(alive) times it, so customers
    /// with the same (x, T) share it whatever their t_x.
    pub fn expected_if_alive(&self, horizon: f64, x: f64, t: f64) -> f64 {
        if horizon <= 0.0 {
            return 0.0;
        }
        let BgNbd { r, alpha, a, b } = *self;
        let (ha, hb, hc) = (r + x, b + x, a + b + x - 1.0);
        let z = horizon / (alpha + t + horizon);
        // ((α+T)/(α+T+t))^(r+x) = (1−z)^(r+x)
        let ln_tail = ln_hyp2f1(ha, hb, hc, z) + (r + x) * (-z).ln_1p();
        // (1 − e^ln_tail) / (a − 1), both factors negative when a < 1.
        (a + b + x - 1.0) * (-ln_tail.exp_m1()) / (a - 1.0)
    }

    /// Expected purchases of a new customer in a period of length `t`.
    pub fn expected_unconditional(&self, t: f64) -> f64 {
        let BgNbd { r, alpha, a, b } = *self;
        let z = t / (alpha + t);
        let ln_tail = r * (alpha / (alpha + t)).ln() + ln_hyp2f1(r, b, a + b - 1.0, z);
        (a + b - 1.0) / (a - 1.0) * (-ln_tail.exp_m1())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::optimize::assert_gradient;

    const CDNOW: BgNbd = BgNbd {
        r: 0.242_593,
        alpha: 4.413_59,
        a: 0.792_925,
        b: 2.425_92,
    };

    #[test]
    fn published_predictions() {
        let e = CDNOW.expected_conditional(39.0, 2.0, 30.43, 38.86);
        assert!((e - 1.226).abs() < 5e-4, "{e}");
        for (t, want) in [(1.0, 0.0532), (3.0, 0.1506), (32.0, 1.0437), (78.0, 1.8576)] {
            let got = CDNOW.expected_unconditional(t);
            assert!((got - want).abs() < 5e-4, "E[X({t})] = {got}, want {want}");
        }
        assert_eq!(CDNOW.p_alive(0.0, 0.0, 10.0), 1.0);
        assert!(CDNOW.p_alive(5.0, 5.0, 60.0) < CDNOW.p_alive(5.0, 55.0, 60.0));
    }

    #[test]
    fn the_gradient_is_the_derivative_of_the_likelihood() {
        let rows: Vec<WeightedRow> = [(0.0, 0.0, 38.9, 1400.0), (1.0, 20.0, 30.0, 3.0)]
            .into_iter()
            .chain((1..12).map(|x| (x as f64, 2.5 * x as f64, 37.0, 12.0 / x as f64)))
            .map(|(x, t_x, t, weight)| WeightedRow { x, t_x, t, weight })
            .collect();
        for m in [
            CDNOW,
            BgNbd {
                r: 3.0,
                alpha: 0.2,
                a: 5.0,
                b: 0.4,
            },
        ] {
            let (ll, g) = m.ll_gradient(&rows);
            assert!((ll - m.log_likelihood(&rows)).abs() < 1e-9 * ll.abs());
            assert_gradient(&[m.r, m.alpha, m.a, m.b], &g, |q| {
                BgNbd {
                    r: q[0],
                    alpha: q[1],
                    a: q[2],
                    b: q[3],
                }
                .log_likelihood(&rows)
            });
        }
    }
}
