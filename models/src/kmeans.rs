//! k-means on standardised (log recency, log frequency, log monetary), k picked by the
//! silhouette score in 2..=8, deterministic for a seed; clusters named by value rank.
//! The values of k are fitted in parallel on the silhouette's sample, each from its own
//! seeded k-means++ start; the chosen k's centroids then go through Lloyd's iterations
//! on the whole population (at most 100,000 points).
//! Lloyd's iterations are our own: linfa-clustering's `KMeans` gave the same inertia at
//! 1.4–2.5× the time (BENCHMARKS.md, `cargo bench -p custflow-models --bench kmeans`).

use rayon::prelude::*;
use serde::{Deserialize, Serialize};

use crate::error::{Error, Result};

/// A fitted clustering: standardisation, centroids and names.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct KMeansModel {
    pub mean: [f64; 3],
    pub sd: [f64; 3],
    /// Centroids in standardised space, ordered by value rank (best first).
    pub centroids: Vec<[f64; 3]>,
    /// `v1` is the most valuable cluster, `v2` the next, …
    pub names: Vec<String>,
    pub silhouette: f64,
}

/// The point of one customer: ln(1 + days since last order), ln(1 + frequency),
/// ln(1 + monetary value).
pub fn point(days_since_last: f64, frequency: f64, monetary: f64) -> [f64; 3] {
    [
        days_since_last.max(0.0).ln_1p(),
        frequency.max(0.0).ln_1p(),
        monetary.max(0.0).ln_1p(),
    ]
}

fn dist2(a: &[f64; 3], b: &[f64; 3]) -> f64 {
    (0..3).map(|i| (a[i] - b[i]).powi(2)).sum()
}

/// The index of the centroid nearest to `p` (the first on ties), each distance computed once.
fn nearest(p: &[f64; 3], centroids: &[[f64; 3]]) -> usize {
    let mut best = (0, f64::INFINITY);
    for (i, c) in centroids.iter().enumerate() {
        let d = dist2(p, c);
        if d < best.1 {
            best = (i, d);
        }
    }
    best.0
}

/// SplitMix64: a small deterministic generator, so results do not depend on a crate's RNG.
struct SplitMix(u64);

impl SplitMix {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }
    fn unit(&mut self) -> f64 {
        (self.next() >> 11) as f64 / (1u64 << 53) as f64
    }
}

/// A k-means++ start seeded by (seed, k): the first centroid uniformly, each next one
/// with probability proportional to the squared distance to the nearest chosen so far.
fn kmeans_pp(points: &[[f64; 3]], k: usize, seed: u64) -> Vec<[f64; 3]> {
    let mut rng = SplitMix(seed ^ (k as u64).wrapping_mul(0x9E37_79B9_7F4A_7C15));
    let mut centroids = vec![points[(rng.next() % points.len() as u64) as usize]];
    // Each point's squared distance to its nearest centroid so far.
    let mut d: Vec<f64> = points.iter().map(|p| dist2(p, &centroids[0])).collect();
    while centroids.len() < k {
        let total: f64 = d.iter().sum();
        let mut target = rng.unit() * total;
        let mut pick = points.len() - 1;
        for (i, di) in d.iter().enumerate() {
            target -= di;
            if target <= 0.0 {
                pick = i;
                break;
            }
        }
        let c = points[pick];
        centroids.push(c);
        for (di, p) in d.iter_mut().zip(points) {
            *di = di.min(dist2(p, &c));
        }
    }
    centroids
}

/// Lloyd's algorithm from a k-means++ start seeded by (seed, k); see [`lloyd_from`].
pub fn lloyd(points: &[[f64; 3]], k: usize, seed: u64) -> Vec<[f64; 3]> {
    lloyd_from(points, kmeans_pp(points, k, seed))
}

/// Lloyd's iterations from `centroids`, at most 100 rounds, until the centroids' squared
/// moves sum to at most [`LLOYD_TOL`].
pub fn lloyd_from(points: &[[f64; 3]], mut centroids: Vec<[f64; 3]>) -> Vec<[f64; 3]> {
    let k = centroids.len();
    for _ in 0..100 {
        let mut sums = vec![[0.0; 3]; k];
        let mut counts = vec![0usize; k];
        for p in points {
            let c = nearest(p, &centroids);
            counts[c] += 1;
            (0..3).for_each(|i| sums[c][i] += p[i]);
        }
        let next: Vec<[f64; 3]> = (0..k)
            .map(|c| {
                if counts[c] == 0 {
                    centroids[c]
                } else {
                    sums[c].map(|s| s / counts[c] as f64)
                }
            })
            .collect();
        let moved: f64 = next.iter().zip(&centroids).map(|(a, b)| dist2(a, b)).sum();
        centroids = next;
        if moved <= LLOYD_TOL {
            break;
        }
    }
    centroids
}

