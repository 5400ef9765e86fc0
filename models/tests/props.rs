//! No NaN or infinity for any input: extreme x, t_x, T (x = 0, x in the thousands,
//! T = 0, t_x = T) and a wide range of parameters.

#![allow(clippy::unwrap_used)] // tests fail loudly on purpose

use custflow_models::bgnbd::BgNbd;
use custflow_models::clv::{clv, ClvSettings};
use custflow_models::gamma_gamma::GammaGamma;
use custflow_models::pareto::ParetoNbd;
use proptest::prelude::*;

/// (x, t_x, T) with 0 ≤ t_x ≤ T, including the edges.
fn history() -> impl Strategy<Value = (f64, f64, f64)> {
    (
        prop_oneof![Just(0.0), Just(1.0), 0.0..50.0f64, 1000.0..5000.0f64],
        prop_oneof![Just(0.0), 0.0..5000.0f64],
        0.0..1.0f64,
        any::<bool>(),
    )
        .prop_map(|(x, t, frac, at_end)| {
            let x = x.floor();
            let t_x = if at_end { t } else { t * frac };
            (x, if x == 0.0 { 0.0 } else { t_x }, t)
        })
}

fn param() -> impl Strategy<Value = f64> {
    prop_oneof![0.05..1.0f64, 1.0..50.0f64]
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(2000))]

    #[test]
    fn bgnbd_is_finite((x, t_x, t) in history(), r in param(), alpha in param(), a in param(), b in param(), h in 0.0..400.0f64) {
        let m = BgNbd { r, alpha, a, b };
        let p = m.p_alive(x, t_x, t);
        prop_assert!((0.0..=1.0).contains(&p), "p_alive {p}");
        let e = m.expected_conditional(h, x, t_x, t);
        prop_assert!(e.is_finite() && e >= 0.0, "expected {e}");
        let v = clv(&m, 10.0, x, t_x, t, ClvSettings::DAYS);
        prop_assert!(v.is_finite() && v >= 0.0, "clv {v}");
        let rows = custflow_models::summary::compress(&[custflow_models::SummaryRow { x, t_x, t, m: 0.0, spend: 0.0 }]);
        prop_assert!(!m.log_likelihood(&rows).is_nan());
    }

    #[test]
    fn pareto_is_finite((x, t_x, t) in history(), r in param(), alpha in param(), s in param(), beta in param(), h in 0.0..400.0f64) {
        let m = ParetoNbd { r, alpha, s, beta };
        let p = m.p_alive(x, t_x, t);
        prop_assert!((0.0..=1.0).contains(&p), "p_alive {p}");
        let e = m.expected_conditional(h, x, t_x, t);
        prop_assert!(e.is_finite() && e >= 0.0, "expected {e}");
        prop_assert!(!m.ln_l(x, t_x, t).is_nan());
    }

    #[test]
    fn gamma_gamma_is_finite(x in 0.0..5000.0f64, mv in prop_oneof![Just(0.0), 0.0..1e6f64], p in param(), q in param(), g in param()) {
        let v = GammaGamma { p, q, gamma: g }.expected_aov(x.floor(), mv);
        prop_assert!(v.is_finite() && v >= 0.0, "aov {v}");
    }
}
