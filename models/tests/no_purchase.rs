//! The probability of no purchase in a horizon, what `churn_probability` serves without a
//! classifier: it is calibrated on customers simulated from the models' own generative
//! stories, Pareto/NBD's quadrature agrees with a much finer one and with its closed form
//! when nobody dies, and on CDNOW it ranks the customers who did not buy in the next 90
//! days the way a churn score should (1 − P(alive) ranks them worse than chance).

#![allow(clippy::unwrap_used)] // tests fail loudly on purpose

use std::path::PathBuf;

use custflow_models::bgnbd::BgNbd;
use custflow_models::churn::metrics::auc;
use custflow_models::fit::{fit_transactions, holdout_purchases, FitOptions};
use custflow_models::pareto::ParetoNbd;
use custflow_models::special::gauss_legendre;
use proptest::prelude::*;
use rand::{Rng, SeedableRng};
use rand_distr::{Beta, Distribution, Exp, Gamma};

/// One simulated customer: (x, t_x, T) of the calibration period and whether they made
/// no purchase in the `h` after it.
struct Simulated {
    x: f64,
    t_x: f64,
    t: f64,
    quiet: bool,
}

/// The observed number of quiet customers against the predicted one: within 4.5
/// standard deviations of the sum of independent Bernoulli outcomes.
fn assert_calibrated(what: &str, customers: &[Simulated], predict: impl Fn(&Simulated) -> f64) {
    let (mut expected, mut variance, mut observed) = (0.0, 0.0, 0.0);
    for c in customers {
        let p = predict(c);
        assert!((0.0..=1.0).contains(&p), "{what}: p {p}");
        expected += p;
        variance += p * (1.0 - p);
        observed += f64::from(u8::from(c.quiet));
    }
    let z = (observed - expected) / variance.sqrt();
    assert!(
        z.abs() < 4.5,
        "{what}: {observed} quiet customers, {expected:.1} predicted (z = {z:.2}, n = {})",
        customers.len()
    );
}

/// Customers whose calibration periods are between 10 and 52 weeks long.
fn age(rng: &mut impl Rng) -> f64 {
    rng.gen_range(10.0..52.0)
}

#[test]
fn bgnbd_no_purchase_is_calibrated_on_simulated_customers() {
    // CDNOW's published BG/NBD parameters (weeks).
    let m = BgNbd {
        r: 0.243,
        alpha: 4.414,
        a: 0.793,
        b: 2.426,
    };
    let h = 13.0;
    let mut rng = rand::rngs::StdRng::seed_from_u64(7);
    let rate = Gamma::new(m.r, 1.0 / m.alpha).unwrap();
    let dropout = Beta::new(m.a, m.b).unwrap();
    let customers: Vec<Simulated> = (0..40_000)
        .map(|_| {
            let (lambda, p) = (rate.sample(&mut rng), dropout.sample(&mut rng));
            let t = age(&mut rng);
            let gap = Exp::new(lambda).unwrap();
            let (mut now, mut x, mut t_x, mut quiet) = (0.0, 0.0, 0.0, true);
            // The first purchase is at 0; after each purchase the customer may drop out.
            loop {
                now += gap.sample(&mut rng);
                if now > t + h {
                    break;
                }
                if now <= t {
                    x += 1.0;
                    t_x = now;
                } else {
                    quiet = false;
                    break;
                }
                if rng.gen_bool(p) {
                    break;
                }
            }
            Simulated { x, t_x, t, quiet }
        })
        .collect();
    assert_calibrated("BG/NBD", &customers, |c| {
        m.p_no_purchase(h, c.x, c.t_x, c.t)
    });
    // And separately for the one-time buyers, whom 1 − P(alive) calls certain stayers.
    let once: Vec<Simulated> = customers.into_iter().filter(|c| c.x == 0.0).collect();
    assert_calibrated("BG/NBD, no repeat purchase", &once, |c| {
        m.p_no_purchase(h, c.x, c.t_x, c.t)
    });
    assert!(once.iter().all(|c| m.p_alive(c.x, c.t_x, c.t) == 1.0));
}

