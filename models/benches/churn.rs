//! Churn scoring cost inside the processors: every score of one customer (BTYD values,
//! RFM, tier, cluster) with and without the supervised churn model, whose classifier is
//! the largest the search tries (boosted trees, depth 5) or a logistic regression.
//! Run: `cargo bench -p custflow-models --bench churn`. Target: the churn model adds
//! ≤ 5 µs per customer.

#![allow(clippy::unwrap_used)] // benches fail loudly on purpose

use std::collections::BTreeMap;
use std::hint::black_box;

use criterion::{criterion_group, criterion_main, Criterion, Throughput};
use custflow_models::churn::train::{boosted, logistic, Dataset};
use custflow_models::churn::{Btyd, ChurnInput, ChurnModel, Classifier, Offer, Platt};
use custflow_models::fit::{fit_transactions, FitOptions};
use rand::{Rng, SeedableRng};

/// Customers whose churn shows in how overdue they are, as in the unit tests.
fn inputs(n: usize, seed: u64) -> Vec<(ChurnInput, bool)> {
    let mut rng = rand::rngs::StdRng::seed_from_u64(seed);
    (0..n)
        .map(|_| {
            let freq = f64::from(rng.gen_range(0..12u8));
            let recency = rng.gen_range(0.0..300.0) * f64::from(u8::from(freq > 0.0));
            let since: f64 = rng.gen_range(0.0..200.0);
            let churned = rng.gen_bool((since / 250.0 + 0.1).min(0.95));
            let input = ChurnInput {
                frequency: freq,
                recency_days: recency,
                age_days: recency + since,
                monetary_value: rng.gen_range(5.0..80.0),
                orders_total: freq + 1.0,
                spend_total: rng.gen_range(5.0..900.0),
                orders_30d: f64::from(u8::from(since < 30.0)),
                orders_90d: f64::from(u8::from(since < 90.0)),
                spend_90d: if since < 90.0 { 30.0 } else { 0.0 },
            };
            (input, churned)
        })
        .collect()
}

fn model(classifier: Classifier) -> ChurnModel {
    ChurnModel {
        name: "bench".into(),
        trained_at_ms: 0,
        horizon_days: 90.0,
        classifier,
        calibration: Platt { a: 0.9, b: 0.1 },
        offer: Offer::default(),
        threshold: 0.5,
        metrics: BTreeMap::new(),
    }
}

fn bench(c: &mut Criterion) {
    let train = inputs(50_000, 1);
    let mut d = Dataset::default();
    for (i, y) in &train {
        d.push(
            i,
            *y,
            Btyd {
                p_alive: 0.5,
                no_purchase: 0.6,
            },
            50.0,
        );
    }
    let trees = boosted(&d, 5, 120, 0.05, 7).unwrap();
    let linear = logistic(&d, 1.0).unwrap();

    // An artefact to score with, fitted on two purchases of each training customer.
    let mut tx = Vec::new();
    for (k, (i, _)) in train.iter().enumerate().take(20_000) {
        tx.push((format!("c{k}"), 0, i.monetary_value));
        if i.frequency > 0.0 {
            tx.push((format!("c{k}"), i.recency_days as i64, i.monetary_value));
        }
    }
    let opts = FitOptions {
        calibration_end_day: 400,
        holdout_end_day: None,
        unit_days: 1.0,
        version: "bench".into(),
        created_at_ms: 0,
        seed: 1,
        pareto: false,
        churn_horizon_days: 90.0,
    };
    let plain = fit_transactions(&tx.iter().map(|(c, d, v)| (c, *d, *v)).collect(), &opts)
        .unwrap()
        .artefact;
    let mut with_trees = plain.clone();
    with_trees.churn = Some(model(trees));
    let mut with_linear = plain.clone();
    with_linear.churn = Some(model(linear));

    let customers: Vec<ChurnInput> = inputs(10_000, 2).into_iter().map(|(i, _)| i).collect();
    let mut g = c.benchmark_group("churn_score");
    g.throughput(Throughput::Elements(customers.len() as u64));
    for (name, a) in [
        ("all_scores_without_churn_model", &plain),
        ("all_scores_with_logistic", &with_linear),
        ("all_scores_with_gbt_depth5_120_trees", &with_trees),
    ] {
        g.bench_function(name, |b| {
            b.iter(|| {
                customers
                    .iter()
                    .map(|i| a.score(black_box(i)).churn_probability)
                    .sum::<f64>()
            })
        });
    }
    g.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
