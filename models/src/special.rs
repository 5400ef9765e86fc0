//! Special functions: log-gamma, digamma, log-sum-exp and the Gauss hypergeometric ₂F₁.

/// Natural log of the gamma function for x > 0.
pub fn ln_gamma(x: f64) -> f64 {
    libm::lgamma(x)
}

/// The digamma function ψ(x) = d/dx ln Γ(x) for x > 0: the recurrence ψ(x) = ψ(x+1) − 1/x
/// up to x ≥ 12, then the asymptotic series (error below 1e-14 there).
pub fn digamma(mut x: f64) -> f64 {
    if x.is_nan() || x <= 0.0 {
        return f64::NAN;
    }
    let mut acc = 0.0;
    while x < 12.0 {
        acc -= 1.0 / x;
        x += 1.0;
    }
    let f = 1.0 / (x * x);
    let series = f
        * (1.0 / 12.0
            - f * (1.0 / 120.0 - f * (1.0 / 252.0 - f * (1.0 / 240.0 - f * (1.0 / 132.0)))));
    acc + x.ln() - 0.5 / x - series
}

/// The regularised upper incomplete gamma function Q(a, x) = Γ(a, x) / Γ(a) for a > 0,
/// x ≥ 0: the series of P = 1 − Q below x = a + 1, Lentz's continued fraction above
/// (Numerical Recipes §6.2; relative error near 1e-14).
pub fn gamma_q(a: f64, x: f64) -> f64 {
    if a.is_nan() || x.is_nan() || a <= 0.0 || x < 0.0 {
        return f64::NAN;
    }
    if x == 0.0 {
        return 1.0;
    }
    let ln_front = a * x.ln() - x - ln_gamma(a);
    if x < a + 1.0 {
        let (mut term, mut sum, mut n) = (1.0 / a, 1.0 / a, a);
        for _ in 0..1000 {
            n += 1.0;
            term *= x / n;
            sum += term;
            if term.abs() < sum.abs() * 1e-16 {
                break;
            }
        }
        return (1.0 - sum * ln_front.exp()).clamp(0.0, 1.0);
    }
    let tiny = 1e-300;
    let mut b = x + 1.0 - a;
    let mut c = 1.0 / tiny;
    let mut d = 1.0 / b;
    let mut h = d;
    for i in 1..1000 {
        let an = -(i as f64) * (i as f64 - a);
        b += 2.0;
        d = an * d + b;
        if d.abs() < tiny {
            d = tiny;
        }
        c = b + an / c;
        if c.abs() < tiny {
            c = tiny;
        }
        d = 1.0 / d;
        let step = d * c;
        h *= step;
        if (step - 1.0).abs() < 1e-16 {
            break;
        }
    }
    (ln_front.exp() * h).clamp(0.0, 1.0)
}

/// P(X > x) for X ~ χ² with `df` degrees of freedom.
pub fn chi2_sf(x: f64, df: f64) -> f64 {
    if x <= 0.0 {
        return 1.0;
    }
    gamma_q(df / 2.0, x / 2.0)
}

/// ln(e^a + e^b) without overflow.
pub fn log_add_exp(a: f64, b: f64) -> f64 {
    if a == f64::NEG_INFINITY {
        return b;
    }
    if b == f64::NEG_INFINITY {
        return a;
    }
    let m = a.max(b);
    m + ((a - m).exp() + (b - m).exp()).ln()
}

/// ln(e^a + e^b) and the shares e^a/(e^a + e^b) and e^b/(e^a + e^b), with one `exp` and
/// one `ln_1p` (the likelihoods' inner loops spend most of their time in these).
pub fn log_add_exp_weights(a: f64, b: f64) -> (f64, f64, f64) {
    if a == f64::NEG_INFINITY {
        return (b, 0.0, 1.0);
    }
    if b == f64::NEG_INFINITY {
        return (a, 1.0, 0.0);
    }
    let a_first = a >= b;
    let (hi, lo) = if a_first { (a, b) } else { (b, a) };
    // e^(lo − hi) ≤ 1 (NaN stays NaN).
    let e = (lo - hi).exp();
    let ln = hi + e.ln_1p();
    let (w_hi, w_lo) = (1.0 / (1.0 + e), e / (1.0 + e));
    if a_first {
        (ln, w_hi, w_lo)
    } else {
        (ln, w_lo, w_hi)
    }
}

