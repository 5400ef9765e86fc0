//! The population model job: refits BG/NBD, Gamma-Gamma, cut-points and k-means on the
//! current feature population (sampled above a size) and stores a new artefact version
//! in Redis when it is promoted.
//!
//! Promotion ([`PromotionRule`], docs/models.md): the refit replaces the model in use
//! only with evidence that the population changed — a likelihood-ratio test against the
//! model in use at a stated level, or drift of the inputs (PSI above the threshold) —
//! AND a change in what customers are told above a tolerance (the share whose value
//! tier, RFM segment or retention target changes, or the median relative change of CLV).
//! A failed or worse fit never takes over; the first model always does. Every decision,
//! kept or promoted, is recorded with its reason (`GET /v1/models`). Every score names
//! the version that made it.
//!
//! Drift: every run also computes the population stability index (PSI) of recency,
//! frequency and monetary value between the model in use's training population and the
//! live one, exported as metrics.
//!
//! Churn monitoring: every `every_days` of the clock the job records the churn
//! probability it serves for a sample of customers, with their inputs. Once a record is
//! `horizon` days old its labels have matured (churned = no purchase since), and the
//! job exports the realised AUC and calibration error. Below `min_auc` it refits the
//! churn classifier on that matured record — a point-in-time training set — and
//! promotes an artefact carrying the new champion. A population refit keeps the churn
//! model of the artefact in use.

use custflow_feature_store::conn::{Redis, Scan};
use custflow_feature_store::features::{compute, last_purchase_at};
use custflow_feature_store::keys::Keys;
use custflow_feature_store::model::{record_decision, ModelDecision, ModelError};
use custflow_feature_store::state::{day_of, CustomerState};
use custflow_models::artefact::{CustomerStats, ModelArtefact};
use custflow_models::churn::metrics as churn_metrics;
use custflow_models::churn::train::{calibration_half, train, Dataset, TrainOptions};
use custflow_models::churn::{Btyd, ChurnInput};
use custflow_models::fit::fit_population;
use custflow_models::promotion::{compare, Decision, PromotionRule};
use redis::AsyncCommands;
use serde::{Deserialize, Serialize};

use crate::error::{Error, Result};
use crate::metrics::Metrics;
use crate::scoring::ModelHandle;

/// What one run of the job did.
#[derive(Debug, Clone, PartialEq)]
pub enum Outcome {
    /// The processors are still building the features (`cf:state:ready` is not set: a
    /// new deployment, or a Redis that lost its data): a fit now would see only part of
    /// the population.
    FeaturesNotReady,
    /// Too few customers with orders to fit.
    NotEnoughData(usize),
    /// A new model was stored and is in use.
    Promoted {
        version: String,
        customers: usize,
        decision: Box<ModelDecision>,
    },
    /// The refit was not promoted (`decision.reason` says why).
    Kept { decision: Box<ModelDecision> },
}

/// Settings and handles of the job.
pub struct ModelJob {
    pub conn: Redis,
    pub keys: Keys,
    pub model: ModelHandle,
    pub at_risk_days: f64,
    /// Most customers read per fit.
    pub sample_max: usize,
    pub seed: u64,
    /// When a refit replaces the model in use. Every promotion makes the processors
    /// rescore every customer, so it must change what customers are told.
    pub rule: PromotionRule,
    /// A PSI of any model input above this counts as evidence of change (the refit must
    /// still change the scores materially).
    pub drift_threshold: f64,
    /// Where the PSI of each input is exported.
    pub metrics: std::sync::Arc<Metrics>,
    pub churn: ChurnMonitoring,
}

/// Settings of churn monitoring (see the module docs).
#[derive(Debug, Clone, Copy)]
pub struct ChurnMonitoring {
    /// Days of the clock between recorded prediction snapshots.
    pub every_days: i64,
    /// Customers per snapshot, at most.
    pub sample: usize,
    /// A realised AUC below this refits the churn classifier.
    pub min_auc: f64,
    /// Days ahead that `churn_probability` speaks of in the artefacts this job fits
    /// (the purchase model's probability of no purchase in them) and the label horizon
    /// of its records and churn refits, while the artefact in use has no churn model (a
    /// churn model brings its own).
    pub horizon_days: i64,
}

