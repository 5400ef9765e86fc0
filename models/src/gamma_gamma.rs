//! Gamma-Gamma spend model (Fader, Hardie & Lee 2005): order values ~ Gamma(p, ν) with
//! ν ~ Gamma(q, γ), independent of the purchase process.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use crate::bgnbd::Fitted;
use crate::error::{Error, Result};
use crate::optimize::fit_positive_bfgs;
use crate::special::{digamma, ln_gamma};

/// Gamma-Gamma parameters (`gamma` is the γ of the papers, lifetimes' `v`).
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct GammaGamma {
    pub p: f64,
    pub q: f64,
    pub gamma: f64,
}

/// Customers with the same number of repeat purchases, for a fast likelihood: how many,
/// the sum of their ln m, and their distinct mean values with counts.
#[derive(Debug, Clone, Default)]
struct Group {
    n: f64,
    sum_ln_m: f64,
    m: Vec<(f64, f64)>,
}

impl GammaGamma {
    fn groups(rows: &[(f64, f64)]) -> BTreeMap<u64, Group> {
        let mut g: BTreeMap<u64, Group> = BTreeMap::new();
        for &(x, m) in rows
            .iter()
            .filter(|(x, m)| *x > 0.0 && *m > 0.0 && m.is_finite())
        {
            let e = g.entry(x.to_bits()).or_default();
            e.n += 1.0;
            e.sum_ln_m += m.ln();
            e.m.push((m, 1.0));
        }
        for group in g.values_mut() {
            group.m.sort_by(|a, b| a.0.total_cmp(&b.0));
            group.m.dedup_by(|next, kept| {
                let same = next.0 == kept.0;
                if same {
                    kept.1 += next.1;
                }
                same
            });
        }
        g
    }

    /// Log-likelihood of the groups and its gradient in (p, q, γ).
    fn ll_gradient(&self, groups: &BTreeMap<u64, Group>) -> (f64, [f64; 3]) {
        let GammaGamma { p, q, gamma } = *self;
        if !(p > 0.0 && q > 0.0 && gamma > 0.0) {
            return (f64::NEG_INFINITY, [f64::NAN; 3]);
        }
        let (lg_q, dg_q, ln_g) = (ln_gamma(q), digamma(q), gamma.ln());
        let (mut ll, mut grad) = (0.0, [0.0; 3]);
        for (bits, g) in groups {
            let x = f64::from_bits(*bits);
            let (px, ln_x) = (p * x, x.ln());
            let (dg_pxq, dg_px) = (digamma(px + q), digamma(px));
            // Σ w ln(xm + γ) and Σ w / (xm + γ) over the group's distinct m.
            let (mut spend, mut inv) = (0.0, 0.0);
            for &(m, w) in &g.m {
                let v = x * m + gamma;
                spend += w * v.ln();
                inv += w / v;
            }
            ll += g.n * (ln_gamma(px + q) - ln_gamma(px) - lg_q + q * ln_g + px * ln_x)
                + (px - 1.0) * g.sum_ln_m
                - (px + q) * spend;
            grad[0] += x * (g.n * (dg_pxq - dg_px + ln_x) + g.sum_ln_m - spend);
            grad[1] += g.n * (dg_pxq - dg_q + ln_g) - spend;
            grad[2] += g.n * q / gamma - (px + q) * inv;
        }
        (ll, grad)
    }

    /// Log-likelihood of (x, m) rows; rows with x = 0 or m ≤ 0 carry no information.
    pub fn log_likelihood(&self, rows: &[(f64, f64)]) -> f64 {
        self.ll_gradient(&Self::groups(rows)).0
    }

    /// Maximum-likelihood fit on (repeat purchases, mean repeat value) rows: BFGS on log
    /// parameters with the analytic gradient, from all ones.
    pub fn fit(rows: &[(f64, f64)]) -> Result<Fitted<Self>> {
        let groups = Self::groups(rows);
        if groups.values().map(|g| g.n).sum::<f64>() < 2.0 {
            return Err(Error::NotEnoughData(
                "Gamma-Gamma needs at least 2 repeat customers".into(),
            ));
        }
        fit_positive_bfgs(
            &[1.0; 3],
            |p| GammaGamma {
                p: p[0],
                q: p[1],
                gamma: p[2],
            },
            |m| {
                let (ll, g) = m.ll_gradient(&groups);
                (ll, Some(g.to_vec()))
            },
            "Gamma-Gamma",
        )
    }

    /// Expected value of an order given x repeat purchases with mean value m; the
    /// population mean pγ/(q−1) when x = 0.
    pub fn expected_aov(&self, x: f64, m: f64) -> f64 {
        let GammaGamma { p, q, gamma } = *self;
        let (x, m) = if x > 0.0 && m > 0.0 && m.is_finite() {
            (x, m)
        } else {
            (0.0, 0.0)
        };
        let v = p * (gamma + x * m) / (p * x + q - 1.0);
        if v.is_finite() && v > 0.0 {
            v
        } else {
            m.max(0.0)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::optimize::assert_gradient;

    #[test]
    fn the_gradient_is_the_derivative_of_the_likelihood() {
        let rows: Vec<(f64, f64)> = (1..400)
            .map(|i| ((i % 7 + 1) as f64, 5.0 + (i % 13) as f64 * 3.25))
            .chain([(0.0, 10.0), (2.0, -1.0), (3.0, f64::NAN)])
            .collect();
        let groups = GammaGamma::groups(&rows);
        for m in [
            GammaGamma {
                p: 6.25,
                q: 3.74,
                gamma: 15.44,
            },
            GammaGamma {
                p: 0.3,
                q: 40.0,
                gamma: 0.05,
            },
        ] {
            let (ll, g) = m.ll_gradient(&groups);
            assert!(ll.is_finite());
            assert_gradient(&[m.p, m.q, m.gamma], &g, |v| {
                GammaGamma {
                    p: v[0],
                    q: v[1],
                    gamma: v[2],
                }
                .log_likelihood(&rows)
            });
        }
    }
}