/// Mean silhouette of one sample under several labellings at once (`labels[i]` gives
/// k_i clusters).
///
/// A point's silhouette needs its summed distance to every cluster of every labelling.
/// The points are ordered by their labels under all labellings together, so that runs
/// of points ("cells") share one cluster in each: a point's distances are summed over
/// each cell in turn and each cell's sum added once to the cell's cluster in every
/// labelling. Each distance is computed once, and the cells are few (the labellings
/// cut the same data), so the work is that of one labelling.
fn silhouettes(points: &[[f64; 3]], labels: &[(usize, Vec<usize>)]) -> Vec<f64> {
    let n = points.len();
    let t = labels.len();
    // Every labelling's clusters side by side in one row of sums: labelling `s`'s
    // cluster `c` at `offset[s] + c`; `slot[j * t + s]` is point j's under labelling s.
    let mut offset = Vec::with_capacity(t);
    let mut width = 0;
    for (k, _) in labels {
        offset.push(width);
        width += k;
    }
    let slot: Vec<usize> = (0..n)
        .flat_map(|j| labels.iter().zip(&offset).map(move |((_, l), o)| o + l[j]))
        .collect();
    let slots = |j: usize| &slot[j * t..(j + 1) * t];
    // Cluster sizes (a point's own cluster holds it too: its mean is over size − 1).
    let mut size = vec![0usize; width];
    for s in &slot {
        size[*s] += 1;
    }
    // The points in cell order, and where each cell ends.
    let mut order: Vec<usize> = (0..n).collect();
    order.sort_by(|a, b| slots(*a).cmp(slots(*b)));
    let sorted: Vec<[f64; 3]> = order.iter().map(|j| points[*j]).collect();
    let mut cells: Vec<(usize, &[usize])> = Vec::new();
    for (at, j) in order.iter().enumerate() {
        match cells.last_mut() {
            Some((end, s)) if *s == slots(*j) => *end = at + 1,
            _ => cells.push((at + 1, slots(*j))),
        }
    }
    // Per point and labelling: (b − a) / max(a, b) from the mean distances to its own
    // cluster (a) and to the nearest other (b).
    let per_point: Vec<Vec<f64>> = (0..n)
        .into_par_iter()
        .map(|i| {
            let mut sums = vec![0.0; width];
            let p = &points[i];
            let mut start = 0;
            for (end, cell) in &cells {
                // 0 for the point itself.
                let d: f64 = sorted[start..*end].iter().map(|q| dist2(p, q).sqrt()).sum();
                for s in *cell {
                    sums[*s] += d;
                }
                start = *end;
            }
            labels
                .iter()
                .enumerate()
                .map(|(s, (k, _))| {
                    let own = slot[i * t + s];
                    let others = size[own] - 1;
                    if others == 0 {
                        return 0.0;
                    }
                    let a = sums[own] / others as f64;
                    let b = (offset[s]..offset[s] + k)
                        .filter(|c| *c != own && size[*c] > 0)
                        .map(|c| sums[c] / size[c] as f64)
                        .fold(f64::INFINITY, f64::min);
                    if b.is_finite() && a.max(b) > 0.0 {
                        (b - a) / a.max(b)
                    } else {
                        0.0
                    }
                })
                .collect()
        })
        .collect();
    (0..t)
        .map(|s| per_point.iter().map(|v| v[s]).sum::<f64>() / n as f64)
        .collect()
}

/// At most this many points go into Lloyd's iterations (an even stride through the
/// population): centroids of 3-D points are settled long before.
const LLOYD_POINTS: usize = 100_000;

/// Lloyd stops once the centroids' squared moves sum to at most this: scikit-learn's
/// default (`tol=1e-4` times the data's mean variance, which is 1 for standardised
/// points). The last rounds before exact convergence move a few border points and
/// change neither the silhouette's choice of k nor the clusters' names.
const LLOYD_TOL: f64 = 1e-4;

