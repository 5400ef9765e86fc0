//! Fitting every model on a calibration period, scoring a holdout period, picking the
//! champion and building the artefact.
//!
//! Champion rule: with a holdout period, the purchase model with the lower mean
//! absolute error of per-customer repeat purchases in the holdout wins, and BG/NBD keeps
//! the title unless Pareto/NBD is better by more than 1%; without a holdout, the higher
//! log-likelihood wins under the same 1% margin (on |LL|). A model that failed to fit
//! never wins.

use std::collections::{BTreeMap, HashMap};

use rayon::prelude::*;
use serde::Serialize;

use crate::artefact::{Champion, CustomerStats, ModelArtefact, TrainingWindow};
use crate::bgnbd::BgNbd;
use crate::clv::{clv_of, ClvSettings, PurchaseModel};
use crate::error::{Error, Result};
use crate::gamma_gamma::GammaGamma;
use crate::input::Transactions;
use crate::kmeans::{self, KMeansModel};
use crate::pareto::ParetoNbd;
use crate::rfm::{RfmCuts, TierCuts};
use crate::summary::{compress, is_purchase_day, summarise_transactions, Summary, SummaryRow};

/// What to fit on.
#[derive(Debug, Clone)]
pub struct FitOptions {
    /// Last day (days since 1970-01-01) of the calibration period, inclusive.
    pub calibration_end_day: i64,
    /// Last day of the holdout period, inclusive.
    pub holdout_end_day: Option<i64>,
    /// Time unit of the fitted parameters in days (1 or 7).
    pub unit_days: f64,
    pub version: String,
    pub created_at_ms: i64,
    pub seed: u64,
    /// Fit Pareto/NBD as a challenger too (slower than BG/NBD).
    pub pareto: bool,
    /// Days ahead that the served churn probability speaks of.
    pub churn_horizon_days: f64,
}

/// Holdout error of one purchase model.
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
pub struct HoldoutError {
    /// Mean absolute error of per-customer repeat purchase days.
    pub mae: f64,
    pub rmse: f64,
    pub predicted_total: f64,
    pub actual_total: f64,
}

/// The outcome of [`fit_transactions`].
#[derive(Debug, Clone)]
pub struct FitOutcome {
    pub artefact: ModelArtefact,
    pub holdout: BTreeMap<&'static str, HoldoutError>,
    pub summary: Summary,
}