/// ln(e^a − e^b) for a ≥ b.
pub fn log_sub_exp(a: f64, b: f64) -> f64 {
    if b == f64::NEG_INFINITY {
        return a;
    }
    if b >= a {
        // Equal (or equal up to rounding): the difference is zero.
        return f64::NEG_INFINITY;
    }
    a + (-(b - a).exp()).ln_1p()
}

/// Nodes (on [0, 1] from the centre out) and weights of the 8-point Gauss–Legendre rule
/// on [−1, 1].
const GAUSS_LEGENDRE_8: [(f64, f64); 4] = [
    (0.183_434_642_495_649_8, 0.362_683_783_378_362),
    (0.525_532_409_916_329, 0.313_706_645_877_887_3),
    (0.796_666_477_413_626_7, 0.222_381_034_453_374_5),
    (0.960_289_856_497_536_3, 0.101_228_536_290_376_3),
];

/// ∫ f over [lo, hi] by the 8-point Gauss–Legendre rule on each of `panels` equal
/// panels: exact for polynomials of degree 15 per panel, and very accurate for the
/// smooth, bounded integrands of the models.
pub fn gauss_legendre(f: &impl Fn(f64) -> f64, lo: f64, hi: f64, panels: usize) -> f64 {
    let panels = panels.max(1);
    let width = (hi - lo) / panels as f64;
    let half = width / 2.0;
    let mut sum = 0.0;
    for k in 0..panels {
        let mid = lo + (k as f64 + 0.5) * width;
        for (x, w) in GAUSS_LEGENDRE_8 {
            sum += w * (f(mid - half * x) + f(mid + half * x));
        }
    }
    sum * half
}

/// ∫ f over [lo, hi] to an absolute error of about `tol`: the 8-point Gauss–Legendre
/// rule on each of eight panels is compared with its sum on the two halves, and halves
/// that disagree are split again (at most `depth` times), so an integrand that is steep or
/// has an endpoint singularity in one place gets its panels there.
pub fn adaptive_gauss_legendre(f: &impl Fn(f64) -> f64, lo: f64, hi: f64, tol: f64) -> f64 {
    fn go(f: &impl Fn(f64) -> f64, lo: f64, hi: f64, whole: f64, tol: f64, depth: u32) -> f64 {
        let mid = 0.5 * (lo + hi);
        let (left, right) = (gauss_legendre(f, lo, mid, 1), gauss_legendre(f, mid, hi, 1));
        let split = left + right;
        if depth == 0 || (split - whole).abs() <= tol || !split.is_finite() {
            return split;
        }
        go(f, lo, mid, left, tol / 2.0, depth - 1) + go(f, mid, hi, right, tol / 2.0, depth - 1)
    }
    // Eight panels to start, so a narrow feature is not missed by every node.
    const START: usize = 8;
    let width = (hi - lo) / START as f64;
    (0..START)
        .map(|k| {
            let (a, b) = (lo + k as f64 * width, lo + (k + 1) as f64 * width);
            go(f, a, b, gauss_legendre(f, a, b, 1), tol / START as f64, 30)
        })
        .sum()
}

/// Gauss hypergeometric ₂F₁(a, b; c; z) for 0 ≤ z < 1 and c > 0, by its power series.
///
/// The terms of the models' uses are positive (a, b, c > 0) so the sum is stable; it
/// stops when a term no longer changes the sum, or after `MAX_TERMS`. For z close to 1
/// the Euler transformation ₂F₁(a,b;c;z) = (1−z)^(c−a−b) ₂F₁(c−a, c−b; c; z) is used
/// when it makes the series terminate or shrink faster.
pub fn hyp2f1(a: f64, b: f64, c: f64, z: f64) -> f64 {
    debug_assert!((0.0..1.0).contains(&z), "hyp2f1 needs 0 ≤ z < 1, got {z}");
    if z == 0.0 {
        return 1.0;
    }
    let (ea, eb) = (c - a, c - b);
    // Euler: a polynomial (non-positive integer parameter) or smaller parameters converge faster.
    let terminates = |x: f64| x <= 0.0 && x.fract() == 0.0;
    if z > 0.5 && (terminates(ea) || terminates(eb) || (ea.abs() + eb.abs() < a.abs() + b.abs())) {
        return (1.0 - z).powf(c - a - b) * series(ea, eb, c, z);
    }
    series(a, b, c, z)
}

