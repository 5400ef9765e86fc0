//! The population model job: refits BG/NBD, Gamma-Gamma, cut-points and k-means on the
//! current feature population (sampled above a size) and stores a new artefact version
//! in Redis when it is champion.
//!
//! Champion rule: the new fit replaces the model in use only when its log-likelihood per
//! customer on the same population beats it by a margin (a failed or degenerate fit never
//! takes over); the first model always does. Every score names the version that made it.
//!
//! Drift: every run also computes the population stability index (PSI) of recency,
//! frequency and monetary value between the model in use's training population and the
//! live one, exported as metrics. When one exceeds the threshold, the refit takes over
//! without the margin (it still must not be worse).

use custflow_feature_store::features::compute;
use custflow_feature_store::keys::{scan_page, Keys};
use custflow_feature_store::state::{day_of, CustomerState};
use custflow_models::artefact::{CustomerStats, ModelArtefact};
use custflow_models::fit::{bgnbd_ll_per_customer, fit_population};
use redis::aio::ConnectionManager;

use crate::error::{Error, Result};
use crate::metrics::Metrics;
use crate::scoring::ModelHandle;

/// What one run of the job did.
#[derive(Debug, Clone, PartialEq)]
pub enum Outcome {
    /// Too few customers with orders to fit.
    NotEnoughData(usize),
    /// A new champion was stored.
    Promoted { version: String, customers: usize },
    /// The new fit was worse than the model in use.
    Kept {
        version: String,
        new_ll: f64,
        current_ll: f64,
    },
}

/// Settings and handles of the job.
pub struct ModelJob {
    pub conn: ConnectionManager,
    pub keys: Keys,
    pub model: ModelHandle,
    pub at_risk_days: f64,
    /// Most customers read per fit.
    pub sample_max: usize,
    pub seed: u64,
    /// A refit takes over only when its BG/NBD log-likelihood per customer beats the
    /// current model's on the same sample by at least this many nats. Every promotion
    /// makes the processors rescore every customer, and the fresh fit is the maximum on
    /// its own sample, so without a margin each refit would win on sampling noise alone
    /// (about parameters / (2 × sample) ≈ 1e-5 here).
    pub min_gain: f64,
    /// A PSI of any model input above this lets a refit take over without `min_gain`.
    pub drift_threshold: f64,
    /// Where the PSI of each input is exported.
    pub metrics: std::sync::Arc<Metrics>,
}

/// The default [`ModelJob::min_gain`].
pub const MIN_GAIN_PER_CUSTOMER: f64 = 1e-4;
/// The default [`ModelJob::drift_threshold`]: the usual reading of a large shift.
pub const DRIFT_THRESHOLD: f64 = 0.25;

impl ModelJob {
    /// Reads up to `sample_max` customer states and their features as of `as_of`.
    async fn population(&self, as_of: i64) -> Result<Vec<CustomerStats>> {
        let mut conn = self.conn.clone();
        let pattern = self.keys.patterns()[0].clone();
        let mut cursor: u64 = 0;
        let mut out = Vec::new();
        loop {
            let (next, keys) = scan_page(&mut conn, cursor, &pattern, 2000).await?;
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
                        out.push(f.stats());
                    }
                }
            }
            cursor = next;
            if cursor == 0 || out.len() >= self.sample_max {
                break;
            }
        }
        out.truncate(self.sample_max);
        Ok(out)
    }

    /// Fits on the population as of `as_of` and promotes the result under the rule above.
    pub async fn run_once(&self, as_of: i64) -> Result<Outcome> {
        let stats = self.population(as_of).await?;
        let drift = self
            .model
            .current()
            .map(|m| custflow_models::drift::psi(&m.drift_reference, &stats))
            .unwrap_or_default();
        self.metrics.set_drift(&drift);
        let drifted = drift.values().any(|p| *p > self.drift_threshold);
        if stats.len() < 10 {
            return Ok(Outcome::NotEnoughData(stats.len()));
        }
        let version = format!("m{}", custflow_schemas::time::now_ms());
        let (seed, v) = (self.seed, version.clone());
        let (fitted, stats) = tokio::task::spawn_blocking(move || {
            let r = fit_population(
                &stats,
                &v,
                custflow_schemas::time::now_ms(),
                i64::from(day_of(as_of)),
                seed,
            );
            (r, stats)
        })
        .await
        .map_err(|e| Error::Config(format!("model fit panicked: {e}")))?;
        let mut artefact = match fitted {
            Ok(a) => a,
            Err(custflow_models::Error::NotEnoughData(_)) => {
                return Ok(Outcome::NotEnoughData(stats.len()))
            }
            Err(e) => return Err(Error::Config(format!("model fit failed: {e}"))),
        };
        let new_ll = bgnbd_ll_per_customer(&artefact.bgnbd.params, &stats);
        if let Some(current) = self.model.current() {
            let current_ll = bgnbd_ll_per_customer(&current.bgnbd.params, &stats);
            // NaN (a failed fit) is never better; drift waives the margin only.
            let needed = if drifted { 0.0 } else { self.min_gain };
            if new_ll.is_nan() || new_ll < current_ll + needed {
                return Ok(Outcome::Kept {
                    version,
                    new_ll,
                    current_ll,
                });
            }
            artefact
                .metrics
                .insert("previous_ll_per_customer".into(), current_ll);
            for (input, psi) in &drift {
                artefact
                    .metrics
                    .insert(format!("psi_at_promotion.{input}"), *psi);
            }
        }
        self.promote(&artefact).await?;
        Ok(Outcome::Promoted {
            version,
            customers: stats.len(),
        })
    }

    /// Stores an artefact and makes it the one in use.
    pub async fn promote(&self, artefact: &ModelArtefact) -> Result<()> {
        let json = serde_json::to_string(artefact).map_err(|e| Error::Config(e.to_string()))?;
        let mut conn = self.conn.clone();
        let () = redis::pipe()
            .atomic()
            .set(self.keys.model(&artefact.version), json)
            .ignore()
            .set(self.keys.model_current(), &artefact.version)
            .ignore()
            .query_async(&mut conn)
            .await?;
        self.model.set(artefact.clone());
        Ok(())
    }
}