impl Default for ChurnMonitoring {
    fn default() -> Self {
        Self {
            every_days: 7,
            sample: 5000,
            min_auc: 0.6,
            horizon_days: 90,
        }
    }
}

/// A customer as the job reads them.
struct Member {
    id: String,
    input: ChurnInput,
    last_purchase_day: Option<i64>,
}

/// One customer's served churn prediction.
#[derive(Serialize, Deserialize)]
struct Prediction {
    id: String,
    p: f64,
    p_alive: f64,
    /// The purchase model's probability of no purchase in the horizon (absent in
    /// records made before it was served: 1 − P(alive) stands in).
    #[serde(default)]
    no_purchase: Option<f64>,
    clv: f64,
    input: ChurnInput,
}

/// The predictions recorded on one clock day.
#[derive(Serialize, Deserialize)]
struct PredictionLog {
    day: i64,
    horizon_days: i64,
    model_version: String,
    rows: Vec<Prediction>,
}

/// The realised quality of one matured prediction snapshot.
#[derive(Debug, Clone, PartialEq)]
struct ChurnCheck {
    day: i64,
    predictions: usize,
    auc: Option<f64>,
    calibration_error: f64,
    /// The version promoted with a refitted churn classifier, if the AUC was too low.
    refit: Option<String>,
}

/// Redis failures stay retryable; an unreadable artefact is a configuration problem.
fn model_error(e: ModelError) -> Error {
    match e {
        ModelError::Redis(r) => Error::Redis(r),
        other => Error::Config(other.to_string()),
    }
}

/// The default [`ModelJob::drift_threshold`]: the usual reading of a large shift.
pub const DRIFT_THRESHOLD: f64 = 0.25;

impl ModelJob {
    /// Reads up to `sample_max` customer states and their features as of `as_of`.
    async fn population(&self, as_of: i64) -> Result<Vec<Member>> {
        let mut conn = self.conn.clone();
        let mut scan = Scan::new(&mut conn, &self.keys.features_pattern(), 2000).await?;
        let mut out = Vec::new();
        while let Some(keys) = scan.next_page(&mut conn).await? {
            if !keys.is_empty() {
                let values: Vec<Option<Vec<u8>>> =
                    redis::cmd("MGET").arg(&keys).query_async(&mut conn).await?;
                for (k, v) in keys.iter().zip(values) {
                    let Some(v) = v else { continue };
                    let state = CustomerState::decode(&v).map_err(|e| Error::CorruptState {
                        customer: k.clone(),
                        reason: e.to_string(),
                    })?;
                    let f = compute(&state, as_of, self.at_risk_days);
                    if f.orders_total > 0 {
                        out.push(Member {
                            id: self.keys.customer_of(k).unwrap_or(k).to_owned(),
                            input: f.churn_input(),
                            last_purchase_day: last_purchase_at(&state)
                                .map(|ms| i64::from(day_of(ms))),
                        });
                    }
                }
            }
            if out.len() >= self.sample_max {
                break;
            }
        }
        out.truncate(self.sample_max);
        Ok(out)
    }

