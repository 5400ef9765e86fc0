//! Minimisation for the likelihood fits: BFGS on log parameters with analytic or
//! central-difference gradients, and Nelder–Mead with restarts as its safety net.

use std::cell::Cell;

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
    finish(m, exp, model)
}

/// Bound of the log parameters of [`fit_positive_bfgs`]: parameters stay within
/// e^±18 (about 1.5e-8 to 6.6e7).
pub const LOG_BOX: f64 = 18.0;

/// Maximum-likelihood fit over positive parameters by BFGS on their logarithms, from
/// `start` (natural parameters). `ll` answers the log-likelihood of a model and its
/// gradient in the natural parameters (`None`: take central differences of the
/// log-likelihood instead, 2n extra evaluations per point). Where BFGS stops short of a
/// stationary point inside e^±15, Nelder–Mead carries on from the best point it found;
/// parameters stay within e^±[`LOG_BOX`]; a fit is never NaN.
pub fn fit_positive_bfgs<P>(
    start: &[f64],
    of: impl Fn(&[f64]) -> P,
    ll: impl Fn(&P) -> (f64, Option<Vec<f64>>),
    model: &str,
) -> Result<Fitted<P>> {
    fit_positive_bfgs_from(start, None, of, ll, model).map(|(fit, _)| fit)
}

/// [`fit_positive_bfgs`] on a sample of the data first: `sample_ll` is the
/// log-likelihood of a sample whose weights are scaled to the whole's, so its optimum
/// is near the whole's and its curvature about the same. BFGS on the whole data then
/// starts from the sample's optimum with the sample's inverse Hessian and needs a few
/// evaluations instead of tens (the sample's are cheap). The optimum is the whole's,
/// with the same guarantees; `evaluations` counts the whole data's. Without a sample
/// (`None`: the data is small) it is [`fit_positive_bfgs`].
pub fn fit_positive_bfgs_sampled<P>(
    start: &[f64],
    of: impl Fn(&[f64]) -> P,
    sample_ll: Option<impl Fn(&P) -> (f64, Option<Vec<f64>>)>,
    ll: impl Fn(&P) -> (f64, Option<Vec<f64>>),
    model: &str,
) -> Result<Fitted<P>> {
    let warm =
        sample_ll.map(|sample_ll| fit_positive_bfgs_from(start, None, &of, sample_ll, model));
    match warm {
        Some(Ok((_, Some(warm)))) => {
            fit_positive_bfgs_from(&warm.params, Some(warm.inverse_hessian), of, ll, model)
                .map(|(fit, _)| fit)
        }
        // No sample, or it gave no interior optimum: the whole data from the usual start.
        _ => fit_positive_bfgs(start, of, ll, model),
    }
}

/// Where a converged BFGS fit ended: natural parameters and the inverse Hessian of −ll
/// in log parameters.
struct Warm {
    params: Vec<f64>,
    inverse_hessian: Vec<Vec<f64>>,
}

/// [`fit_positive_bfgs`] from an inverse Hessian of −ll in log parameters (`None`: the
/// identity, scaled after the first step), answering where BFGS ended when it converged
/// inside the parameters' range.
fn fit_positive_bfgs_from<P>(
    start: &[f64],
    h0: Option<Vec<Vec<f64>>>,
    of: impl Fn(&[f64]) -> P,
    ll: impl Fn(&P) -> (f64, Option<Vec<f64>>),
    model: &str,
) -> Result<(Fitted<P>, Option<Warm>)> {
    let exp = |p: &[f64]| of(&p.iter().map(|v| v.exp()).collect::<Vec<_>>());
    let calls = Cell::new(0);
    // Outside e^±LOG_BOX the likelihood is not evaluated (it is −∞ there): differences
    // of ln Γ at such sizes are rounding noise that an optimiser would chase.
    let ll = |x: &[f64]| {
        if x.iter().any(|v| v.abs() > LOG_BOX) {
            return (f64::NEG_INFINITY, None);
        }
        calls.set(calls.get() + 1);
        ll(&exp(x))
    };
    let value = |x: &[f64]| -ll(x).0;
    // The objective −ll and its gradient in log parameters: ∂/∂ln p = p ∂/∂p.
    let fg = |x: &[f64]| -> (f64, Vec<f64>) {
        let (l, grad) = ll(x);
        if !l.is_finite() {
            return (f64::INFINITY, vec![f64::NAN; x.len()]);
        }
        let g = match grad {
            Some(g) => g.iter().zip(x).map(|(g, x)| -g * x.exp()).collect(),
            None => central_differences(&value, x),
        };
        (-l, g)
    };
    let x0: Vec<f64> = start
        .iter()
        .map(|v| v.max(1e-300).ln().clamp(-LOG_BOX, LOG_BOX))
        .collect();
    // A parameter beyond e^±15 means the likelihood keeps rising towards an edge of the
    // parameter space (nobody came back, every spend identical, …): there is no interior
    // maximum to polish, and the point reached is as good as any further out.
    let reached_edge =
        |q: &QuasiNewtonMinimum| q.f.is_finite() && q.x.iter().any(|v| v.abs() >= 15.0);
    let mut q = bfgs_from(&fg, &x0, h0, QuasiNewton::default());
    // From a far start BFGS can also drift onto a plateau towards an edge with a worse
    // likelihood than the interior optimum (BG/NBD from r = 350, α = 373, a = 6.8, b = 1
    // slid to a → 0, b → ∞, where nobody drops out: −9763.7 against −9582.4 on the
    // CDNOW sample). So an edge reached from elsewhere is checked against a fit from
    // the neutral start (all parameters 1), and the better of the two is kept.
    if reached_edge(&q) && x0.iter().any(|v| *v != 0.0) {
        let neutral = bfgs(&fg, &vec![0.0; x0.len()], QuasiNewton::default());
        if neutral.f < q.f {
            q = neutral;
        }
    }
    let at_edge = reached_edge(&q);
    let warm = (q.converged && !at_edge).then(|| Warm {
        params: q.x.iter().map(|v| v.exp()).collect(),
        inverse_hessian: q.inverse_hessian.clone(),
    });
    let m = if q.converged || at_edge {
        Minimum {
            x: q.x,
            f: q.f,
            evals: 0,
        }
    } else {
        let start = if q.f.is_finite() { q.x } else { x0 };
        nelder_mead(value, &start, Options::default())
    };
    let fit = finish(
        Minimum {
            evals: calls.get(),
            ..m
        },
        exp,
        model,
    )?;
    Ok((fit, warm))
}