/// ln ₂F₁(a, b; c; z) for 0 ≤ z < 1, also where ₂F₁ itself overflows: picks between the
/// direct series and Euler's transformation in log space.
pub fn ln_hyp2f1(a: f64, b: f64, c: f64, z: f64) -> f64 {
    if z <= 0.0 {
        return 0.0;
    }
    let (ea, eb) = (c - a, c - b);
    let euler = || (c - a - b) * (-z).ln_1p() + series(ea, eb, c, z).ln();
    let direct = || series(a, b, c, z).ln();
    let prefer_euler = ea.abs() + eb.abs() < a.abs() + b.abs();
    let first = if prefer_euler { euler() } else { direct() };
    if first.is_finite() {
        return first;
    }
    if prefer_euler {
        direct()
    } else {
        euler()
    }
}

/// [`ln_hyp2f1`] and its partial derivatives with respect to a, b, c and z, from the
/// same series (the derivatives of each term are accumulated beside it).
pub fn ln_hyp2f1_gradient(a: f64, b: f64, c: f64, z: f64) -> (f64, [f64; 4]) {
    if z <= 0.0 {
        // ₂F₁ = 1 + abz/c + …: at z = 0 only the z-derivative is left.
        return (0.0, [0.0, 0.0, 0.0, a * b / c]);
    }
    let (ea, eb) = (c - a, c - b);
    // ₂F₁(a,b;c;z) = (1−z)^(c−a−b) ₂F₁(c−a, c−b; c; z), differentiated through the
    // substitution.
    let euler = || {
        let (g, d) = series_gradient(ea, eb, c, z);
        let l1z = (-z).ln_1p();
        let (da, db, dc, dz) = (d[0] / g, d[1] / g, d[2] / g, d[3] / g);
        (
            (c - a - b) * l1z + g.ln(),
            [
                -l1z - da,
                -l1z - db,
                l1z + da + db + dc,
                -(c - a - b) / (1.0 - z) + dz,
            ],
        )
    };
    let direct = || {
        let (g, d) = series_gradient(a, b, c, z);
        (g.ln(), d.map(|v| v / g))
    };
    let prefer_euler = ea.abs() + eb.abs() < a.abs() + b.abs();
    let first = if prefer_euler { euler() } else { direct() };
    if first.0.is_finite() {
        return first;
    }
    if prefer_euler {
        direct()
    } else {
        euler()
    }
}

const MAX_TERMS: usize = 100_000;

/// The series of ₂F₁ and its derivatives in (a, b, c, z): the term n carries the factors
/// Σ_{k<n} 1/(a+k), Σ 1/(b+k), −Σ 1/(c+k) and n/z.
fn series_gradient(a: f64, b: f64, c: f64, z: f64) -> (f64, [f64; 4]) {
    let (mut term, mut sum) = (1.0, 1.0);
    let (mut ha, mut hb, mut hc) = (0.0, 0.0, 0.0);
    let mut d = [0.0; 4];
    for n in 0..MAX_TERMS {
        let n = n as f64;
        ha += 1.0 / (a + n);
        hb += 1.0 / (b + n);
        hc += 1.0 / (c + n);
        term *= (a + n) * (b + n) / ((c + n) * (n + 1.0)) * z;
        sum += term;
        d[0] += term * ha;
        d[1] += term * hb;
        d[2] -= term * hc;
        d[3] += term * (n + 1.0);
        if term == 0.0 || (term.abs() * (n + 2.0) <= sum.abs() * 1e-16 && n > 2.0) {
            break;
        }
    }
    d[3] /= z;
    (sum, d)
}