/// Fits BG/NBD (+ Pareto/NBD), Gamma-Gamma, RFM cut-points, tiers and k-means on
/// `(customer, day, value)` transactions.
pub fn fit_transactions(tx: &Transactions, opts: &FitOptions) -> Result<FitOutcome> {
    let u = opts.unit_days;
    let cal_end = opts.calibration_end_day;
    let summary = summarise_transactions(tx, cal_end, u);
    if summary.len() < 10 {
        return Err(Error::NotEnoughData(format!(
            "{} customers before the calibration end",
            summary.len()
        )));
    }
    let rows: Vec<SummaryRow> = summary.values().copied().collect();
    // Each fit starts as soon as its input is ready: the purchase models on the
    // distinct rows, Gamma-Gamma on (x, m), k-means on the RFM points, beside the
    // population's statistics and cut-points (customers as of the calibration end).
    let ((bgnbd, pareto), ((gg, kmeans), (stats, rfm))) = rayon::join(
        || {
            let weighted = compress(&rows);
            rayon::join(
                || BgNbd::fit(&weighted),
                || {
                    opts.pareto
                        .then(|| ParetoNbd::fit(&weighted).ok())
                        .flatten()
                },
            )
        },
        || {
            let stats: Vec<CustomerStats> = rows.iter().map(|r| r.stats(u)).collect();
            let (rfm, points) = population_cuts(stats.iter());
            let xm: Vec<(f64, f64)> = rows.iter().map(|r| (r.x, r.m)).collect();
            (
                rayon::join(
                    || GammaGamma::fit(&xm),
                    || KMeansModel::fit(&points, opts.seed, 1500).ok(),
                ),
                (stats, rfm),
            )
        },
    );
    let (bgnbd, gg) = (bgnbd?, gg?);

    let mut metrics = BTreeMap::new();
    metrics.insert("log_likelihood.bgnbd".to_owned(), bgnbd.log_likelihood);
    if let Some(p) = &pareto {
        metrics.insert("log_likelihood.pareto_nbd".to_owned(), p.log_likelihood);
    }
    let mut holdout = BTreeMap::new();
    if let Some(end) = opts.holdout_end_day {
        let actual = holdout_purchases(tx.iter(), cal_end, end);
        let horizon = (end - cal_end) as f64 / u;
        holdout.insert(
            "bgnbd",
            holdout_error(&bgnbd.params, &summary, &actual, horizon),
        );
        if let Some(p) = &pareto {
            holdout.insert(
                "pareto_nbd",
                holdout_error(&p.params, &summary, &actual, horizon),
            );
        }
        for (name, h) in &holdout {
            metrics.insert(format!("holdout_mae.{name}"), h.mae);
            metrics.insert(format!("holdout_rmse.{name}"), h.rmse);
        }
    }
    let champion = match (&pareto, holdout.get("bgnbd"), holdout.get("pareto_nbd")) {
        (Some(_), Some(b), Some(p)) if p.mae < b.mae * 0.99 => Champion::ParetoNbd,
        (Some(p), None, _)
            if p.log_likelihood > bgnbd.log_likelihood + 0.01 * bgnbd.log_likelihood.abs() =>
        {
            Champion::ParetoNbd
        }
        _ => Champion::Bgnbd,
    };

    let first_day = tx.rows().iter().map(|t| t.1).min().unwrap_or(cal_end);
    let mut artefact = ModelArtefact {
        version: opts.version.clone(),
        created_at_ms: opts.created_at_ms,
        unit_days: u,
        training: TrainingWindow {
            first_day,
            calibration_end_day: cal_end,
            holdout_end_day: opts.holdout_end_day,
            customers: summary.len(),
            transactions: tx.rows().iter().filter(|t| t.1 <= cal_end).count(),
        },
        bgnbd,
        pareto_nbd: pareto,
        gamma_gamma: gg,
        champion,
        clv: ClvSettings::DAYS,
        rfm,
        tiers: TierCuts { p20: 0.0, p80: 0.0 },
        kmeans,
        metrics,
        drift_reference: crate::drift::references(&stats),
        churn: None,
        churn_horizon_days: opts.churn_horizon_days,
    };
    artefact.tiers = tier_cuts(&artefact, &stats);
    Ok(FitOutcome {
        artefact,
        holdout,
        summary,
    })
}

/// Value-tier cut-points of a population scored by the artefact. A customer's CLV is its
/// expected order value times P(alive) times the discounted purchases if alive, which
/// depend on (x, T) alone (13 ₂F₁ evaluations under BG/NBD, a fifth of a whole fit when
/// done per customer): each distinct pair's is computed once, and the rest per customer,
/// in parallel.
fn tier_cuts(artefact: &ModelArtefact, stats: &[CustomerStats]) -> TierCuts {
    let inputs: Vec<(f64, f64, f64)> = stats.iter().map(|s| artefact.btyd_inputs(s)).collect();
    let mut index: HashMap<[u64; 2], usize> = HashMap::new();
    let mut pairs: Vec<(f64, f64)> = Vec::new();
    let pair_of: Vec<usize> = inputs
        .iter()
        .map(|&(x, _, t)| {
            *index.entry([x.to_bits(), t.to_bits()]).or_insert_with(|| {
                pairs.push((x, t));
                pairs.len() - 1
            })
        })
        .collect();
    let if_alive: Vec<f64> = pairs
        .par_iter()
        .with_min_len(64)
        .map(|&(x, t)| artefact.discounted_if_alive(x, t))
        .collect();
    let clv: Vec<f64> = (stats, inputs, pair_of)
        .into_par_iter()
        .with_min_len(1024)
        .map(|(s, inputs, pair)| {
            clv_of(
                artefact.expected_aov(s),
                artefact.p_alive(inputs) * if_alive[pair],
            )
        })
        .collect();
    TierCuts::from_population(clv)
}

