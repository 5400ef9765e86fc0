//! The published CDNOW results (testdata/README.md): the summary definitions, and
//! BG/NBD, Pareto/NBD and Gamma-Gamma fits to the calibration-period summary.

#![allow(clippy::unwrap_used)] // tests fail loudly on purpose

use std::path::PathBuf;

use custflow_models::bgnbd::BgNbd;
use custflow_models::fit::{fit_transactions, FitOptions};
use custflow_models::gamma_gamma::GammaGamma;
use custflow_models::pareto::ParetoNbd;
use custflow_models::rfm::TierCuts;
use custflow_models::summary::{self, compress, SummaryRow};

fn data_dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../testdata/cdnow")
}

/// (ID, x, t_x, T, zbar) of the published summary, in weeks.
fn published() -> Vec<(String, SummaryRow)> {
    let text =
        std::fs::read_to_string(data_dir().join("cdnow_customers_summary_with_transactions.csv"))
            .unwrap();
    text.lines()
        .skip(1)
        .map(|l| {
            let f: Vec<&str> = l.split(',').collect();
            let n = |i: usize| f[i].trim().parse::<f64>().unwrap();
            (
                f[0].to_owned(),
                SummaryRow {
                    x: n(1),
                    t_x: n(2),
                    t: n(3),
                    m: n(4),
                    spend: 0.0,
                },
            )
        })
        .collect()
}

/// The sample's transactions: (customer, day, value).
fn sample_transactions() -> custflow_models::input::Transactions {
    let text = std::fs::read_to_string(data_dir().join("CDNOW_sample.txt")).unwrap();
    text.lines()
        .filter(|l| !l.trim().is_empty())
        .map(|l| {
            let f: Vec<&str> = l.split_whitespace().collect();
            // The summary's ID is the sample id (second column) without leading zeros.
            let id = f[1].trim_start_matches('0').to_owned();
            (
                id,
                summary::parse_yyyymmdd(f[2]).unwrap(),
                f[4].parse().unwrap(),
            )
        })
        .collect()
}

#[test]
fn summary_from_transactions_reproduces_the_published_file() {
    let tx = sample_transactions();
    let as_of = summary::parse_yyyymmdd("19970930").unwrap();
    let ours = summary::summarise(tx.iter(), as_of, 7.0);
    let want = published();
    assert_eq!(ours.len(), 2357);
    assert_eq!(want.len(), 2357);
    // "To its 2 decimals": within half a cent of the printed value (18.135 prints as 18.14).
    let same = |ours: f64, printed: f64| (ours - printed).abs() <= 0.005 + 1e-9;
    for (id, w) in &want {
        let o = ours
            .get(id)
            .unwrap_or_else(|| panic!("customer {id} missing"));
        assert_eq!(o.x, w.x, "x of {id}");
        assert!(same(o.t_x, w.t_x), "t_x of {id}: {} vs {}", o.t_x, w.t_x);
        assert!(same(o.t, w.t), "T of {id}: {} vs {}", o.t, w.t);
        assert!(same(o.m, w.m), "zbar of {id}: {} vs {}", o.m, w.m);
    }
}

#[test]
fn bgnbd_fit_matches_the_published_parameters() {
    let rows: Vec<SummaryRow> = published().into_iter().map(|(_, r)| r).collect();
    let fit = BgNbd::fit(&compress(&rows)).unwrap();
    let p = fit.params;
    for (got, want, name) in [
        (p.r, 0.2426, "r"),
        (p.alpha, 4.4136, "alpha"),
        (p.a, 0.7929, "a"),
        (p.b, 2.4259, "b"),
    ] {
        assert!(
            (got - want).abs() <= 0.001,
            "{name} = {got}, want {want} ± 0.001"
        );
    }
    assert!(
        (fit.log_likelihood + 9582.43).abs() <= 0.01,
        "LL = {}",
        fit.log_likelihood
    );
    let e = p.expected_conditional(39.0, 2.0, 30.43, 38.86);
    assert!((e - 1.226).abs() < 0.001, "conditional expectation {e}");
    for (t, want) in [(1.0, 0.0532), (3.0, 0.1506), (32.0, 1.0437), (78.0, 1.8576)] {
        let got = p.expected_unconditional(t);
        assert!(
            (got - want).abs() < 0.0005,
            "E[X({t})] = {got}, want {want}"
        );
    }
}

#[test]
fn pareto_nbd_fit_matches_the_published_parameters() {
    let rows: Vec<SummaryRow> = published().into_iter().map(|(_, r)| r).collect();
    let fit = ParetoNbd::fit(&compress(&rows)).unwrap();
    let p = fit.params;
    for (got, want, name) in [
        (p.r, 0.553, "r"),
        (p.alpha, 10.578, "alpha"),
        (p.s, 0.606, "s"),
        (p.beta, 11.669, "beta"),
    ] {
        assert!(
            (got - want).abs() <= 0.01,
            "{name} = {got}, want {want} ± 0.01"
        );
    }
    assert!(
        (fit.log_likelihood + 9595.0).abs() <= 0.1,
        "LL = {}",
        fit.log_likelihood
    );
}

#[test]
fn gamma_gamma_fit_matches_the_published_parameters() {
    let rows: Vec<(f64, f64)> = published().into_iter().map(|(_, r)| (r.x, r.m)).collect();
    let fit = GammaGamma::fit(&rows).unwrap();
    let p = fit.params;
    for (got, want, name) in [
        (p.p, 6.25, "p"),
        (p.q, 3.74, "q"),
        (p.gamma, 15.44, "gamma"),
    ] {
        assert!(
            (got - want).abs() <= 0.01,
            "{name} = {got}, want {want} ± 0.01"
        );
    }
}

#[test]
fn value_tiers_of_a_fit_are_the_percentiles_of_every_customers_clv() {
    // The fit scores each distinct (x, t_x, T) once; the cut-points must be those of
    // scoring every customer on its own.
    let tx = sample_transactions();
    let opts = FitOptions {
        calibration_end_day: summary::parse_yyyymmdd("19970930").unwrap(),
        holdout_end_day: None,
        unit_days: 7.0,
        version: "t".into(),
        created_at_ms: 0,
        seed: 7,
        pareto: false,
        churn_horizon_days: 90.0,
    };
    let fit = fit_transactions(&tx, &opts).unwrap();
    let a = &fit.artefact;
    let each = fit.summary.values().map(|r| a.value(&r.stats(7.0)).3);
    let want = TierCuts::from_population(each);
    let close = |x: f64, y: f64| (x - y).abs() <= 1e-9 * y.abs().max(1.0);
    assert!(
        a.tiers.p80 > a.tiers.p20 && a.tiers.p20 >= 0.0,
        "{:?}",
        a.tiers
    );
    assert!(close(a.tiers.p20, want.p20), "{:?} vs {want:?}", a.tiers);
    assert!(close(a.tiers.p80, want.p80), "{:?} vs {want:?}", a.tiers);
}
