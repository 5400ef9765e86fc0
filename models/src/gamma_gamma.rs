//! Gamma-Gamma spend model (Fader, Hardie & Lee 2005): order values ~ Gamma(p, ν) with
//! ν ~ Gamma(q, γ), independent of the purchase process.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use crate::bgnbd::Fitted;
use crate::error::{Error, Result};
use crate::optimize::fit_positive;
use crate::special::ln_gamma;

/// Gamma-Gamma parameters (`gamma` is the γ of the papers, lifetimes' `v`).
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct GammaGamma {
    pub p: f64,
    pub q: f64,
    pub gamma: f64,
}

/// Customers with the same number of repeat purchases, for a fast likelihood.
#[derive(Debug, Clone, Default)]
struct Group {
    n: f64,
    sum_ln_m: f64,
    m: Vec<f64>,
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
            e.m.push(m);
        }
        g
    }

    fn ll_groups(&self, groups: &BTreeMap<u64, Group>) -> f64 {
        let GammaGamma { p, q, gamma } = *self;
        if !(p > 0.0 && q > 0.0 && gamma > 0.0) {
            return f64::NEG_INFINITY;
        }
        let (lg_q, ln_g) = (ln_gamma(q), gamma.ln());
        groups
            .iter()
            .map(|(bits, g)| {
                let x = f64::from_bits(*bits);
                let px = p * x;
                let per = ln_gamma(px + q) - ln_gamma(px) - lg_q + q * ln_g + px * x.ln();
                let spend: f64 = g.m.iter().map(|m| (x * m + gamma).ln()).sum();
                g.n * per + (px - 1.0) * g.sum_ln_m - (px + q) * spend
            })
            .sum()
    }

    /// Log-likelihood of (x, m) rows; rows with x = 0 or m ≤ 0 carry no information.
    pub fn log_likelihood(&self, rows: &[(f64, f64)]) -> f64 {
        self.ll_groups(&Self::groups(rows))
    }

    /// Maximum-likelihood fit on (repeat purchases, mean repeat value) rows.
    pub fn fit(rows: &[(f64, f64)]) -> Result<Fitted<Self>> {
        let groups = Self::groups(rows);
        if groups.values().map(|g| g.n).sum::<f64>() < 2.0 {
            return Err(Error::NotEnoughData(
                "Gamma-Gamma needs at least 2 repeat customers".into(),
            ));
        }
        fit_positive(
            3,
            |p| GammaGamma {
                p: p[0],
                q: p[1],
                gamma: p[2],
            },
            |m| m.ll_groups(&groups),
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
