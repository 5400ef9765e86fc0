//! Pareto/NBD (Schmittlein, Morrison & Colombo 1987): purchases at rate λ ~ Gamma(r, α)
//! during an exponential lifetime with rate μ ~ Gamma(s, β).

use std::collections::HashMap;

use rayon::prelude::*;
use serde::{Deserialize, Serialize};

use crate::bgnbd::Fitted;
use crate::error::{Error, Result};
use crate::optimize::fit_positive_bfgs_sampled;
use crate::special::{
    adaptive_gauss_legendre, digamma, ln_gamma, ln_hyp2f1, ln_hyp2f1_gradient, log_add_exp,
    log_sub_exp,
};
use crate::summary::{stride_sample, WeightedRow, SAMPLE_FIT_ROWS};

/// One ₂F₁ term of A₀ (see [`ParetoNbd::hyp`]).
#[derive(Debug, Clone, Copy, Default)]
struct Hyp {
    f: f64,
    df: [f64; 4],
    ln_q: f64,
}

/// Summary rows prepared for the likelihood: each row's ₂F₁ at T depends only on (x, T),
/// which many rows share (customers who joined on the same day and bought as often), so
/// it is computed once per distinct pair; the one at t_x is shared along the rows'
/// (x, t_x) order.
struct ParetoRows<'a> {
    rows: &'a [WeightedRow],
    /// Distinct (x, T) of the rows.
    pairs: Vec<(f64, f64)>,
    /// Each row's index into `pairs`.
    pair: Vec<u32>,
}