#[test]
fn pareto_no_purchase_is_calibrated_on_simulated_customers() {
    // CDNOW's published Pareto/NBD parameters (weeks).
    let m = ParetoNbd {
        r: 0.553,
        alpha: 10.58,
        s: 0.606,
        beta: 11.67,
    };
    let h = 13.0;
    let mut rng = rand::rngs::StdRng::seed_from_u64(11);
    let rate = Gamma::new(m.r, 1.0 / m.alpha).unwrap();
    let death = Gamma::new(m.s, 1.0 / m.beta).unwrap();
    let customers: Vec<Simulated> = (0..40_000)
        .map(|_| {
            let (lambda, mu) = (rate.sample(&mut rng), death.sample(&mut rng));
            let t = age(&mut rng);
            let lifetime = Exp::new(mu).unwrap().sample(&mut rng);
            let gap = Exp::new(lambda).unwrap();
            let end = lifetime.min(t + h);
            let (mut now, mut x, mut t_x, mut quiet) = (0.0, 0.0, 0.0, true);
            loop {
                now += gap.sample(&mut rng);
                if now > end {
                    break;
                }
                if now <= t {
                    x += 1.0;
                    t_x = now;
                } else {
                    quiet = false;
                    break;
                }
            }
            Simulated { x, t_x, t, quiet }
        })
        .collect();
    assert_calibrated("Pareto/NBD", &customers, |c| {
        m.p_no_purchase(h, c.x, c.t_x, c.t)
    });
    let repeat: Vec<Simulated> = customers.into_iter().filter(|c| c.x >= 2.0).collect();
    assert!(repeat.len() > 1000, "{}", repeat.len());
    assert_calibrated("Pareto/NBD, two or more repeat purchases", &repeat, |c| {
        m.p_no_purchase(h, c.x, c.t_x, c.t)
    });
}

/// P(a purchase in h | alive) for Pareto/NBD by a fixed 8,192-point quadrature in the
/// original variable u (not the substitution the served one uses).
fn pareto_buys_fine(m: &ParetoNbd, h: f64, x: f64, t: f64) -> f64 {
    let (k, a, b) = (m.r + x, m.alpha + t, m.beta + t);
    gauss_legendre(
        &|u: f64| k / a * (a / (a + u)).powf(k + 1.0) * (b / (b + u)).powf(m.s),
        0.0,
        h,
        1024,
    )
}

fn param() -> impl Strategy<Value = f64> {
    prop_oneof![0.05..1.0f64, 1.0..50.0f64]
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(200))]

    #[test]
    fn pareto_quadrature_is_accurate(
        r in param(), alpha in param(), s in param(), beta in param(),
        x in prop_oneof![Just(0.0), 1.0..30.0f64], t in 0.0..200.0f64, frac in 0.0..1.0f64,
        h in 0.5..200.0f64,
    ) {
        let m = ParetoNbd { r, alpha, s, beta };
        let x = x.floor();
        let t_x = if x == 0.0 { 0.0 } else { t * frac };
        let alive = m.p_alive(x, t_x, t);
        let want = 1.0 - alive * pareto_buys_fine(&m, h, x, t);
        let got = m.p_no_purchase(h, x, t_x, t);
        prop_assert!((got - want).abs() < 1e-6, "got {got}, want {want}");
    }

    #[test]
    fn no_purchase_is_a_probability_that_falls_with_the_horizon(
        r in param(), alpha in param(), a in param(), b in param(),
        x in prop_oneof![Just(0.0), Just(1.0), 0.0..50.0f64, 1000.0..5000.0f64],
        t in prop_oneof![Just(0.0), 0.0..5000.0f64], frac in 0.0..1.0f64,
        h in 0.0..400.0f64,
    ) {
        let x = x.floor();
        let t_x = if x == 0.0 { 0.0 } else { t * frac };
        for (name, p_alive, near, far) in [
            ("BG/NBD", BgNbd { r, alpha, a, b }.p_alive(x, t_x, t),
             BgNbd { r, alpha, a, b }.p_no_purchase(h, x, t_x, t),
             BgNbd { r, alpha, a, b }.p_no_purchase(h + 30.0, x, t_x, t)),
            ("Pareto/NBD", ParetoNbd { r, alpha, s: a, beta: b }.p_alive(x, t_x, t),
             ParetoNbd { r, alpha, s: a, beta: b }.p_no_purchase(h, x, t_x, t),
             ParetoNbd { r, alpha, s: a, beta: b }.p_no_purchase(h + 30.0, x, t_x, t)),
        ] {
            prop_assert!((0.0..=1.0).contains(&near), "{name}: {near}");
            // Never below P(dead), never above 1, and a longer horizon is never quieter.
            prop_assert!(near >= 1.0 - p_alive - 1e-9, "{name}: {near} < 1 − {p_alive}");
            prop_assert!(far <= near + 1e-9, "{name}: {far} > {near}");
        }
    }
}