    /// Fits on the population as of `as_of` and promotes the result under the rule above.
    /// The model in use is stored again first if Redis lost it, so that scoring and
    /// lookups do not wait for the features to be rebuilt and a refit to win.
    pub async fn run_once(&self, as_of: i64) -> Result<Outcome> {
        let mut conn = self.conn.clone();
        let (ready, stored): (bool, bool) = redis::pipe()
            .exists(self.keys.state_ready())
            .exists(self.keys.model_current())
            .query_async(&mut conn)
            .await?;
        if let (false, Some(model)) = (stored, self.model.current()) {
            tracing::warn!(version = %model.version, "the model in use was missing from Redis (it lost its data): storing it again");
            self.promote(&model).await?;
        }
        if !ready {
            return Ok(Outcome::FeaturesNotReady);
        }
        // What is in use now (a `train-churn --install` may have replaced it since).
        self.model
            .refresh(&mut conn, &self.keys)
            .await
            .map_err(model_error)?;
        let started = std::time::Instant::now();
        let members = self.population(as_of).await?;
        let read_seconds = started.elapsed().as_secs_f64();
        match self.monitor_churn(as_of, &members).await {
            Ok(Some(c)) => tracing::info!(
                day = c.day,
                predictions = c.predictions,
                auc = ?c.auc,
                calibration_error = c.calibration_error,
                refit = ?c.refit,
                "churn predictions matured"
            ),
            Ok(None) => {}
            Err(e) => tracing::warn!(error = %e, "churn monitoring failed"),
        }
        let inputs: Vec<ChurnInput> = members.iter().map(|m| m.input).collect();
        let stats: Vec<CustomerStats> = inputs.iter().map(ChurnInput::stats).collect();
        let current = self.model.current();
        let drift = current
            .as_ref()
            .map(|m| custflow_models::drift::psi(&m.drift_reference, &stats))
            .unwrap_or_default();
        self.metrics.set_drift(&drift);
        let drifted = drift.values().any(|p| *p > self.drift_threshold);
        if stats.len() < 10 {
            return Ok(Outcome::NotEnoughData(stats.len()));
        }
        let version = format!("m{}", custflow_schemas::time::now_ms());
        let (seed, v, rule, cur) = (self.seed, version.clone(), self.rule, current.clone());
        let customers = stats.len();
        let fit_started = std::time::Instant::now();
        let judged = tokio::task::spawn_blocking(move || {
            let fitted = fit_population(
                &stats,
                &v,
                custflow_schemas::time::now_ms(),
                i64::from(day_of(as_of)),
                seed,
            )?;
            // The refit against the model in use, on the same customers as of now.
            let judged = cur.map(|c| {
                let comparison = compare(&c, &fitted, &inputs, drifted);
                (rule.decide(&comparison), comparison)
            });
            Ok::<_, custflow_models::Error>((fitted, judged))
        })
        .await
        .map_err(|e| Error::Config(format!("model fit panicked: {e}")))?;
        let fit_seconds = fit_started.elapsed().as_secs_f64();
        tracing::info!(customers, read_seconds, fit_seconds, "population refit");
        if let Ok(mut r) = self.metrics.model_refit.lock() {
            r.insert("customers", customers as f64);
            r.insert("read_seconds", read_seconds);
            r.insert("fit_seconds", fit_seconds);
        }
        let (mut artefact, judged) = match judged {
            Ok(a) => a,
            Err(custflow_models::Error::NotEnoughData(_)) => {
                return Ok(Outcome::NotEnoughData(customers))
            }
            Err(e) => return Err(Error::Config(format!("model fit failed: {e}"))),
        };
        let (decision, comparison) = match judged {
            Some((d, c)) => (d, Some(c)),
            None => (
                Decision {
                    promote: true,
                    reason: "the deployment's first model".into(),
                },
                None,
            ),
        };
        if let Some(c) = &comparison {
            for (name, value) in [
                ("previous_ll_per_customer", c.ll_current),
                ("promotion.lr_statistic", c.lr_statistic),
                ("promotion.p_value", c.p_value),
                ("promotion.changed_share", c.changed),
                ("promotion.clv_shift", c.clv_shift),
            ] {
                artefact.metrics.insert(name.into(), value);
            }
            for (input, psi) in &drift {
                artefact
                    .metrics
                    .insert(format!("psi_at_promotion.{input}"), *psi);
            }
        }
        let record = ModelDecision {
            version: version.clone(),
            decided_at_ms: custflow_schemas::time::now_ms(),
            promoted: decision.promote,
            reason: decision.reason.clone(),
            previous: current.as_ref().map(|m| m.version.clone()),
            customers,
            metrics: artefact.metrics.clone(),
            comparison,
        };
        Metrics::add(
            if decision.promote {
                &self.metrics.model_promotions
            } else {
                &self.metrics.model_kept
            },
            1,
        );
        if !decision.promote {
            record_decision(&mut conn, &self.keys, &record)
                .await
                .map_err(model_error)?;
            return Ok(Outcome::Kept {
                decision: Box::new(record),
            });
        }
        // Keep the churn model of the artefact in use, as stored now (a `train-churn
        // --install` may have replaced it while this refit ran).
        self.model
            .refresh(&mut conn, &self.keys)
            .await
            .map_err(model_error)?;
        artefact.churn = self.model.current().and_then(|m| m.churn.clone());
        artefact.churn_horizon_days = artefact
            .churn
            .as_ref()
            .map_or(self.churn.horizon_days as f64, |c| c.horizon_days);
        self.promote(&artefact).await?;
        record_decision(&mut conn, &self.keys, &record)
            .await
            .map_err(model_error)?;
        Ok(Outcome::Promoted {
            version,
            customers,
            decision: Box::new(record),
        })
    }

