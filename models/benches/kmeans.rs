//! Lloyd's k-means, ours against linfa-clustering's `KMeans` (one run, k-means++ start,
//! at most 100 rounds, both seeded), for k = 2..=8 on standardised RFM points of three
//! loose customer groups; prints the mean inertia of each beside criterion's times.
//!
//! Run: `cargo bench -p custflow-models --bench kmeans`. Issue 33 asked for linfa unless it
//! measurably loses on speed or quality.

#![allow(clippy::unwrap_used)] // benches fail loudly on purpose

use std::hint::black_box;

use criterion::{criterion_group, criterion_main, BenchmarkId, Criterion};
use custflow_models::kmeans::{lloyd, point};
use linfa::traits::Fit;
use linfa::DatasetBase;
use linfa_clustering::{KMeans, KMeansInit};
use ndarray::Array2;
use rand::{Rng, SeedableRng};
use rand_xoshiro::Xoshiro256Plus;

/// Standardised points of customers in three loose groups (recent frequent big spenders,
/// lapsed one-timers, the middle).
fn points(n: usize) -> Vec<[f64; 3]> {
    let mut rng = rand::rngs::StdRng::seed_from_u64(5);
    let raw: Vec<[f64; 3]> = (0..n)
        .map(|i| {
            let (d, f, m) = [(10.0, 8.0, 60.0), (200.0, 1.0, 20.0), (60.0, 3.0, 35.0)][i % 3];
            point(
                d * rng.gen_range(0.3..1.7),
                (f * rng.gen_range(0.3..1.7f64)).round(),
                m * rng.gen_range(0.5..1.5),
            )
        })
        .collect();
    let nf = n as f64;
    let mean: [f64; 3] = std::array::from_fn(|i| raw.iter().map(|p| p[i]).sum::<f64>() / nf);
    let sd: [f64; 3] = std::array::from_fn(|i| {
        (raw.iter().map(|p| (p[i] - mean[i]).powi(2)).sum::<f64>() / nf).sqrt()
    });
    raw.iter()
        .map(|p| std::array::from_fn(|i| (p[i] - mean[i]) / sd[i]))
        .collect()
}

fn linfa_lloyd<T>(data: &DatasetBase<Array2<f64>, T>, k: usize, seed: u64) -> Vec<[f64; 3]> {
    KMeans::params_with_rng(k, Xoshiro256Plus::seed_from_u64(seed ^ k as u64))
        .n_runs(1)
        .max_n_iterations(100)
        .tolerance(1e-6)
        .init_method(KMeansInit::KMeansPlusPlus)
        .fit(data)
        .unwrap()
        .centroids()
        .rows()
        .into_iter()
        .map(|r| [r[0], r[1], r[2]])
        .collect()
}

fn inertia(points: &[[f64; 3]], centroids: &[[f64; 3]]) -> f64 {
    let d2 = |a: &[f64; 3], b: &[f64; 3]| (0..3).map(|i| (a[i] - b[i]).powi(2)).sum::<f64>();
    points
        .iter()
        .map(|p| {
            centroids
                .iter()
                .map(|c| d2(p, c))
                .fold(f64::INFINITY, f64::min)
        })
        .sum::<f64>()
        / points.len() as f64
}

fn bench(c: &mut Criterion) {
    let mut g = c.benchmark_group("kmeans_k2_to_8");
    g.sample_size(10);
    for n in [2_357, 23_570, 100_000] {
        let pts = points(n);
        let data = DatasetBase::from(
            Array2::from_shape_vec((n, 3), pts.iter().flatten().copied().collect()).unwrap(),
        );
        let (ours, theirs): (f64, f64) = (2..=8).fold((0.0, 0.0), |(a, b), k| {
            (
                a + inertia(&pts, &lloyd(&pts, k, 42)),
                b + inertia(&pts, &linfa_lloyd(&data, k, 42)),
            )
        });
        println!(
            "n = {n}: mean inertia over k = 2..=8: ours {:.4}, linfa {:.4}",
            ours / 7.0,
            theirs / 7.0
        );
        g.bench_with_input(BenchmarkId::new("ours", n), &pts, |b, pts| {
            b.iter(|| {
                (2..=8)
                    .map(|k| black_box(lloyd(pts, k, 42)).len())
                    .sum::<usize>()
            })
        });
        g.bench_with_input(BenchmarkId::new("linfa", n), &data, |b, data| {
            b.iter(|| {
                (2..=8)
                    .map(|k| black_box(linfa_lloyd(data, k, 42)).len())
                    .sum::<usize>()
            })
        });
    }
    g.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