#[test]
fn pareto_without_deaths_is_the_gamma_closed_form() {
    // s → 0: nobody dies, so quiet means no purchase at a Gamma(r+x, α+T) rate.
    let m = ParetoNbd {
        r: 0.8,
        alpha: 12.0,
        s: 1e-9,
        beta: 5.0,
    };
    for (x, t_x, t, h) in [
        (0.0, 0.0, 30.0, 13.0),
        (4.0, 20.0, 39.0, 52.0),
        (1.0, 1.0, 2.0, 0.5),
    ] {
        let closed = ((m.alpha + t) / (m.alpha + t + h)).powf(m.r + x);
        let alive = m.p_alive(x, t_x, t);
        let want = 1.0 - alive + alive * closed;
        let got = m.p_no_purchase(h, x, t_x, t);
        assert!(
            (got - want).abs() < 1e-9,
            "{x} {t_x} {t} {h}: {got} vs {want}"
        );
    }
    assert_eq!(m.p_no_purchase(0.0, 3.0, 10.0, 20.0), 1.0);
}

/// The CDNOW sample's transactions (customer, day, value).
fn cdnow() -> custflow_models::input::Transactions {
    let path = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../testdata/cdnow/CDNOW_sample.txt");
    custflow_models::input::parse_cdnow(&std::fs::read_to_string(path).unwrap()).unwrap()
}

#[test]
fn on_cdnow_no_purchase_ranks_the_quiet_customers_and_one_minus_p_alive_does_not() {
    // Fitted to 1997-12-31; churned = no purchase in the next 90 days.
    let tx = cdnow();
    let cal_end = custflow_models::input::parse_day("1997-12-31").unwrap();
    let opts = FitOptions {
        calibration_end_day: cal_end,
        holdout_end_day: None,
        unit_days: 1.0,
        version: "t".into(),
        created_at_ms: 0,
        seed: 1,
        pareto: true,
        churn_horizon_days: 90.0,
    };
    let out = fit_transactions(&tx, &opts).unwrap();
    let bought = holdout_purchases(tx.iter(), cal_end, cal_end + 90);
    let (mut quiet, mut dead, mut churned) = (Vec::new(), Vec::new(), Vec::new());
    for (id, r) in &out.summary {
        let s = r.stats(opts.unit_days);
        let b = out.artefact.btyd(&s, 90.0);
        quiet.push(b.no_purchase);
        dead.push(1.0 - b.p_alive);
        churned.push(!bought.contains_key(id.as_str()));
    }
    assert_eq!(churned.len(), 2357);
    let (a_quiet, a_dead) = (
        auc(&quiet, &churned).unwrap(),
        auc(&dead, &churned).unwrap(),
    );
    assert!(a_quiet > 0.75, "AUC of P(no purchase) {a_quiet}");
    assert!(a_dead < 0.5, "AUC of 1 − P(alive) {a_dead}");
    // The served score is that probability, and it is roughly calibrated: the mean
    // predicted churn is near the churn rate.
    let rate = churned.iter().filter(|c| **c).count() as f64 / churned.len() as f64;
    let mean = quiet.iter().sum::<f64>() / quiet.len() as f64;
    assert!((mean - rate).abs() < 0.05, "mean {mean}, rate {rate}");
    let served = out.artefact.score(&custflow_models::churn::ChurnInput {
        frequency: 0.0,
        recency_days: 0.0,
        age_days: 200.0,
        monetary_value: 0.0,
        orders_total: 1.0,
        spend_total: 20.0,
        ..Default::default()
    });
    assert!(
        served.churn_probability > 0.5 && served.churn_probability < 1.0,
        "{served:?}"
    );
}
