//! Derivative-free minimisation (Nelder–Mead with restarts) for the likelihood fits.

use serde::{Deserialize, Serialize};

use crate::error::{Error, Result};

/// A fitted model and how well it fits.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct Fitted<P> {
    pub params: P,
    pub log_likelihood: f64,
    /// Number of likelihood evaluations the optimiser used.
    pub evaluations: usize,
}

/// Maximum-likelihood fit over `n` positive parameters: Nelder–Mead on their logarithms,
/// starting from all ones. `of` builds the model from the parameters, `ll` is its
/// log-likelihood on the data.
pub fn fit_positive<P>(
    n: usize,
    of: impl Fn(&[f64]) -> P,
    ll: impl Fn(&P) -> f64,
    model: &str,
) -> Result<Fitted<P>> {
    let exp = |p: &[f64]| of(&p.iter().map(|v| v.exp()).collect::<Vec<_>>());
    let m = nelder_mead(|p| -ll(&exp(p)), &vec![0.0; n], Options::default());
    if !m.f.is_finite() {
        return Err(Error::NoConvergence(format!(
            "{model} likelihood is not finite"
        )));
    }
    Ok(Fitted {
        params: exp(&m.x),
        log_likelihood: -m.f,
        evaluations: m.evals,
    })
}

/// Options of [`nelder_mead`].
#[derive(Debug, Clone, Copy)]
pub struct Options {
    pub max_evals: usize,
    /// Stop when the simplex's function values differ by less than this.
    pub f_tol: f64,
    /// Stop when the simplex's points differ by less than this.
    pub x_tol: f64,
    /// Restart from the best point this many times (guards against early collapse).
    pub restarts: usize,
}

impl Default for Options {
    fn default() -> Self {
        Self {
            max_evals: 20_000,
            f_tol: 1e-12,
            x_tol: 1e-10,
            restarts: 2,
        }
    }
}

/// Result of a minimisation.
#[derive(Debug, Clone)]
pub struct Minimum {
    pub x: Vec<f64>,
    pub f: f64,
    pub evals: usize,
}

/// Minimises `f` from `x0`. Non-finite values of `f` count as +∞.
pub fn nelder_mead(mut f: impl FnMut(&[f64]) -> f64, x0: &[f64], opts: Options) -> Minimum {
    let mut evals = 0;
    let mut eval = |x: &[f64]| {
        evals += 1;
        let v = f(x);
        if v.is_finite() {
            v
        } else {
            f64::INFINITY
        }
    };
    let mut best = x0.to_vec();
    let mut best_f = eval(&best);
    for _ in 0..=opts.restarts {
        let (x, fx) = run(&mut eval, &best, opts);
        let improved = fx < best_f - opts.f_tol;
        if fx <= best_f {
            best = x;
            best_f = fx;
        }
        if !improved {
            break;
        }
    }
    Minimum {
        x: best,
        f: best_f,
        evals,
    }
}

fn run(eval: &mut impl FnMut(&[f64]) -> f64, x0: &[f64], opts: Options) -> (Vec<f64>, f64) {
    let n = x0.len();
    let (alpha, gamma, rho, sigma) = (1.0, 2.0, 0.5, 0.5);
    let mut pts: Vec<Vec<f64>> = vec![x0.to_vec()];
    for i in 0..n {
        let mut p = x0.to_vec();
        p[i] += if p[i].abs() > 1e-3 {
            0.1 * p[i].abs().max(0.25)
        } else {
            0.25
        };
        pts.push(p);
    }
    let mut vals: Vec<f64> = pts.iter().map(|p| eval(p)).collect();
    let mut used = n + 1;
    while used < opts.max_evals {
        let mut order: Vec<usize> = (0..=n).collect();
        order.sort_by(|&a, &b| vals[a].total_cmp(&vals[b]));
        pts = order.iter().map(|&i| pts[i].clone()).collect();
        vals = order.iter().map(|&i| vals[i]).collect();
        let spread_f = (vals[n] - vals[0]).abs();
        let spread_x = pts[1..]
            .iter()
            .flat_map(|p| p.iter().zip(&pts[0]).map(|(a, b)| (a - b).abs()))
            .fold(0.0, f64::max);
        if spread_f <= opts.f_tol * (1.0 + vals[0].abs()) && spread_x <= opts.x_tol {
            break;
        }
        let centroid: Vec<f64> = (0..n)
            .map(|j| pts[..n].iter().map(|p| p[j]).sum::<f64>() / n as f64)
            .collect();
        let along = |t: f64| -> Vec<f64> {
            (0..n)
                .map(|j| centroid[j] + t * (pts[n][j] - centroid[j]))
                .collect()
        };
        let xr = along(-alpha);
        let fr = eval(&xr);
        used += 1;
        if fr < vals[0] {
            let xe = along(-alpha * gamma);
            let fe = eval(&xe);
            used += 1;
            if fe < fr {
                pts[n] = xe;
                vals[n] = fe;
            } else {
                pts[n] = xr;
                vals[n] = fr;
            }
        } else if fr < vals[n - 1] {
            pts[n] = xr;
            vals[n] = fr;
        } else {
            let (xc, fc) = if fr < vals[n] {
                let xc = along(-rho);
                let fc = eval(&xc);
                (xc, fc)
            } else {
                let xc = along(rho);
                let fc = eval(&xc);
                (xc, fc)
            };
            used += 1;
            if fc < vals[n].min(fr) {
                pts[n] = xc;
                vals[n] = fc;
            } else {
                for i in 1..=n {
                    pts[i] = (0..n)
                        .map(|j| pts[0][j] + sigma * (pts[i][j] - pts[0][j]))
                        .collect();
                    vals[i] = eval(&pts[i]);
                    used += 1;
                }
            }
        }
    }
    let i = (0..=n)
        .min_by(|&a, &b| vals[a].total_cmp(&vals[b]))
        .unwrap_or(0);
    (pts[i].clone(), vals[i])
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn finds_the_rosenbrock_minimum() {
        let m = nelder_mead(
            |x| (1.0 - x[0]).powi(2) + 100.0 * (x[1] - x[0] * x[0]).powi(2),
            &[-1.2, 1.0],
            Options::default(),
        );
        assert!(
            (m.x[0] - 1.0).abs() < 1e-5 && (m.x[1] - 1.0).abs() < 1e-5,
            "{m:?}"
        );
    }
}
