//! Training the churn champion: a small, time-budgeted candidate search in the spirit
//! of AutoML. Candidates are the purchase model's probability of no purchase in the
//! horizon (the BTYD baseline, what is served without a classifier) and its 1 − P(alive)
//! (a reference only) — both always —, logistic regression (linfa-logistic) and
//! gradient-boosted trees (forust); each is Platt-calibrated on one set of customers and
//! judged on another by log-loss (AUC reported beside it). The winner's threshold for
//! retention offers is the one of the highest realised profit.
//!
//! Leakage: [`train_from_transactions`] fits on snapshots whose label window ends by
//! the selection cut-off, and calibrates and selects on the selection cut-off's
//! customers, split in halves by a hash of the id; nothing after `as_of` is used.

use std::collections::BTreeMap;
use std::time::Instant;

use forust_ml::{GradientBooster, Matrix};
use linfa::prelude::*;
use linfa_logistic::LogisticRegression;
use ndarray::{Array1, Array2};
use serde::Serialize;

use super::metrics::{self, CalibrationBin, ProfitPoint};
use super::snapshot::{self, Snapshot, Snapshots};
use super::{
    sigmoid, Btyd, ChurnInput, ChurnModel, Classifier, Node, Offer, Platt, LEAF, N_FEATURES,
};
use crate::error::{Error, Result};
use crate::fit::{fit_transactions, FitOptions};

/// Labelled rows: the input vector, whether the customer churned, and the purchase
/// model's view and 12-month CLV at the snapshot (for the BTYD candidates and targeting).
#[derive(Debug, Clone, Default)]
pub struct Dataset {
    pub x: Vec<[f64; N_FEATURES]>,
    pub churned: Vec<bool>,
    pub btyd: Vec<Btyd>,
    pub clv: Vec<f64>,
}

impl Dataset {
    pub fn push(&mut self, input: &ChurnInput, churned: bool, btyd: Btyd, clv: f64) {
        self.x.push(input.vector());
        self.churned.push(churned);
        self.btyd.push(btyd);
        self.clv.push(clv);
    }

    pub fn len(&self) -> usize {
        self.x.len()
    }

    pub fn is_empty(&self) -> bool {
        self.x.is_empty()
    }

    pub fn churn_rate(&self) -> f64 {
        self.churned.iter().filter(|&&c| c).count() as f64 / self.len().max(1) as f64
    }
}