fn series(a: f64, b: f64, c: f64, z: f64) -> f64 {
    let mut term = 1.0;
    let mut sum = 1.0;
    for n in 0..MAX_TERMS {
        let n = n as f64;
        term *= (a + n) * (b + n) / ((c + n) * (n + 1.0)) * z;
        sum += term;
        if term == 0.0 || (term.abs() <= sum.abs() * 1e-16 && n > 2.0) {
            break;
        }
    }
    sum
}

#[cfg(test)]
mod tests {
    use super::*;

    fn close(a: f64, b: f64, tol: f64) -> bool {
        (a - b).abs() <= tol * b.abs().max(1.0)
    }

    #[test]
    fn chi_square_tail_probabilities_match_the_tables() {
        // Two degrees of freedom: exactly e^(−x/2), on both sides of x = a + 1.
        for x in [0.1, 1.0, 3.0, 10.0, 40.0] {
            assert!(close(chi2_sf(x, 2.0), (-x / 2.0).exp(), 1e-12), "{x}");
        }
        // Critical values of the usual tables (6 significant digits).
        for (x, df, p) in [
            (3.841_46, 1.0, 0.05),
            (9.487_73, 4.0, 0.05),
            (14.067_1, 7.0, 0.05),
            (24.321_9, 7.0, 0.001),
            (18.466_8, 4.0, 0.001),
        ] {
            assert!(
                close(chi2_sf(x, df), p, 1e-5),
                "{x} {df}: {}",
                chi2_sf(x, df)
            );
        }
        assert_eq!(chi2_sf(0.0, 7.0), 1.0);
        assert!(chi2_sf(1e4, 7.0) < 1e-300);
        assert!(gamma_q(-1.0, 1.0).is_nan());
    }

    #[test]
    fn the_gradient_of_ln_hyp2f1_is_its_derivative() {
        // Both branches (direct and Euler), small and large z, the Pareto/NBD shape c = a+1.
        for (a, b, c, z) in [
            (1.5, 0.8, 2.5, 0.1),
            (0.7, 3.2, 1.7, 0.6),
            (12.3, 1.6, 13.3, 0.95),
            (2.0, 0.5, 3.0, 0.999),
            (0.3, 0.4, 5.0, 0.5),
        ] {
            let (f, g) = ln_hyp2f1_gradient(a, b, c, z);
            assert!(
                close(f, ln_hyp2f1(a, b, c, z), 1e-12),
                "value at {a},{b},{c},{z}"
            );
            let p = [a, b, c, z];
            for i in 0..4 {
                let h = 1e-6 * p[i];
                let at = |d: f64| {
                    let mut q = p;
                    q[i] += d;
                    ln_hyp2f1(q[0], q[1], q[2], q[3])
                };
                let numeric = (at(h) - at(-h)) / (2.0 * h);
                assert!(
                    close(g[i], numeric, 1e-5),
                    "∂{i} at {p:?}: {} vs {numeric}",
                    g[i]
                );
            }
        }
        let (f, g) = ln_hyp2f1_gradient(2.0, 3.0, 4.0, 0.0);
        assert_eq!((f, g), (0.0, [0.0, 0.0, 0.0, 1.5]));
    }

    #[test]
    fn digamma_matches_known_values_and_the_derivative_of_ln_gamma() {
        // ψ(1) = −γ (Euler–Mascheroni), ψ(1/2) = −γ − 2 ln 2.
        let euler = 0.577_215_664_901_532_9;
        assert!(close(digamma(1.0), -euler, 1e-13));
        assert!(close(digamma(0.5), -euler - 2.0 * 2f64.ln(), 1e-13));
        for x in [1e-3_f64, 0.2, 0.9, 3.7, 6.0, 42.0, 1e4] {
            let h = 1e-5 * x.max(1e-2);
            let numeric = (ln_gamma(x + h) - ln_gamma(x - h)) / (2.0 * h);
            assert!(close(digamma(x), numeric, 1e-6), "ψ({x})");
        }
        assert!(digamma(0.0).is_nan() && digamma(-1.0).is_nan());
    }