    /// Records today's served churn predictions once per `every_days`, and judges (and
    /// if needed refits on) every record whose labels have matured.
    async fn monitor_churn(&self, as_of: i64, members: &[Member]) -> Result<Option<ChurnCheck>> {
        let Some(model) = self.model.current() else {
            return Ok(None);
        };
        let today = i64::from(day_of(as_of));
        let key = self.keys.churn_predictions();
        let mut conn = self.conn.clone();
        let days: Vec<i64> = conn.hkeys(&key).await?;
        let mut check = None;
        for day in days.iter().copied().filter(|d| *d <= today) {
            let Some(json): Option<String> = conn.hget(&key, day).await? else {
                continue;
            };
            let log: PredictionLog = match serde_json::from_str(&json) {
                Ok(l) => l,
                Err(e) => {
                    tracing::warn!(day, error = %e, "dropping an unreadable churn prediction record");
                    let () = conn.hdel(&key, day).await?;
                    continue;
                }
            };
            if log.day + log.horizon_days > today {
                continue;
            }
            check = Some(self.judge(&log, members, &model).await?);
            let () = conn.hdel(&key, day).await?;
        }
        let newest = days.iter().copied().max();
        if newest.is_none_or(|d| today >= d + self.churn.every_days) {
            let log = PredictionLog {
                day: today,
                horizon_days: model
                    .churn
                    .as_ref()
                    .map_or(self.churn.horizon_days, |c| c.horizon_days.round() as i64),
                model_version: model.version.clone(),
                rows: members
                    .iter()
                    .take(self.churn.sample)
                    .map(|m| {
                        let s = model.score(&m.input);
                        let b = model.btyd(&m.input.stats(), model.churn_horizon_days);
                        Prediction {
                            id: m.id.clone(),
                            p: s.churn_probability,
                            p_alive: s.p_alive,
                            no_purchase: Some(b.no_purchase),
                            clv: s.clv_12m,
                            input: m.input,
                        }
                    })
                    .collect(),
            };
            let json = serde_json::to_string(&log).map_err(|e| Error::Config(e.to_string()))?;
            let _: bool = conn.hset_nx(&key, today, json).await?;
        }
        Ok(check)
    }