/// Which half of a selection set a customer falls in (`true`: calibration), stable
/// across runs: FNV-1a of the id, mixed by the SplitMix64 finaliser so short, similar
/// ids still split evenly.
pub fn calibration_half(customer: &str) -> bool {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for b in customer.bytes() {
        h ^= u64::from(b);
        h = h.wrapping_mul(0x0100_0000_01b3);
    }
    h = (h ^ (h >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    h = (h ^ (h >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    (h ^ (h >> 31)) & 1 == 0
}

/// Settings of the search.
#[derive(Debug, Clone, Copy)]
pub struct TrainOptions {
    /// Seconds after which no new candidate starts (the BTYD candidates and the first
    /// logistic regression always run).
    pub budget_secs: f64,
    pub seed: u64,
    pub horizon_days: f64,
    pub offer: Offer,
    pub trained_at_ms: i64,
}

/// One candidate's result on the selection set.
#[derive(Debug, Clone, Serialize)]
pub struct CandidateReport {
    pub name: String,
    pub auc: Option<f64>,
    pub log_loss: f64,
    pub brier: f64,
    pub calibration_error: f64,
    pub fit_seconds: f64,
}

/// How the champion did on one set of customers, beside the BTYD baseline (the purchase
/// model's probability of no purchase in the horizon, uncalibrated: what is served
/// without a classifier) and the purchase model's 1 − P(alive).
#[derive(Debug, Clone, Serialize)]
pub struct Evaluation {
    pub rows: usize,
    pub churn_rate: f64,
    pub auc: Option<f64>,
    pub log_loss: f64,
    pub btyd_auc: Option<f64>,
    pub btyd_log_loss: f64,
    pub one_minus_p_alive_auc: Option<f64>,
    pub calibration: Vec<CalibrationBin>,
    pub calibration_error: f64,
    pub roc: Vec<(f64, f64)>,
    pub btyd_roc: Vec<(f64, f64)>,
    pub profit_curve: Vec<ProfitPoint>,
}

/// The outcome of a search.
#[derive(Debug, Clone, Serialize)]
pub struct TrainReport {
    pub model: ChurnModel,
    pub candidates: Vec<CandidateReport>,
    pub fit_rows: usize,
    pub calibration_rows: usize,
    /// The champion on the selection half (what picked it and its threshold).
    pub selection: Evaluation,
    pub seconds: f64,
}

/// A candidate before calibration.
enum Spec {
    NoPurchase,
    OneMinusPAlive,
    Logistic { alpha: f64 },
    Trees { depth: usize, trees: usize, lr: f32 },
}

impl Spec {
    fn name(&self) -> String {
        match self {
            Spec::NoPurchase => "btyd_no_purchase".into(),
            Spec::OneMinusPAlive => "btyd_one_minus_p_alive".into(),
            Spec::Logistic { alpha } => format!("logistic(l2={alpha})"),
            Spec::Trees { depth, trees, lr } => format!("gbt(depth={depth},trees={trees},lr={lr})"),
        }
    }

    fn fit(&self, d: &Dataset, seed: u64) -> Result<Classifier> {
        match *self {
            Spec::NoPurchase => Ok(Classifier::NoPurchase),
            Spec::OneMinusPAlive => Ok(Classifier::OneMinusPAlive),
            Spec::Logistic { alpha } => logistic(d, alpha),
            Spec::Trees { depth, trees, lr } => boosted(d, depth, trees, lr, seed),
        }
    }
}

fn both_classes(d: &Dataset, what: &str) -> Result<()> {
    let churned = d.churned.iter().filter(|&&c| c).count();
    if churned == 0 || churned == d.len() {
        return Err(Error::NotEnoughData(format!(
            "the {what} set ({} rows) needs churned and retained customers",
            d.len()
        )));
    }
    Ok(())
}

/// Rows a logistic regression is fitted on, at most: eleven coefficients are pinned
/// down long before, and L-BFGS over a million rows costs half a minute here.
const LOGISTIC_ROWS: usize = 200_000;

/// Logistic regression on standardised inputs (linfa-logistic, L-BFGS), on an even
/// stride of at most [`LOGISTIC_ROWS`] rows.
pub fn logistic(all: &Dataset, alpha: f64) -> Result<Classifier> {
    let stride = all.len().div_ceil(LOGISTIC_ROWS).max(1);
    let sampled;
    let d = if stride == 1 {
        all
    } else {
        let mut s = Dataset::default();
        for i in (0..all.len()).step_by(stride) {
            s.x.push(all.x[i]);
            s.churned.push(all.churned[i]);
        }
        sampled = s;
        &sampled
    };
    let n = d.len() as f64;
    let mut mean = vec![0.0; N_FEATURES];
    let mut scale = vec![0.0; N_FEATURES];
    for row in &d.x {
        for (m, v) in mean.iter_mut().zip(row) {
            *m += v / n;
        }
    }
    for row in &d.x {
        for ((s, v), m) in scale.iter_mut().zip(row).zip(&mean) {
            *s += (v - m).powi(2) / n;
        }
    }
    for s in &mut scale {
        *s = if *s > 1e-12 { s.sqrt() } else { 1.0 };
    }
    let x = Array2::from_shape_fn((d.len(), N_FEATURES), |(i, j)| {
        (d.x[i][j] - mean[j]) / scale[j]
    });
    let y = Array1::from_vec(d.churned.clone());
    let fitted = LogisticRegression::default()
        .alpha(alpha)
        .max_iterations(200)
        .fit(&linfa::Dataset::new(x, y))
        .map_err(|e| Error::NoConvergence(format!("logistic regression: {e}")))?;
    // linfa's probability is of its "positive" class, whichever label that is.
    let sign = if fitted.labels().pos.class { 1.0 } else { -1.0 };
    Ok(Classifier::Logistic {
        mean,
        scale,
        coef: fitted.params().iter().map(|c| sign * c).collect(),
        intercept: sign * fitted.intercept(),
    })
}

/// Gradient-boosted trees on log-loss (forust), copied into compact nodes.
pub fn boosted(d: &Dataset, depth: usize, trees: usize, lr: f32, seed: u64) -> Result<Classifier> {
    let rows = d.len();
    let mut columns = Vec::with_capacity(rows * N_FEATURES);
    for j in 0..N_FEATURES {
        columns.extend(d.x.iter().map(|r| r[j]));
    }
    let y: Vec<f64> = d.churned.iter().map(|&c| f64::from(u8::from(c))).collect();
    let mut booster = GradientBooster::default()
        .set_iterations(trees)
        .set_learning_rate(lr)
        .set_max_depth(depth)
        .set_min_leaf_weight(1.0)
        .set_seed(seed)
        .set_parallel(true);
    booster
        .fit_unweighted(&Matrix::new(&columns, rows, N_FEATURES), &y, None)
        .map_err(|e| Error::NoConvergence(format!("gradient boosting: {e}")))?;
    let trees = booster
        .trees
        .iter()
        .map(|t| {
            t.nodes
                .iter()
                .map(|n| {
                    if n.is_leaf {
                        Node(LEAF, 0.0, 0, 0, 0, f64::from(n.weight_value))
                    } else {
                        Node(
                            n.split_feature as u32,
                            n.split_value,
                            n.left_child as u32,
                            n.right_child as u32,
                            n.missing_node as u32,
                            0.0,
                        )
                    }
                })
                .collect()
        })
        .collect();
    Ok(Classifier::Trees {
        base: booster.base_score,
        trees,
    })
}

/// Platt scaling fitted by Newton's method with step halving on the log-loss, with
/// Platt's smoothed targets so a separable set does not run off to infinity.
pub fn fit_platt(raw: &[f64], churned: &[bool]) -> Platt {
    let pos = churned.iter().filter(|&&c| c).count() as f64;
    let neg = churned.len() as f64 - pos;
    let (hi, lo) = ((pos + 1.0) / (pos + 2.0), 1.0 / (neg + 2.0));
    let target = |y: bool| if y { hi } else { lo };
    let loss = |a: f64, b: f64| -> f64 {
        raw.iter()
            .zip(churned)
            .map(|(&s, &y)| {
                let z = a * s + b;
                let t = target(y);
                // −[t ln σ(z) + (1 − t) ln(1 − σ(z))], stable for large |z|.
                z.max(0.0) - t * z + (-z.abs()).exp().ln_1p()
            })
            .sum()
    };
    let (mut a, mut b) = (1.0, 0.0);
    let mut current = loss(a, b);
    for _ in 0..100 {
        let (mut ga, mut gb, mut haa, mut hab, mut hbb) = (0.0, 0.0, 1e-9, 0.0, 1e-9);
        for (&s, &y) in raw.iter().zip(churned) {
            let p = sigmoid(a * s + b);
            let w = (p * (1.0 - p)).max(1e-12);
            ga += (p - target(y)) * s;
            gb += p - target(y);
            haa += w * s * s;
            hab += w * s;
            hbb += w;
        }
        let det = haa * hbb - hab * hab;
        if det.abs() < 1e-18 {
            break;
        }
        let (da, db) = ((hbb * ga - hab * gb) / det, (haa * gb - hab * ga) / det);
        let mut step = 1.0;
        let mut improved = false;
        while step > 1e-6 {
            let (na, nb) = (a - step * da, b - step * db);
            let l = loss(na, nb);
            if l.is_finite() && l <= current {
                (a, b, current, improved) = (na, nb, l, true);
                break;
            }
            step /= 2.0;
        }
        if !improved || (step * da).abs() < 1e-10 && (step * db).abs() < 1e-10 {
            break;
        }
    }
    Platt { a, b }
}

fn raw_scores(c: &Classifier, d: &Dataset) -> Vec<f64> {
    d.x.iter().zip(&d.btyd).map(|(x, &b)| c.raw(x, b)).collect()
}

/// Calibrated churn probabilities of every row.
fn probabilities(c: &Classifier, calibration: Platt, d: &Dataset) -> Vec<f64> {
    raw_scores(c, d)
        .into_iter()
        .map(|s| calibration.apply(s))
        .collect()
}

/// The champion (or any model) on a labelled set, beside the BTYD baseline.
pub fn evaluate(model: &ChurnModel, d: &Dataset) -> Evaluation {
    let p = probabilities(&model.classifier, model.calibration, d);
    let btyd: Vec<f64> = d.btyd.iter().map(|b| b.no_purchase).collect();
    let dead: Vec<f64> = d.btyd.iter().map(|b| 1.0 - b.p_alive).collect();
    let calibration = metrics::calibration(&p, &d.churned, 10);
    Evaluation {
        rows: d.len(),
        churn_rate: d.churn_rate(),
        auc: metrics::auc(&p, &d.churned),
        log_loss: metrics::log_loss(&p, &d.churned),
        btyd_auc: metrics::auc(&btyd, &d.churned),
        btyd_log_loss: metrics::log_loss(&btyd, &d.churned),
        one_minus_p_alive_auc: metrics::auc(&dead, &d.churned),
        calibration_error: metrics::calibration_error(&calibration),
        calibration,
        roc: metrics::roc(&p, &d.churned, 50),
        btyd_roc: metrics::roc(&btyd, &d.churned, 50),
        profit_curve: metrics::profit_curve(&p, &d.churned, &d.clv, model.offer),
    }
}

/// Fits every candidate the budget allows on `fit`, calibrates each on `calibrate`,
/// keeps the lowest log-loss on `select` and sets its retention threshold there.
pub fn train(
    fit: &Dataset,
    calibrate: &Dataset,
    select: &Dataset,
    o: &TrainOptions,
) -> Result<TrainReport> {
    both_classes(fit, "fit")?;
    both_classes(calibrate, "calibration")?;
    both_classes(select, "selection")?;
    let started = Instant::now();
    let specs = [
        Spec::NoPurchase,
        Spec::OneMinusPAlive,
        Spec::Logistic { alpha: 1.0 },
        Spec::Trees {
            depth: 3,
            trees: 60,
            lr: 0.15,
        },
        Spec::Trees {
            depth: 5,
            trees: 60,
            lr: 0.1,
        },
        Spec::Logistic { alpha: 100.0 },
        Spec::Trees {
            depth: 4,
            trees: 120,
            lr: 0.05,
        },
    ];
    let mut candidates = Vec::new();
    let mut best: Option<(f64, ChurnModel)> = None;
    for (k, spec) in specs.iter().enumerate() {
        if k >= 3 && started.elapsed().as_secs_f64() > o.budget_secs {
            break;
        }
        let t = Instant::now();
        let classifier = spec.fit(fit, o.seed)?;
        let fit_seconds = t.elapsed().as_secs_f64();
        let calibration = fit_platt(&raw_scores(&classifier, calibrate), &calibrate.churned);
        let p = probabilities(&classifier, calibration, select);
        let table = metrics::calibration(&p, &select.churned, 10);
        let report = CandidateReport {
            name: spec.name(),
            auc: metrics::auc(&p, &select.churned),
            log_loss: metrics::log_loss(&p, &select.churned),
            brier: metrics::brier(&p, &select.churned),
            calibration_error: metrics::calibration_error(&table),
            fit_seconds,
        };
        if best.as_ref().is_none_or(|(ll, _)| report.log_loss < *ll) {
            let model = ChurnModel {
                name: report.name.clone(),
                trained_at_ms: o.trained_at_ms,
                horizon_days: o.horizon_days,
                classifier,
                calibration,
                offer: o.offer,
                threshold: 1.0,
                metrics: BTreeMap::new(),
            };
            best = Some((report.log_loss, model));
        }
        candidates.push(report);
    }
    let Some((_, mut model)) = best else {
        return Err(Error::NotEnoughData("no candidate was fitted".into()));
    };
    let selection = evaluate(&model, select);
    model.threshold = metrics::best_threshold(&selection.profit_curve);
    for c in &candidates {
        model
            .metrics
            .insert(format!("log_loss.{}", c.name), c.log_loss);
        if let Some(a) = c.auc {
            model.metrics.insert(format!("auc.{}", c.name), a);
        }
    }
    if let Some(a) = selection.auc {
        model.metrics.insert("auc".into(), a);
    }
    model.metrics.insert("log_loss".into(), selection.log_loss);
    model
        .metrics
        .insert("calibration_error".into(), selection.calibration_error);
    Ok(TrainReport {
        model,
        candidates,
        fit_rows: fit.len(),
        calibration_rows: calibrate.len(),
        selection,
        seconds: started.elapsed().as_secs_f64(),
    })
}

/// How to cut transactions into training sets.
#[derive(Debug, Clone, Copy)]
pub struct SnapshotPlan {
    /// Nothing after this day is used.
    pub as_of_day: i64,
    pub horizon_days: i64,
    /// Days between cut-offs.
    pub spacing_days: i64,
    /// Cut-offs before the selection cut-off, at most.
    pub fit_cutoffs: usize,
}

/// The BTYD models fitted on the transactions up to a cut-off, serving churn over
/// `horizon_days`.
fn btyd_at(
    tx: &[(String, i64, f64)],
    day: i64,
    horizon_days: f64,
    seed: u64,
) -> Result<crate::artefact::ModelArtefact> {
    let opts = FitOptions {
        calibration_end_day: day,
        holdout_end_day: None,
        unit_days: 1.0,
        version: format!("churn-btyd-{day}"),
        created_at_ms: 0,
        seed,
        pareto: false,
        churn_horizon_days: horizon_days,
    };
    let tx = tx.iter().map(|(c, d, v)| (c, *d, *v)).collect();
    Ok(fit_transactions(&tx, &opts)?.artefact)
}

/// Rows of snapshots labelled by `label` (a row it gives `None` is left out), with the
/// purchase model's view (over the artefact's churn horizon) and CLV of `btyd`.
pub fn dataset<'a>(
    s: &'a Snapshots,
    btyd: Option<&crate::artefact::ModelArtefact>,
    label: impl Fn(&'a str, &Snapshot) -> Option<bool>,
) -> Dataset {
    let mut d = Dataset::default();
    for r in &s.rows {
        let id = s
            .customers
            .get(r.customer as usize)
            .map_or("", String::as_str);
        if let Some(churned) = label(id, r) {
            let (view, clv) = btyd.map_or((Btyd::default(), 0.0), |m| {
                let stats = r.input.stats();
                (m.btyd(&stats, m.churn_horizon_days), m.value(&stats).3)
            });
            d.push(&r.input, churned, view, clv);
        }
    }
    d
}

/// The selection cut-off and the fit cut-offs of a plan.
pub fn plan_cutoffs(first_day: i64, p: &SnapshotPlan) -> (i64, Vec<i64>) {
    let select = p.as_of_day - p.horizon_days;
    let fit = snapshot::cutoffs(
        first_day,
        select,
        p.horizon_days,
        p.spacing_days,
        p.fit_cutoffs,
    );
    (select, fit)
}

/// Snapshots, datasets and the search, from `(customer, day, value)` transactions.
pub fn train_from_transactions(
    tx: &[(String, i64, f64)],
    plan: &SnapshotPlan,
    o: &TrainOptions,
) -> Result<TrainReport> {
    // Later transactions are never looked at: every label window ends by the as-of day,
    // and the BTYD fit and the features stop at their cut-off.
    let first_day = tx
        .iter()
        .map(|t| t.1)
        .filter(|&d| d <= plan.as_of_day)
        .min()
        .ok_or_else(|| Error::NotEnoughData("no transactions up to the as-of day".into()))?;
    let (select_day, fit_days) = plan_cutoffs(first_day, plan);
    if fit_days.is_empty() {
        return Err(Error::NotEnoughData(format!(
            "the transactions span too little time for a {}-day horizon: they need at least two horizons and a spacing before the as-of day",
            plan.horizon_days
        )));
    }
    let mut cut = fit_days.clone();
    cut.push(select_day);
    let snaps = snapshot::snapshots(tx, &cut, plan.horizon_days, plan.as_of_day)?;
    let btyd = btyd_at(tx, select_day, o.horizon_days, o.seed)?;
    let fit = dataset(&snaps, None, |_, r| {
        (r.cutoff_day != select_day).then_some(r.churned)
    });
    let calibrate = dataset(&snaps, Some(&btyd), |id, r| {
        (r.cutoff_day == select_day && calibration_half(id)).then_some(r.churned)
    });
    let select = dataset(&snaps, Some(&btyd), |id, r| {
        (r.cutoff_day == select_day && !calibration_half(id)).then_some(r.churned)
    });
    train(&fit, &calibrate, &select, o)
}

/// Labelled rows of every customer as of `day` (labels from `churned`), with the
/// purchase model's view over `horizon_days` and CLV from BTYD models fitted on the
/// transactions up to `day`: the set a trained model is judged on (a later holdout, or
/// the generator's ground truth).
pub fn evaluation_set(
    tx: &[(String, i64, f64)],
    day: i64,
    horizon_days: f64,
    seed: u64,
    churned: impl Fn(&str) -> Option<bool>,
) -> Result<Dataset> {
    let snaps = snapshot::features_at(tx, day);
    let btyd = btyd_at(tx, day, horizon_days, seed)?;
    Ok(dataset(&snaps, Some(&btyd), |id, _| churned(id)))
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand::{Rng, SeedableRng};

    /// Customers with a hidden churn flag that shows in their features: churners have
    /// not bought for long, stayers bought recently.
    fn synthetic(n: usize, seed: u64) -> Dataset {
        let mut rng = rand::rngs::StdRng::seed_from_u64(seed);
        let mut d = Dataset::default();
        for _ in 0..n {
            let churned = rng.gen_bool(0.4);
            let since: f64 = if churned {
                rng.gen_range(20.0..200.0)
            } else {
                rng.gen_range(0.0..60.0)
            };
            let freq = f64::from(rng.gen_range(0..10u8));
            let input = ChurnInput {
                frequency: freq,
                recency_days: 100.0,
                age_days: 100.0 + since,
                monetary_value: 20.0,
                orders_total: freq + 1.0,
                spend_total: 20.0 * (freq + 1.0),
                orders_30d: if since < 30.0 { 1.0 } else { 0.0 },
                orders_90d: if since < 90.0 { 1.0 } else { 0.0 },
                spend_90d: 0.0,
            };
            let p_alive = 1.0 / (1.0 + since / 50.0);
            let btyd = Btyd {
                p_alive,
                no_purchase: 1.0 - p_alive * 0.6,
            };
            d.push(&input, churned, btyd, 50.0);
        }
        d
    }

    #[test]
    fn platt_recovers_a_known_scaling() {
        let mut rng = rand::rngs::StdRng::seed_from_u64(1);
        let raw: Vec<f64> = (0..20_000).map(|_| rng.gen_range(-4.0..4.0)).collect();
        let y: Vec<bool> = raw
            .iter()
            .map(|&s| rng.gen_bool(sigmoid(2.0 * s - 1.0)))
            .collect();
        let p = fit_platt(&raw, &y);
        assert!((p.a - 2.0).abs() < 0.1 && (p.b + 1.0).abs() < 0.1, "{p:?}");
    }

    #[test]
    fn platt_survives_saturated_scores() {
        // Most scores pinned at the clamp, as BG/NBD's 1 − P(alive) = 0 gives.
        let mut raw = vec![super::super::logit(0.0); 500];
        raw.extend((0..500).map(|i| f64::from(i) / 100.0 - 2.5));
        let y: Vec<bool> = (0..1000).map(|i| i % 3 != 0).collect();
        let p = fit_platt(&raw, &y);
        let probs: Vec<f64> = raw.iter().map(|&s| p.apply(s)).collect();
        let rate = y.iter().filter(|&&c| c).count() as f64 / 1000.0;
        // No worse than predicting the base rate for everyone.
        let base = metrics::log_loss(&vec![rate; 1000], &y);
        assert!(metrics::log_loss(&probs, &y) <= base + 1e-9, "{p:?}");
    }

    #[test]
    fn halves_split_evenly() {
        let n = (0..10_000)
            .filter(|i| calibration_half(&format!("{i}")))
            .count();
        assert!((4_800..=5_200).contains(&n), "{n}");
    }

    #[test]
    fn search_beats_chance_calibrates_and_names_its_champion() {
        let (fit, cal, sel) = (synthetic(4000, 1), synthetic(2000, 2), synthetic(2000, 3));
        let o = TrainOptions {
            budget_secs: 60.0,
            seed: 7,
            horizon_days: 90.0,
            offer: Offer::default(),
            trained_at_ms: 0,
        };
        let r = train(&fit, &cal, &sel, &o).unwrap();
        assert_eq!(r.candidates.len(), 7);
        assert_eq!(r.candidates[0].name, "btyd_no_purchase");
        assert_eq!(r.candidates[1].name, "btyd_one_minus_p_alive");
        let best = r
            .candidates
            .iter()
            .map(|c| c.log_loss)
            .fold(f64::INFINITY, f64::min);
        assert_eq!(r.model.metrics["log_loss"], best);
        assert!(r.candidates.iter().any(|c| c.name == r.model.name));
        assert!(r.selection.auc.unwrap() > 0.85, "{:?}", r.selection.auc);
        assert!(
            r.selection.calibration_error < 0.05,
            "{}",
            r.selection.calibration_error
        );
        // Every candidate's served probability equals what the report measured.
        let served: Vec<f64> = sel
            .x
            .iter()
            .zip(&sel.btyd)
            .map(|(x, &b)| r.model.calibration.apply(r.model.classifier.raw(x, b)))
            .collect();
        assert!(
            (metrics::log_loss(&served, &sel.churned) - r.model.metrics["log_loss"]).abs() < 1e-9
        );
        // The artefact survives JSON.
        let back: ChurnModel =
            serde_json::from_str(&serde_json::to_string(&r.model).unwrap()).unwrap();
        assert_eq!(
            back.classifier.raw(&sel.x[0], sel.btyd[0]),
            r.model.classifier.raw(&sel.x[0], sel.btyd[0])
        );
    }

    #[test]
    fn a_one_class_set_is_refused() {
        let mut d = synthetic(100, 1);
        d.churned.iter_mut().for_each(|c| *c = false);
        let o = TrainOptions {
            budget_secs: 1.0,
            seed: 1,
            horizon_days: 90.0,
            offer: Offer::default(),
            trained_at_ms: 0,
        };
        let e = train(&d, &synthetic(100, 2), &synthetic(100, 3), &o).unwrap_err();
        assert!(e.to_string().contains("fit set"), "{e}");
    }

    #[test]
    fn logistic_sign_follows_the_churned_class() {
        let d = synthetic(2000, 5);
        let c = logistic(&d, 1.0).unwrap();
        let p: Vec<f64> = raw_scores(&c, &d).into_iter().map(sigmoid).collect();
        assert!(metrics::auc(&p, &d.churned).unwrap() > 0.85);
    }
}