    #[test]
    fn hyp2f1_known_values() {
        // ₂F₁(1,1;2;z) = −ln(1−z)/z
        for z in [0.1, 0.5, 0.9, 0.99] {
            assert!(
                close(hyp2f1(1.0, 1.0, 2.0, z), -(1.0 - z).ln() / z, 1e-12),
                "z={z}"
            );
        }
        // ₂F₁(a,b;b;z) = (1−z)^−a
        assert!(close(hyp2f1(2.5, 3.0, 3.0, 0.7), 0.3f64.powf(-2.5), 1e-12));
        // ₂F₁(1/2,1/2;3/2;z²) = asin(z)/z
        let z: f64 = 0.8;
        assert!(close(hyp2f1(0.5, 0.5, 1.5, z * z), z.asin() / z, 1e-12));
    }

    #[test]
    fn ln_hyp2f1_matches_and_survives_large_parameters() {
        for (a, b, c, z) in [
            (1.0, 1.0, 2.0, 0.9),
            (0.3, 2.5, 3.1, 0.6),
            (2.0, 3.0, 4.5, 0.2),
        ] {
            assert!(close(ln_hyp2f1(a, b, c, z), hyp2f1(a, b, c, z).ln(), 1e-12));
        }
        // ₂F₁(a,b;b;z) = (1−z)^−a, far beyond f64 for a in the thousands.
        let v = ln_hyp2f1(3000.0, 3002.0, 3002.0, 0.9);
        assert!(close(v, -3000.0 * 0.1f64.ln(), 1e-10), "{v}");
    }

    #[test]
    fn gauss_legendre_integrates() {
        // Exact for a polynomial of degree 15 on one panel.
        let v = gauss_legendre(&|x: f64| x.powi(15), 0.0, 2.0, 1);
        assert!(close(v, 2f64.powi(16) / 16.0, 1e-13), "{v}");
        assert!(close(
            gauss_legendre(&f64::exp, -1.0, 3.0, 4),
            3f64.exp() - (-1f64).exp(),
            1e-14
        ));
        assert_eq!(gauss_legendre(&|_| 1.0, 0.5, 0.5, 8), 0.0);
        // A bounded integrand, not smooth at an endpoint: ∫₀¹ x^0.3 dx = 1/1.3.
        let v = adaptive_gauss_legendre(&|x: f64| x.powf(0.3), 0.0, 1.0, 1e-11);
        assert!((v - 1.0 / 1.3).abs() < 1e-9, "{v}");
        // A steep decay: ∫₀¹⁰ 500 e^(−500x) dx ≈ 1.
        let v = adaptive_gauss_legendre(&|x: f64| 500.0 * (-500.0 * x).exp(), 0.0, 10.0, 1e-12);
        assert!((v - 1.0).abs() < 1e-10, "{v}");
    }

    #[test]
    fn log_sums() {
        assert!(close(
            log_add_exp(1.0f64.ln(), 2.0f64.ln()),
            3.0f64.ln(),
            1e-15
        ));
        assert!(close(
            log_sub_exp(3.0f64.ln(), 1.0f64.ln()),
            2.0f64.ln(),
            1e-15
        ));
        assert_eq!(log_add_exp(f64::NEG_INFINITY, 0.5), 0.5);
        assert!(close(ln_gamma(5.0), 24.0f64.ln(), 1e-14));
    }

    #[test]
    fn log_sum_shares_match_the_direct_formula_either_way_round() {
        for (a, b) in [
            (0.3, -1.7),
            (-1.7, 0.3),
            (2.0, 2.0),
            (-700.0, 5.0),
            (40.0, -3.0),
        ] {
            let (ln, wa, wb) = log_add_exp_weights(a, b);
            let (ea, eb) = ((a - 5.0f64).exp(), (b - 5.0f64).exp());
            assert!(close(ln, 5.0 + (ea + eb).ln(), 1e-14), "{a} {b}: {ln}");
            assert!(close(wa, ea / (ea + eb), 1e-14), "{a} {b}: {wa}");
            assert!(close(wb, eb / (ea + eb), 1e-14), "{a} {b}: {wb}");
        }
        assert_eq!(log_add_exp_weights(f64::NEG_INFINITY, 0.5), (0.5, 0.0, 1.0));
        assert_eq!(log_add_exp_weights(0.5, f64::NEG_INFINITY), (0.5, 1.0, 0.0));
        assert!(log_add_exp_weights(f64::NAN, 0.5).0.is_nan());
    }
}