    /// Realised AUC and calibration of one matured record; a refit when the AUC is low.
    async fn judge(
        &self,
        log: &PredictionLog,
        members: &[Member],
        model: &ModelArtefact,
    ) -> Result<ChurnCheck> {
        let last: std::collections::HashMap<&str, Option<i64>> = members
            .iter()
            .map(|m| (m.id.as_str(), m.last_purchase_day))
            .collect();
        let mut rows = Vec::new();
        for r in &log.rows {
            // A customer gone from Redis is not judged.
            if let Some(l) = last.get(r.id.as_str()) {
                let bought = l.is_some_and(|d| d > log.day);
                rows.push((r, !bought));
            }
        }
        let p: Vec<f64> = rows.iter().map(|(r, _)| r.p).collect();
        let y: Vec<bool> = rows.iter().map(|(_, c)| *c).collect();
        let auc = churn_metrics::auc(&p, &y);
        let calibration_error =
            churn_metrics::calibration_error(&churn_metrics::calibration(&p, &y, 10));
        if let Ok(mut m) = self.metrics.churn_realised.lock() {
            m.insert("predictions", rows.len() as f64);
            m.insert("calibration_error", calibration_error);
            m.insert(
                "churn_rate",
                y.iter().filter(|c| **c).count() as f64 / y.len().max(1) as f64,
            );
            match auc {
                Some(a) => m.insert("auc", a),
                None => m.remove("auc"),
            };
        }
        let mut refit = None;
        if auc.is_some_and(|a| a < self.churn.min_auc) {
            Metrics::add(&self.metrics.churn_refits, 1);
            match self.refit_churn(log, &rows, model, auc).await {
                Ok(v) => refit = Some(v),
                Err(e) => tracing::warn!(error = %e, "churn refit failed"),
            }
        }
        Ok(ChurnCheck {
            day: log.day,
            predictions: rows.len(),
            auc,
            calibration_error,
            refit,
        })
    }

    /// Trains the churn candidates on a matured record (a quarter of the customers
    /// calibrate, a quarter select) and promotes the artefact in use with the winner.
    async fn refit_churn(
        &self,
        log: &PredictionLog,
        rows: &[(&Prediction, bool)],
        model: &ModelArtefact,
        auc: Option<f64>,
    ) -> Result<String> {
        let (mut fit, mut calibrate, mut select) =
            (Dataset::default(), Dataset::default(), Dataset::default());
        for (r, churned) in rows {
            let target = if !calibration_half(&r.id) {
                &mut fit
            } else if calibration_half(&format!("{}#", r.id)) {
                &mut calibrate
            } else {
                &mut select
            };
            let btyd = Btyd {
                p_alive: r.p_alive,
                no_purchase: r.no_purchase.unwrap_or(1.0 - r.p_alive),
            };
            target.push(&r.input, *churned, btyd, r.clv);
        }
        let o = TrainOptions {
            budget_secs: 20.0,
            seed: self.seed,
            horizon_days: log.horizon_days as f64,
            offer: model.churn.as_ref().map(|c| c.offer).unwrap_or_default(),
            trained_at_ms: custflow_schemas::time::now_ms(),
        };
        let report = tokio::task::spawn_blocking(move || train(&fit, &calibrate, &select, &o))
            .await
            .map_err(|e| Error::Config(format!("churn training panicked: {e}")))?
            .map_err(|e| Error::Config(format!("churn training: {e}")))?;
        let next = model.with_churn(report.model, custflow_schemas::time::now_ms());
        self.promote(&next).await?;
        let record = ModelDecision {
            version: next.version.clone(),
            decided_at_ms: custflow_schemas::time::now_ms(),
            promoted: true,
            reason: format!(
                "churn classifier refitted: realised AUC {} of the predictions of day {} below {}",
                auc.map_or("n/a".into(), |a| format!("{a:.3}")),
                log.day,
                self.churn.min_auc
            ),
            previous: Some(model.version.clone()),
            customers: rows.len(),
            metrics: next.metrics.clone(),
            comparison: None,
        };
        record_decision(&mut self.conn.clone(), &self.keys, &record)
            .await
            .map_err(model_error)?;
        Ok(next.version)
    }

    /// Stores an artefact and makes it the one in use.
    pub async fn promote(&self, artefact: &ModelArtefact) -> Result<()> {
        let mut conn = self.conn.clone();
        self.model
            .promote(&mut conn, &self.keys, artefact)
            .await
            .map_err(model_error)
    }
}
