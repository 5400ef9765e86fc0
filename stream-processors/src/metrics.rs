//! Processor metrics: what a processor counts, and how it is exported to Prometheus.

use std::collections::BTreeMap;
use std::fmt;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Mutex;

pub use custflow_metrics::histogram::Histogram;
use custflow_metrics::{Collector, DescriptorEncoder, Families};

/// Everything a processor counts.
#[derive(Debug, Default)]
pub struct Metrics {
    pub applied: AtomicU64,
    pub duplicates: AtomicU64,
    /// Customers erased, and events skipped because their customer was erased after
    /// they were produced.
    pub erased: AtomicU64,
    pub skipped_erased: AtomicU64,
    /// Tombstones produced on the score topic for erased customers.
    pub tombstones: AtomicU64,
    pub dead_lettered: AtomicU64,
    pub batches: AtomicU64,
    /// Batches applied while the batch before them was being saved (a backlog).
    pub pipelined: AtomicU64,
    pub scores_emitted: AtomicU64,
    pub segment_changes: AtomicU64,
    /// Rescoring passes started by a model change, passes finished, and customers
    /// they rescored.
    pub model_passes: AtomicU64,
    pub model_passes_done: AtomicU64,
    /// Owned input partitions whose rescoring pass (a model's rollout) is still running
    /// (a gauge).
    pub rollout_running: AtomicU64,
    pub model_rescored: AtomicU64,
    /// Customers rescored by the clock sweep (at-risk crossings and the rotation).
    pub clock_rescored: AtomicU64,
    pub redis_write: Histogram,
    /// Event time to feature visible in Redis.
    pub freshness: Histogram,
    /// Consumer lag per (topic, partition).
    pub lag: Mutex<BTreeMap<(String, i32), i64>>,
    /// Population stability index of each model input, live against training.
    pub drift: Mutex<BTreeMap<String, f64>>,
    /// Realised quality of the newest matured churn predictions (`auc`,
    /// `calibration_error`, `predictions`, `churn_rate`).
    pub churn_realised: Mutex<BTreeMap<&'static str, f64>>,
    /// Churn classifier refits started by a low realised AUC.
    pub churn_refits: AtomicU64,
    /// Population refits the model job promoted, and refits it kept out (the rule of
    /// `model_job`).
    pub model_promotions: AtomicU64,
    pub model_kept: AtomicU64,
    /// The newest population refit of the model job: `customers`, `read_seconds`
    /// (their states from Redis), `fit_seconds` (every model, cut-points, k-means).
    pub model_refit: Mutex<BTreeMap<&'static str, f64>>,
    /// Batches retried after Redis or the broker failed.
    pub retries: AtomicU64,
    /// Partitions replayed from the start because Redis lost their state.
    pub state_resets: AtomicU64,
}

impl Metrics {
    pub fn get(c: &AtomicU64) -> u64 {
        c.load(Ordering::Relaxed)
    }

    pub fn add(c: &AtomicU64, n: u64) {
        c.fetch_add(n, Ordering::Relaxed);
    }

    /// Replaces the exported PSI values.
    pub fn set_drift(&self, psi: &BTreeMap<String, f64>) {
        if let Ok(mut d) = self.drift.lock() {
            d.clone_from(psi);
        }
    }

    /// Total lag over all partitions.
    pub fn total_lag(&self) -> i64 {
        self.lag.lock().map(|l| l.values().sum()).unwrap_or(0)
    }
}