impl KMeansModel {
    /// Fits on raw (log-scale) points; k is chosen on a sample of at most `sample`
    /// points (Lloyd for each k and the silhouettes, which are O(sample²)), and the
    /// chosen clustering refined on all points.
    pub fn fit(raw: &[[f64; 3]], seed: u64, sample: usize) -> Result<Self> {
        if raw.len() < 10 {
            return Err(Error::NotEnoughData(
                "k-means needs at least 10 customers".into(),
            ));
        }
        let n = raw.len() as f64;
        let mean: [f64; 3] = std::array::from_fn(|i| raw.iter().map(|p| p[i]).sum::<f64>() / n);
        let sd: [f64; 3] = std::array::from_fn(|i| {
            let v = raw.iter().map(|p| (p[i] - mean[i]).powi(2)).sum::<f64>() / n;
            if v > 0.0 {
                v.sqrt()
            } else {
                1.0
            }
        });
        let points: Vec<[f64; 3]> = raw
            .iter()
            .map(|p| std::array::from_fn(|i| (p[i] - mean[i]) / sd[i]))
            .collect();
        // At most `n` points, an even stride through the population.
        let stride = |n: usize| -> Vec<[f64; 3]> {
            points
                .iter()
                .step_by(points.len().div_ceil(n.max(2)).max(1))
                .copied()
                .collect()
        };
        let (probe, fit_on) = (stride(sample), stride(LLOYD_POINTS));
        // Every k on the probe (in parallel), then the best silhouette, the smallest k on
        // ties: the same answer whatever the number of threads. Only the chosen k's
        // centroids are then carried to every point (at most LLOYD_POINTS).
        let fitted: Vec<Vec<[f64; 3]>> = (2..=8usize.min(probe.len() - 1))
            .into_par_iter()
            .map(|k| lloyd(&probe, k, seed))
            .collect();
        let labels: Vec<(usize, Vec<usize>)> = fitted
            .iter()
            .map(|c| (c.len(), probe.iter().map(|p| nearest(p, c)).collect()))
            .collect();
        let sil = silhouettes(&probe, &labels);
        let mut best: Option<(f64, Vec<[f64; 3]>)> = None;
        for (s, centroids) in sil.into_iter().zip(fitted) {
            if best.as_ref().is_none_or(|(bs, _)| s > *bs) {
                best = Some((s, centroids));
            }
        }
        let (silhouette, centroids) =
            best.ok_or_else(|| Error::NotEnoughData("no k to try".into()))?;
        let mut centroids = if fit_on.len() > probe.len() {
            lloyd_from(&fit_on, centroids)
        } else {
            centroids
        };
        // Value: recent (low recency), frequent, high spend.
        let value = |c: &[f64; 3]| -c[0] + c[1] + c[2];
        centroids.sort_by(|a, b| value(b).total_cmp(&value(a)));
        let names = (1..=centroids.len()).map(|i| format!("v{i}")).collect();
        Ok(Self {
            mean,
            sd,
            centroids,
            names,
            silhouette,
        })
    }

    /// The name of the cluster a raw point belongs to.
    pub fn assign(&self, raw: &[f64; 3]) -> &str {
        let p: [f64; 3] = std::array::from_fn(|i| (raw[i] - self.mean[i]) / self.sd[i]);
        &self.names[nearest(&p, &self.centroids)]
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn finds_separated_groups_deterministically() {
        let mut rng = SplitMix(7);
        let mut pts = Vec::new();
        for (cx, cy, cz) in [(0.0, 0.0, 0.0), (5.0, 5.0, 5.0), (0.0, 8.0, 1.0)] {
            for _ in 0..60 {
                pts.push([
                    cx + rng.unit() * 0.3,
                    cy + rng.unit() * 0.3,
                    cz + rng.unit() * 0.3,
                ]);
            }
        }
        let m = KMeansModel::fit(&pts, 42, 500).unwrap();
        assert_eq!(m.centroids.len(), 3, "{m:?}");
        assert!(m.silhouette > 0.8);
        assert_eq!(m, KMeansModel::fit(&pts, 42, 500).unwrap());
        // Points of one group share a cluster; different groups do not.
        assert_eq!(m.assign(&pts[0]), m.assign(&pts[59]));
        assert_ne!(m.assign(&pts[0]), m.assign(&pts[60]));
        // (0, 8, 1): recent, frequent → highest value rank.
        assert_eq!(m.assign(&pts[120]), "v1");
    }

    /// The textbook silhouette of one labelling, pair by pair.
    fn silhouette_naive(points: &[[f64; 3]], k: usize, l: &[usize]) -> f64 {
        let n = points.len();
        let mut total = 0.0;
        for i in 0..n {
            let mean_to = |c: usize| {
                let d: Vec<f64> = (0..n)
                    .filter(|j| *j != i && l[*j] == c)
                    .map(|j| dist2(&points[i], &points[j]).sqrt())
                    .collect();
                (!d.is_empty()).then(|| d.iter().sum::<f64>() / d.len() as f64)
            };
            let Some(a) = mean_to(l[i]) else { continue };
            let b = (0..k)
                .filter(|c| *c != l[i])
                .filter_map(mean_to)
                .fold(f64::INFINITY, f64::min);
            if b.is_finite() && a.max(b) > 0.0 {
                total += (b - a) / a.max(b);
            }
        }
        total / n as f64
    }

    #[test]
    fn silhouettes_of_several_labellings_match_the_textbook_one_by_one() {
        let mut rng = SplitMix(3);
        let pts: Vec<[f64; 3]> = (0..120)
            .map(|_| [rng.unit() * 4.0, rng.unit(), rng.unit() * 2.0])
            .collect();
        // Labellings of 2, 3 and 5 clusters, one with an empty cluster and a singleton.
        let mut labels: Vec<(usize, Vec<usize>)> = [2usize, 3, 5]
            .iter()
            .map(|k| {
                (
                    *k,
                    pts.iter()
                        .map(|p| nearest(p, &lloyd(&pts, *k, 9)))
                        .collect(),
                )
            })
            .collect();
        let mut odd: Vec<usize> = (0..pts.len()).map(|i| i % 2).collect();
        odd[7] = 3;
        labels.push((4, odd));
        let got = silhouettes(&pts, &labels);
        assert_eq!(got.len(), labels.len());
        for ((k, l), g) in labels.iter().zip(&got) {
            let want = silhouette_naive(&pts, *k, l);
            assert!((g - want).abs() < 1e-12, "k={k}: {g} vs {want}");
        }
    }
}