/// Fits on a live population (features of every customer as of now, time in days):
/// BG/NBD, Gamma-Gamma, RFM cut-points, tiers and k-means. No holdout, so the champion
/// is BG/NBD.
pub fn fit_population(
    stats: &[CustomerStats],
    version: &str,
    created_at_ms: i64,
    as_of_day: i64,
    seed: u64,
) -> Result<ModelArtefact> {
    let buyers: Vec<&CustomerStats> = stats.iter().filter(|s| s.orders_total > 0.0).collect();
    if buyers.len() < 10 {
        return Err(Error::NotEnoughData(format!(
            "{} customers with orders",
            buyers.len()
        )));
    }
    let rows: Vec<SummaryRow> = buyers
        .iter()
        .map(|s| SummaryRow::of_stats(s, 1.0))
        .collect();
    let (rfm, points) = population_cuts(buyers.iter().map(|s| &**s));
    let xm: Vec<(f64, f64)> = rows.iter().map(|r| (r.x, r.m)).collect();
    let (bgnbd, (gg, kmeans)) = rayon::join(
        || BgNbd::fit(&compress(&rows)),
        || {
            rayon::join(
                || GammaGamma::fit(&xm),
                || KMeansModel::fit(&points, seed, 1500).ok(),
            )
        },
    );
    let (bgnbd, gg) = (bgnbd?, gg?);
    let mut metrics = BTreeMap::new();
    metrics.insert("log_likelihood.bgnbd".to_owned(), bgnbd.log_likelihood);
    metrics.insert(
        "log_likelihood_per_customer.bgnbd".to_owned(),
        bgnbd.log_likelihood / rows.len() as f64,
    );
    let owned: Vec<CustomerStats> = buyers.iter().map(|s| **s).collect();
    let mut artefact = ModelArtefact {
        version: version.to_owned(),
        created_at_ms,
        unit_days: 1.0,
        training: TrainingWindow {
            first_day: as_of_day - buyers.iter().map(|s| s.age_days as i64).max().unwrap_or(0),
            calibration_end_day: as_of_day,
            holdout_end_day: None,
            customers: buyers.len(),
            transactions: buyers.iter().map(|s| s.orders_total as usize).sum(),
        },
        bgnbd,
        pareto_nbd: None,
        gamma_gamma: gg,
        champion: Champion::Bgnbd,
        clv: ClvSettings::DAYS,
        rfm,
        tiers: TierCuts { p20: 0.0, p80: 0.0 },
        kmeans,
        metrics,
        drift_reference: crate::drift::references(&owned),
        churn: None,
        churn_horizon_days: crate::artefact::DEFAULT_CHURN_HORIZON_DAYS,
    };
    artefact.tiers = tier_cuts(&artefact, &owned);
    Ok(artefact)
}

/// RFM percentiles and k-means points of a population.
fn population_cuts<'a>(stats: impl Iterator<Item = &'a CustomerStats>) -> (RfmCuts, Vec<[f64; 3]>) {
    let (mut rows, mut points) = (Vec::new(), Vec::new());
    for s in stats {
        let days_since_last = s.age_days - s.recency_days;
        rows.push((days_since_last, s.orders_total, s.spend_total));
        points.push(kmeans::point(
            days_since_last,
            s.frequency,
            s.monetary_value,
        ));
    }
    (RfmCuts::from_population(&rows), points)
}

/// Purchase days per customer in (cal_end, end] (days netted, refunded days not counted).
pub fn holdout_purchases<'a>(
    tx: impl IntoIterator<Item = (&'a str, i64, f64)>,
    cal_end: i64,
    end: i64,
) -> HashMap<&'a str, f64> {
    let mut days: HashMap<(&str, i64), (f64, bool)> = HashMap::new();
    for (c, d, v) in tx.into_iter().filter(|t| t.1 > cal_end && t.1 <= end) {
        let e = days.entry((c, d)).or_insert((0.0, false));
        e.0 += v;
        e.1 |= v < 0.0;
    }
    let mut out: HashMap<&str, f64> = HashMap::new();
    for ((c, _), (net, refunded)) in days {
        if is_purchase_day(net, refunded) {
            *out.entry(c).or_insert(0.0) += 1.0;
        }
    }
    out
}

fn holdout_error(
    model: &impl PurchaseModel,
    summary: &Summary,
    actual: &HashMap<&str, f64>,
    horizon: f64,
) -> HoldoutError {
    let (mut abs, mut sq, mut pred_total, mut act_total) = (0.0, 0.0, 0.0, 0.0);
    for (c, r) in summary {
        let p = model.expected(horizon, r.x, r.t_x, r.t);
        let a = actual.get(c.as_str()).copied().unwrap_or(0.0);
        abs += (p - a).abs();
        sq += (p - a).powi(2);
        pred_total += p;
        act_total += a;
    }
    let n = summary.len().max(1) as f64;
    HoldoutError {
        mae: abs / n,
        rmse: (sq / n).sqrt(),
        predicted_total: pred_total,
        actual_total: act_total,
    }
}