impl Collector for Metrics {
    fn encode(&self, e: DescriptorEncoder) -> fmt::Result {
        let mut f = Families::from(e);
        for (name, help, c) in [
            (
                "custflow_events_applied_total",
                "Events applied to customer state",
                &self.applied,
            ),
            (
                "custflow_events_duplicate_total",
                "Re-delivered events skipped",
                &self.duplicates,
            ),
            (
                "custflow_customers_erased_total",
                "Customer erasure requests applied",
                &self.erased,
            ),
            (
                "custflow_events_erased_total",
                "Events skipped because their customer was erased after they were produced",
                &self.skipped_erased,
            ),
            (
                "custflow_score_tombstones_total",
                "Tombstones produced on the score topic for erased customers",
                &self.tombstones,
            ),
            (
                "custflow_events_dead_lettered_total",
                "Events sent to the dead-letter topic",
                &self.dead_lettered,
            ),
            ("custflow_batches_total", "Batches processed", &self.batches),
            (
                "custflow_batches_pipelined_total",
                "Batches applied while the batch before them was being saved",
                &self.pipelined,
            ),
            (
                "custflow_scores_emitted_total",
                "CustomerScore records produced",
                &self.scores_emitted,
            ),
            (
                "custflow_segment_changes_total",
                "SegmentChange records produced",
                &self.segment_changes,
            ),
            (
                "custflow_model_passes_total",
                "Rescoring passes started because a new model became current",
                &self.model_passes,
            ),
            (
                "custflow_model_passes_done_total",
                "Rescoring passes that rescored every customer of this instance's partitions",
                &self.model_passes_done,
            ),
            (
                "custflow_model_rescored_total",
                "Customers rescored by those passes",
                &self.model_rescored,
            ),
            (
                "custflow_model_promotions_total",
                "Population refits promoted to the model in use",
                &self.model_promotions,
            ),
            (
                "custflow_model_kept_total",
                "Population refits not promoted (no evidence of change, or no material change)",
                &self.model_kept,
            ),
            (
                "custflow_clock_rescored_total",
                "Customers rescored by the clock sweep (at-risk crossings, decay rotation)",
                &self.clock_rescored,
            ),
            (
                "custflow_batches_retried_total",
                "Batch attempts that failed on Redis or the broker and were retried",
                &self.retries,
            ),
            (
                "custflow_state_resets_total",
                "Partitions replayed from the start because Redis lost their state",
                &self.state_resets,
            ),
        ] {
            f.counter(name, help, Self::get(c))?;
        }
        f.histogram(
            "custflow_redis_write_seconds",
            "Redis pipeline write latency",
            &self.redis_write,
        )?;
        f.histogram(
            "custflow_freshness_seconds",
            "Event time to feature visible",
            &self.freshness,
        )?;
        if let Ok(lag) = self.lag.lock() {
            f.gauges(
                "custflow_consumer_lag",
                "Messages between the committed offset and the log end (librdkafka's consumer_lag)",
                lag.iter().map(|((topic, p), v)| {
                    ([("topic", topic.clone()), ("partition", p.to_string())], *v)
                }),
            )?;
        }
        f.gauge(
            "custflow_model_rollout_partitions_running",
            "Input partitions of this instance still rolling the model in use out to their customers (0: every customer's latest score names it)",
            Self::get(&self.rollout_running) as f64,
        )?;
        if let Ok(drift) = self.drift.lock() {
            f.gauges(
                "custflow_model_input_psi",
                "Population stability index of a model input, live population against the model's training population",
                drift.iter().map(|(input, v)| ([("input", input.as_str())], *v)),
            )?;
        }
        if let Ok(refit) = self.model_refit.lock() {
            for (key, name, help) in [
                (
                    "customers",
                    "custflow_model_refit_customers",
                    "Customers the newest population refit was fitted on",
                ),
                (
                    "read_seconds",
                    "custflow_model_refit_read_seconds",
                    "Seconds the newest population refit spent reading customer states",
                ),
                (
                    "fit_seconds",
                    "custflow_model_refit_fit_seconds",
                    "Seconds the newest population refit spent fitting",
                ),
            ] {
                if let Some(v) = refit.get(key) {
                    f.gauge(name, help, *v)?;
                }
            }
        }
        if let Ok(churn) = self.churn_realised.lock() {
            for (name, help) in [
                (
                    "custflow_churn_realised_auc",
                    "AUC of matured churn predictions against what customers did",
                ),
                (
                    "custflow_churn_realised_calibration_error",
                    "Expected calibration error of matured churn predictions",
                ),
                (
                    "custflow_churn_realised_predictions",
                    "Churn predictions in the newest matured snapshot",
                ),
                (
                    "custflow_churn_realised_churn_rate",
                    "Share of the matured snapshot's customers who churned",
                ),
            ] {
                let key = name.trim_start_matches("custflow_churn_realised_");
                if let Some(v) = churn.get(key) {
                    f.gauge(name, help, *v)?;
                }
            }
        }
        f.counter(
            "custflow_churn_refits_total",
            "Churn classifier refits started by a low realised AUC",
            Self::get(&self.churn_refits),
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn histogram_quantiles_and_rendering() {
        let h = Histogram::default();
        for _ in 0..99 {
            h.observe(0.002);
        }
        h.observe(3.0);
        assert_eq!(h.quantile(0.5), Some(0.0025));
        assert_eq!(h.quantile(0.99), Some(0.0025));
        assert_eq!(h.quantile(1.0), Some(5.0));
        let m = std::sync::Arc::new(Metrics::default());
        Metrics::add(&m.applied, 3);
        let text = custflow_metrics::Registry::of(m.clone()).render();
        assert!(text.contains("custflow_events_applied_total 3"));
        assert!(text.contains("custflow_freshness_seconds_count 0"));
        m.set_drift(&[("recency".to_owned(), 0.31)].into_iter().collect());
        assert!(
            !text.contains("custflow_model_refit_fit_seconds"),
            "no refit yet"
        );
        if let Ok(mut r) = m.model_refit.lock() {
            r.insert("fit_seconds", 0.25);
        }
        let text = custflow_metrics::Registry::of(m).render();
        assert!(text.contains("custflow_model_input_psi{input=\"recency\"} 0.31"));
        assert!(
            text.contains("custflow_model_refit_fit_seconds 0.25"),
            "{text}"
        );
    }
}