impl<'a> ParetoRows<'a> {
    fn new(rows: &'a [WeightedRow]) -> Self {
        let mut index: HashMap<(u64, u64), u32> = HashMap::new();
        let mut pairs = Vec::new();
        let pair = rows
            .iter()
            .map(|r| {
                *index
                    .entry((r.x.to_bits(), r.t.to_bits()))
                    .or_insert_with(|| {
                        pairs.push((r.x, r.t));
                        (pairs.len() - 1) as u32
                    })
            })
            .collect();
        Self { rows, pairs, pair }
    }
}

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

    /// Total log-likelihood of weighted summary rows and its gradient in (r, α, s, β),
    /// the derivative of [`ParetoNbd::ln_l`] term by term (₂F₁ differentiated through its
    /// series). See [`ParetoRows`] for how the work is shared out.
    pub fn ll_gradient(&self, rows: &[WeightedRow]) -> (f64, [f64; 4]) {
        self.ll_gradient_of(&ParetoRows::new(rows))
    }

    /// [`ParetoNbd::ll_gradient`] of prepared rows: the ₂F₁ at T once per distinct
    /// (x, T), then the rows, each in parallel chunks summed in order, so the result
    /// does not depend on the number of threads.
    fn ll_gradient_of(&self, prepared: &ParetoRows<'_>) -> (f64, [f64; 4]) {
        let ParetoNbd { r, alpha, s, beta } = *self;
        if !(r > 0.0 && alpha > 0.0 && s > 0.0 && beta > 0.0) {
            return (f64::NEG_INFINITY, [f64::NAN; 4]);
        }
        let at_t: Vec<Hyp> = prepared
            .pairs
            .par_chunks(256)
            .flat_map_iter(|chunk| chunk.iter().map(|&(x, t)| self.hyp(x, t)))
            .collect();
        let parts: Vec<(f64, [f64; 4])> = prepared
            .rows
            .par_chunks(512)
            .zip(prepared.pair.par_chunks(512))
            .map(|(chunk, pairs)| self.ll_gradient_serial(chunk, pairs, &at_t))
            .collect();
        parts.iter().fold((0.0, [0.0; 4]), |(ll, g), (l, h)| {
            (ll + l, std::array::from_fn(|j| g[j] + h[j]))
        })
    }

    /// ln ₂F₁(r+s+x, second; r+s+x+1; z) of A₀ at q = max(α, β) + t, with its gradient
    /// in the parameters and ln q.
    fn hyp(&self, x: f64, t: f64) -> Hyp {
        let ParetoNbd { r, alpha, s, beta } = *self;
        let (lo, hi, i_lo, i_hi) = if alpha < beta {
            (alpha, beta, 1, 3)
        } else {
            (beta, alpha, 3, 1)
        };
        // The second argument is r + x when α < β, else s + 1.
        let (second, i_second) = if alpha < beta {
            (r + x, 0)
        } else {
            (s + 1.0, 2)
        };
        let k = r + s + x;
        let q = hi + t;
        let z = (hi - lo) / q;
        let (f, g) = ln_hyp2f1_gradient(k, second, k + 1.0, z);
        let mut df = [0.0; 4];
        // ∂k = ∂r + ∂s, and the third argument k + 1 moves with it.
        df[0] += g[0] + g[2];
        df[2] += g[0] + g[2];
        df[i_second] += g[1];
        df[i_hi] += g[3] * (lo + t) / (q * q);
        df[i_lo] -= g[3] / q;
        Hyp {
            f,
            df,
            ln_q: q.ln(),
        }
    }

    /// [`ParetoNbd::ll_gradient_of`] of one run of rows (`pairs`: each row's index into
    /// `at_t`). Rows sorted by (x, t_x) have the terms of x, and the ₂F₁ of (x, t_x),
    /// computed once per value.
    fn ll_gradient_serial(
        &self,
        rows: &[WeightedRow],
        pairs: &[u32],
        at_t: &[Hyp],
    ) -> (f64, [f64; 4]) {
        let ParetoNbd { r, alpha, s, beta } = *self;
        let add = |acc: &mut [f64; 4], w: f64, v: &[f64; 4]| {
            for (a, v) in acc.iter_mut().zip(v) {
                *a += w * v;
            }
        };
        let (ln_alpha, ln_beta, ln_s) = (alpha.ln(), beta.ln(), s.ln());
        let (lg_r, dg_r) = (ln_gamma(r), digamma(r));
        let (hi, i_hi) = if alpha < beta { (beta, 3) } else { (alpha, 1) };
        let dk = [1.0, 0.0, 1.0, 0.0];
        let (mut total, mut grad) = (0.0, [0.0; 4]);
        let (mut cur_x, mut cur_tx) = (f64::NAN, f64::NAN);
        // Per x: a1, ∂a1, k and ln k; per (x, t_x): the ₂F₁ at t_x.
        let (mut a1, mut da1, mut k, mut ln_k) = (0.0, [0.0; 4], 0.0, 0.0);
        let mut h1 = Hyp::default();
        for (row, &pair) in rows.iter().zip(pairs) {
            let (x, t_x, t) = (row.x, row.t_x, row.t);
            if x != cur_x {
                cur_x = x;
                cur_tx = f64::NAN;
                a1 = ln_gamma(r + x) - lg_r + r * ln_alpha + s * ln_beta;
                da1 = [
                    digamma(r + x) - dg_r + ln_alpha,
                    r / alpha,
                    ln_beta,
                    s / beta,
                ];
                k = r + s + x;
                ln_k = k.ln();
            }
            if t_x != cur_tx {
                cur_tx = t_x;
                h1 = self.hyp(x, t_x);
            }
            // `pair` indexes `at_t` by construction (ParetoRows::new).
            let h2 = &at_t[pair as usize];
            let (f1, df1, ln_q1) = (h1.f, &h1.df, h1.ln_q);
            let (f2, df2, ln_q2) = (h2.f, &h2.df, h2.ln_q);
            let (ln_at, ln_bt) = ((alpha + t).ln(), (beta + t).ln());
            // ln L = a1 + ln(e^B + e^C), C = ln s + ln A₀ − ln k.
            let b_term = -(r + x) * ln_at - s * ln_bt;
            let db = [-ln_at, -(r + x) / (alpha + t), -ln_bt, -s / (beta + t)];
            let (u, v) = (f1 + k * ln_q2, f2 + k * ln_q1);
            let sub = log_sub_exp(u, v);
            let c_term = ln_s + sub - k * (ln_q1 + ln_q2) - ln_k;
            let d = log_add_exp(b_term, c_term);
            let w = row.weight;
            total += w * (a1 + d);
            add(&mut grad, w, &da1);
            add(&mut grad, w * (b_term - d).exp(), &db);
            if sub.is_finite() {
                // ∂ ln(e^U − e^V) = (∂U − e^(V−U) ∂V) / (1 − e^(V−U)); q₁, q₂ move with hi.
                let e = (v - u).exp();
                let (dq1, dq2) = (1.0 / (hi + t_x), 1.0 / (hi + t));
                let dc: [f64; 4] = std::array::from_fn(|j| {
                    let hi_j = if j == i_hi { 1.0 } else { 0.0 };
                    let du = df1[j] + dk[j] * ln_q2 + k * hi_j * dq2;
                    let dv = df2[j] + dk[j] * ln_q1 + k * hi_j * dq1;
                    let ds = (du - e * dv) / (1.0 - e);
                    let s_j = if j == 2 { 1.0 / s } else { 0.0 };
                    s_j + ds - dk[j] * (ln_q1 + ln_q2) - k * hi_j * (dq1 + dq2) - dk[j] / k
                });
                add(&mut grad, w * (c_term - d).exp(), &dc);
            }
        }
        (total, grad)
    }

    /// Maximum-likelihood fit: BFGS on log parameters with the analytic gradient,
    /// starting from all ones (Nelder–Mead if BFGS stalls); on many rows, from the
    /// optimum of a sample of them.
    pub fn fit(rows: &[WeightedRow]) -> Result<Fitted<Self>> {
        if rows.iter().map(|r| r.weight).sum::<f64>() < 2.0 {
            return Err(Error::NotEnoughData(
                "Pareto/NBD needs at least 2 customers".into(),
            ));
        }
        let of = |p: &[f64]| ParetoNbd {
            r: p[0],
            alpha: p[1],
            s: p[2],
            beta: p[3],
        };
        let ll = |prepared: &ParetoRows<'_>, m: &ParetoNbd| {
            let (ll, g) = m.ll_gradient_of(prepared);
            (ll, Some(g.to_vec()))
        };
        let prepared = ParetoRows::new(rows);
        let sample = stride_sample(rows, SAMPLE_FIT_ROWS);
        let sample = sample.as_deref().map(ParetoRows::new);
        fit_positive_bfgs_sampled(
            &[1.0; 4],
            of,
            sample.as_ref().map(|sample| |m: &ParetoNbd| ll(sample, m)),
            |m| ll(&prepared, m),
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
        crate::clv::non_negative(self.p_alive(x, t_x, t) * self.expected_if_alive(horizon, x, t))
    }

    /// Expected purchases in the next `horizon` of a customer alive at age T after x
    /// repeat purchases: the conditional expectation is P(alive) times it, so customers
    /// with the same (x, T) share it whatever their t_x.
    pub fn expected_if_alive(&self, horizon: f64, x: f64, t: f64) -> f64 {
        if horizon <= 0.0 {
            return 0.0;
        }
        let ParetoNbd { r, alpha, s, beta } = *self;
        let decay = if (s - 1.0).abs() < 1e-9 {
            ((beta + t + horizon) / (beta + t)).ln()
        } else {
            (1.0 - ((beta + t) / (beta + t + horizon)).powf(s - 1.0)) / (s - 1.0)
        };
        (r + x) * (beta + t) / (alpha + t) * decay
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::optimize::assert_gradient;

    #[test]
    fn the_gradient_is_the_derivative_of_the_likelihood() {
        let mut rows: Vec<WeightedRow> = [(0.0, 0.0, 38.9, 140.0), (0.0, 0.0, 30.0, 3.0)]
            .into_iter()
            .chain((1..12).map(|x| (x as f64, 2.5 * x as f64, 37.0, 12.0 / x as f64)))
            .chain((1..5).map(|x| (x as f64, 2.5 * x as f64, 31.0, 2.0)))
            .map(|(x, t_x, t, weight)| WeightedRow { x, t_x, t, weight })
            .collect();
        rows.sort_by(|a, b| a.x.total_cmp(&b.x).then(a.t_x.total_cmp(&b.t_x)));
        // α < β and α > β (the two forms of A₀), near and far apart.
        for m in [
            ParetoNbd {
                r: 0.55,
                alpha: 10.58,
                s: 0.61,
                beta: 11.67,
            },
            ParetoNbd {
                r: 2.0,
                alpha: 30.0,
                s: 3.0,
                beta: 0.5,
            },
            ParetoNbd {
                r: 0.2,
                alpha: 0.1,
                s: 0.05,
                beta: 200.0,
            },
        ] {
            let (ll, g) = m.ll_gradient(&rows);
            assert!(
                (ll - m.log_likelihood(&rows)).abs() < 1e-9 * ll.abs(),
                "{ll}"
            );
            assert_gradient(&[m.r, m.alpha, m.s, m.beta], &g, |q| {
                ParetoNbd {
                    r: q[0],
                    alpha: q[1],
                    s: q[2],
                    beta: q[3],
                }
                .log_likelihood(&rows)
            });
        }
    }
}
