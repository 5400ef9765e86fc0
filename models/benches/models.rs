//! Fit and scoring speed on a synthetic population drawn from the BG/NBD and
//! Gamma-Gamma processes. Run: `cargo bench -p custflow-models --bench models`.
//! Targets: fit BG/NBD + Gamma-Gamma on 1,000,000 customers ≤ 0.5 s; score
//! ≥ 1,000,000 customers per second per core. `fit_population` is the model job's refit
//! (BG/NBD, Gamma-Gamma, RFM cut-points, tiers, k-means, drift references) at 1M.

#![allow(clippy::unwrap_used)] // benches fail loudly on purpose

use std::hint::black_box;

use criterion::{criterion_group, criterion_main, Criterion, Throughput};
use custflow_models::artefact::CustomerStats;
use custflow_models::bgnbd::BgNbd;
use custflow_models::churn::ChurnInput;
use custflow_models::fit::{fit_population, fit_transactions, FitOptions};
use custflow_models::gamma_gamma::GammaGamma;
use custflow_models::summary::{compress, SummaryRow};
use rand::{Rng, SeedableRng};
use rand_distr::{Beta, Distribution, Exp, Gamma};

/// Customers in days: r, α (days), a, b of the CDNOW fit, Gamma-Gamma of CDNOW, ages
/// uniform over a year, times rounded to whole days as the processors keep them.
fn population(n: usize, seed: u64) -> Vec<SummaryRow> {
    let mut rng = rand::rngs::StdRng::seed_from_u64(seed);
    let lambda = Gamma::new(0.2426, 1.0 / (4.4136 * 7.0)).unwrap();
    let drop = Beta::new(0.7929, 2.4259).unwrap();
    let nu = Gamma::new(3.74, 1.0 / 15.44).unwrap();
    (0..n)
        .map(|_| {
            let t = rng.gen_range(1..=365) as f64;
            let l: f64 = lambda.sample(&mut rng);
            let l = l.max(1e-9);
            let (p, v): (f64, f64) = (drop.sample(&mut rng), nu.sample(&mut rng));
            let spend = Gamma::new(6.25, 1.0 / v).unwrap();
            let gap = Exp::new(l).unwrap();
            let (mut now, mut x, mut last, mut total) = (0.0, 0.0, 0.0, 0.0);
            loop {
                if rng.gen::<f64>() < p {
                    break;
                }
                now += gap.sample(&mut rng);
                if now > t {
                    break;
                }
                x += 1.0;
                last = now.floor();
                total += spend.sample(&mut rng);
            }
            SummaryRow {
                x,
                t_x: last,
                t,
                m: if x > 0.0 { total / x } else { 0.0 },
                spend: total,
            }
        })
        .collect()
}

/// The live statistics of summary rows (time in days), as the model job reads them.
fn stats_of(rows: &[SummaryRow]) -> Vec<CustomerStats> {
    rows.iter().map(|r| r.stats(1.0)).collect()
}

/// The published CDNOW summary (weeks), for the side-by-side with lifetimes.
fn cdnow() -> Vec<SummaryRow> {
    let dir = std::path::PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../testdata");
    let text =
        std::fs::read_to_string(dir.join("cdnow/cdnow_customers_summary_with_transactions.csv"))
            .unwrap();
    text.lines()
        .skip(1)
        .map(|l| {
            let f: Vec<f64> = l.split(',').map(|v| v.trim().parse().unwrap()).collect();
            SummaryRow {
                x: f[1],
                t_x: f[2],
                t: f[3],
                m: f[4],
                spend: 0.0,
            }
        })
        .collect()
}

fn bench(c: &mut Criterion) {
    let cd = cdnow();
    let mut g = c.benchmark_group("cdnow_2357_customers");
    g.bench_function("fit_bgnbd", |b| {
        b.iter(|| BgNbd::fit(&compress(&cd)).unwrap())
    });
    g.bench_function("fit_pareto_nbd", |b| {
        b.iter(|| custflow_models::pareto::ParetoNbd::fit(&compress(&cd)).unwrap())
    });
    g.bench_function("fit_gamma_gamma", |b| {
        b.iter(|| GammaGamma::fit(&cd.iter().map(|r| (r.x, r.m)).collect::<Vec<_>>()).unwrap())
    });
    let bg = BgNbd::fit(&compress(&cd)).unwrap().params;
    let gg = GammaGamma::fit(&cd.iter().map(|r| (r.x, r.m)).collect::<Vec<_>>())
        .unwrap()
        .params;
    g.throughput(Throughput::Elements(cd.len() as u64));
    g.bench_function("score_p_alive_e39_aov", |b| {
        b.iter(|| {
            cd.iter()
                .map(|r| {
                    bg.p_alive(r.x, r.t_x, r.t)
                        + bg.expected_conditional(39.0, r.x, r.t_x, r.t)
                        + gg.expected_aov(r.x, r.m)
                })
                .sum::<f64>()
        })
    });
    g.finish();

    let rows = population(1_000_000, 7);
    let mut g = c.benchmark_group("models_1m_customers");
    g.sample_size(10);
    g.bench_function("fit_bgnbd_plus_gamma_gamma", |b| {
        b.iter(|| {
            let w = compress(&rows);
            let bg = BgNbd::fit(&w).unwrap();
            let gg = GammaGamma::fit(&rows.iter().map(|r| (r.x, r.m)).collect::<Vec<_>>()).unwrap();
            black_box((bg, gg))
        })
    });
    let population = stats_of(&rows);
    g.bench_function("fit_population", |b| {
        b.iter(|| black_box(fit_population(&population, "bench", 0, 365, 1).unwrap()))
    });
    g.finish();

    // A full artefact (BG/NBD champion, cut-points, k-means) to score with, fitted on a
    // transaction log of 20,000 of the customers.
    let mut tx = Vec::new();
    for (i, r) in rows.iter().take(20_000).enumerate() {
        let id = format!("c{i}");
        tx.push((id.clone(), 0, r.spend / (r.x + 1.0)));
        if r.x > 0.0 {
            tx.push((id, r.t_x as i64, r.m));
        }
    }
    let opts = FitOptions {
        calibration_end_day: 365,
        holdout_end_day: None,
        unit_days: 1.0,
        version: "bench".into(),
        created_at_ms: 0,
        seed: 1,
        pareto: false,
        churn_horizon_days: 90.0,
    };
    let artefact = fit_transactions(&tx.into_iter().collect(), &opts)
        .unwrap()
        .artefact;
    let stats = stats_of(&rows[..100_000]);
    let mut g = c.benchmark_group("score");
    g.throughput(Throughput::Elements(stats.len() as u64));
    g.bench_function("value_p_alive_e90_aov_clv12m", |b| {
        b.iter(|| stats.iter().map(|s| artefact.value(s).3).sum::<f64>())
    });
    g.bench_function("all_scores_incl_rfm_tier_cluster", |b| {
        b.iter(|| {
            stats
                .iter()
                .map(|s| artefact.score(&ChurnInput::from_stats(s)).r_score as u64)
                .sum::<u64>()
        })
    });
    g.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