/// Checks `gradient` against central differences of `ll` at `params` (steps of 1e-6
/// relative, agreement to 1e-5 relative): the gradient tests of every model use it.
#[cfg(test)]
pub(crate) fn assert_gradient(params: &[f64], gradient: &[f64], ll: impl Fn(&[f64]) -> f64) {
    for i in 0..params.len() {
        let h = 1e-6 * params[i];
        let at = |d: f64| {
            let mut q = params.to_vec();
            q[i] += d;
            ll(&q)
        };
        let numeric = (at(h) - at(-h)) / (2.0 * h);
        assert!(
            (gradient[i] - numeric).abs() <= 1e-5 * numeric.abs().max(1.0),
            "∂{i} at {params:?}: {} vs {numeric}",
            gradient[i]
        );
    }
}

fn finish<P>(m: Minimum, exp: impl Fn(&[f64]) -> P, model: &str) -> Result<Fitted<P>> {
    if !m.f.is_finite() || m.x.iter().any(|v| !v.is_finite()) {
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

/// Central differences of `f` at `x` with a step of 1e-4 in each coordinate.
fn central_differences(f: &impl Fn(&[f64]) -> f64, x: &[f64]) -> Vec<f64> {
    const H: f64 = 1e-4;
    let mut p = x.to_vec();
    (0..x.len())
        .map(|i| {
            p[i] = x[i] + H;
            let up = f(&p);
            p[i] = x[i] - H;
            let down = f(&p);
            p[i] = x[i];
            (up - down) / (2.0 * H)
        })
        .collect()
}

/// Options of [`bfgs`].
#[derive(Debug, Clone, Copy)]
pub struct QuasiNewton {
    pub max_iter: usize,
    /// Converged when the largest gradient component is at most this times max(1, |f|).
    pub g_tol: f64,
    /// When the line search can no longer make progress, the point still counts as
    /// converged with the gradient at most this times max(1, |f|).
    pub g_tol_stalled: f64,
}

impl Default for QuasiNewton {
    fn default() -> Self {
        Self {
            max_iter: 500,
            g_tol: 1e-10,
            g_tol_stalled: 1e-7,
        }
    }
}

/// Result of [`bfgs`].
#[derive(Debug, Clone)]
pub struct QuasiNewtonMinimum {
    pub x: Vec<f64>,
    pub f: f64,
    /// Calls of the objective.
    pub evals: usize,
    pub converged: bool,
    /// The last approximation of the inverse Hessian.
    pub inverse_hessian: Vec<Vec<f64>>,
}

fn dot(a: &[f64], b: &[f64]) -> f64 {
    a.iter().zip(b).map(|(a, b)| a * b).sum()
}

fn norm_inf(v: &[f64]) -> f64 {
    v.iter().fold(0.0, |m, x| m.max(x.abs()))
}

/// Minimises `fg` (value and gradient) from `x0` by BFGS with a backtracking Armijo line
/// search; steps are at most 5 in any coordinate. Non-finite values count as +∞, so the
/// search backs away from them; a non-finite start is reported as not converged.
pub fn bfgs(
    fg: impl FnMut(&[f64]) -> (f64, Vec<f64>),
    x0: &[f64],
    opts: QuasiNewton,
) -> QuasiNewtonMinimum {
    bfgs_from(fg, x0, None, opts)
}

/// [`bfgs`] from an approximation `h0` of the inverse Hessian at `x0` (`None`: the
/// identity, rescaled by the first step's curvature).
pub fn bfgs_from(
    mut fg: impl FnMut(&[f64]) -> (f64, Vec<f64>),
    x0: &[f64],
    h0: Option<Vec<Vec<f64>>>,
    opts: QuasiNewton,
) -> QuasiNewtonMinimum {
    let n = x0.len();
    // A malformed approximation is not trusted.
    let h0 = h0.filter(|h| {
        h.len() == n
            && h.iter()
                .all(|row| row.len() == n && row.iter().all(|v| v.is_finite()))
    });
    let given = h0.is_some();
    let finite = |f: f64, g: &[f64]| f.is_finite() && g.iter().all(|v| v.is_finite());
    let mut evals = 1;
    let mut x = x0.to_vec();
    let (mut f, mut g) = fg(&x);
    if !finite(f, &g) {
        return QuasiNewtonMinimum {
            x,
            f: f64::INFINITY,
            evals,
            converged: false,
            inverse_hessian: Vec::new(),
        };
    }
    let identity = |scale: f64| -> Vec<Vec<f64>> {
        (0..n)
            .map(|i| (0..n).map(|j| if i == j { scale } else { 0.0 }).collect())
            .collect()
    };
    // Inverse Hessian approximation.
    let mut h = h0.unwrap_or_else(|| identity(1.0));
    let tol = |f: f64, t: f64| t * f.abs().max(1.0);
    for iter in 0..opts.max_iter {
        if norm_inf(&g) <= tol(f, opts.g_tol) {
            return QuasiNewtonMinimum {
                x,
                f,
                evals,
                converged: true,
                inverse_hessian: h,
            };
        }
        let mut d: Vec<f64> = h.iter().map(|row| -dot(row, &g)).collect();
        let mut slope = dot(&g, &d);
        if slope.is_nan() || slope >= 0.0 {
            h = identity(1.0);
            d = g.iter().map(|v| -v).collect();
            slope = -dot(&g, &g);
        }
        let mut t = (5.0 / norm_inf(&d)).min(1.0);
        let mut next = None;
        for _ in 0..60 {
            let xn: Vec<f64> = x.iter().zip(&d).map(|(x, d)| x + t * d).collect();
            let (fnew, gnew) = fg(&xn);
            evals += 1;
            if finite(fnew, &gnew) && fnew <= f + 1e-4 * t * slope {
                next = Some((xn, fnew, gnew));
                break;
            }
            // The minimum of the quadratic through f, the slope and fnew, kept within
            // [0.1, 0.5] of the step; halve when fnew is not finite.
            let shrink = if fnew.is_finite() {
                (-slope * t / (2.0 * (fnew - f - slope * t))).clamp(0.1, 0.5)
            } else {
                0.5
            };
            t *= shrink;
        }
        let Some((xn, fnew, gnew)) = next else {
            break;
        };
        let s: Vec<f64> = xn.iter().zip(&x).map(|(a, b)| a - b).collect();
        let y: Vec<f64> = gnew.iter().zip(&g).map(|(a, b)| a - b).collect();
        let sy = dot(&s, &y);
        if sy > 1e-12 * dot(&s, &s).sqrt() * dot(&y, &y).sqrt() {
            if iter == 0 && !given {
                h = identity(sy / dot(&y, &y));
            }
            // H ← (I − ρsyᵀ) H (I − ρysᵀ) + ρssᵀ
            let rho = 1.0 / sy;
            let hy: Vec<f64> = h.iter().map(|row| dot(row, &y)).collect();
            let yhy = dot(&y, &hy);
            for i in 0..n {
                for j in 0..n {
                    h[i][j] +=
                        rho * ((1.0 + rho * yhy) * s[i] * s[j] - hy[i] * s[j] - s[i] * hy[j]);
                }
            }
        }
        let progress = f - fnew;
        x = xn;
        f = fnew;
        g = gnew;
        // At the optimum the objective stops changing in its last bits before the
        // gradient reaches `g_tol` (its rounding, |g|²·H ≈ ulp(f), caps how closely the
        // minimum can be placed): once a step gains nothing beyond rounding and the
        // gradient is within `g_tol_stalled`, further line searches only spend
        // evaluations (up to 60 each) on noise.
        let flat = progress <= 1e-15 * f.abs().max(1.0);
        if flat && (norm_inf(&s) <= 1e-14 || norm_inf(&g) <= tol(f, opts.g_tol_stalled)) {
            break;
        }
    }
    let converged = norm_inf(&g) <= tol(f, opts.g_tol_stalled);
    QuasiNewtonMinimum {
        x,
        f,
        evals,
        converged,
        inverse_hessian: h,
    }
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
    fn bfgs_from_the_inverse_hessian_takes_newton_steps() {
        // f = ½ xᵀAx − bᵀx with A = [[4, 1], [1, 3]]: from the exact inverse Hessian the
        // first step lands on the minimum; from the identity it takes several.
        let fg = |x: &[f64]| {
            let ax = [4.0 * x[0] + x[1], x[0] + 3.0 * x[1]];
            let f = 0.5 * (x[0] * ax[0] + x[1] * ax[1]) - (x[0] + 2.0 * x[1]);
            (f, vec![ax[0] - 1.0, ax[1] - 2.0])
        };
        let inverse = vec![vec![3.0 / 11.0, -1.0 / 11.0], vec![-1.0 / 11.0, 4.0 / 11.0]];
        let warm = bfgs_from(fg, &[0.5, -0.5], Some(inverse), QuasiNewton::default());
        let cold = bfgs(fg, &[0.5, -0.5], QuasiNewton::default());
        for m in [&warm, &cold] {
            assert!(m.converged, "{m:?}");
            assert!((m.x[0] - 1.0 / 11.0).abs() < 1e-9 && (m.x[1] - 7.0 / 11.0).abs() < 1e-9);
        }
        assert_eq!(warm.evals, 2, "{warm:?}");
        assert!(cold.evals > warm.evals, "{cold:?}");
        // A malformed inverse Hessian is ignored, not trusted.
        let odd = bfgs_from(
            fg,
            &[0.5, -0.5],
            Some(vec![vec![f64::NAN]]),
            QuasiNewton::default(),
        );
        assert!(odd.converged && odd.evals == cold.evals, "{odd:?}");
    }

    #[test]
    fn bfgs_finds_the_rosenbrock_minimum_and_backs_away_from_infinity() {
        let rosen = |x: &[f64]| {
            let f = (1.0 - x[0]).powi(2) + 100.0 * (x[1] - x[0] * x[0]).powi(2);
            let g = vec![
                -2.0 * (1.0 - x[0]) - 400.0 * x[0] * (x[1] - x[0] * x[0]),
                200.0 * (x[1] - x[0] * x[0]),
            ];
            (f, g)
        };
        let m = bfgs(rosen, &[-1.2, 1.0], QuasiNewton::default());
        assert!(m.converged, "{m:?}");
        assert!(
            (m.x[0] - 1.0).abs() < 1e-6 && (m.x[1] - 1.0).abs() < 1e-6,
            "{m:?}"
        );
        // A wall of +∞ beyond x = 0.5: the minimum of (x − 1)² inside it is at the wall.
        let walled = |x: &[f64]| {
            if x[0] > 0.5 {
                (f64::NAN, vec![f64::NAN])
            } else {
                ((x[0] - 1.0).powi(2), vec![2.0 * (x[0] - 1.0)])
            }
        };
        let m = bfgs(walled, &[-3.0], QuasiNewton::default());
        assert!(m.f.is_finite() && m.x[0] <= 0.5 && m.x[0] > 0.49, "{m:?}");
        assert!(
            !m.converged,
            "a point with a large gradient is not a minimum"
        );
    }

    #[test]
    fn bfgs_fits_fall_back_to_nelder_mead_and_are_never_nan() {
        // A likelihood whose gradient lies (always zero): BFGS stops at once without a
        // stationary point of the real function, Nelder–Mead still finds p = 2.
        let fit = fit_positive_bfgs(
            &[1.0],
            |p| p[0],
            |&p| (-(p.ln() - 2f64.ln()).powi(2), Some(vec![1.0])),
            "lying",
        )
        .unwrap();
        assert!((fit.params - 2.0).abs() < 1e-4, "{fit:?}");
        // Central differences when no gradient is given.
        let fit = fit_positive_bfgs(
            &[1.0, 1.0],
            |p| (p[0], p[1]),
            |&(a, b)| (-(a - 3.0).powi(2) - (b.ln() + 1.0).powi(2), None),
            "numeric",
        )
        .unwrap();
        assert!((fit.params.0 - 3.0).abs() < 1e-5, "{fit:?}");
        assert!((fit.params.1 - (-1f64).exp()).abs() < 1e-5, "{fit:?}");
        // Nowhere finite: an error, not NaN parameters.
        let err = fit_positive_bfgs(&[1.0], |p| p[0], |_| (f64::NAN, None), "void");
        assert!(err.is_err());
    }

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
