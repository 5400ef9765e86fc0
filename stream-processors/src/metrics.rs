//! Processor metrics, rendered in the Prometheus text format.

use std::collections::BTreeMap;
use std::fmt::Write;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Mutex;

pub use custflow_metrics::histogram::Histogram;

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
    pub scores_emitted: AtomicU64,
    pub segment_changes: AtomicU64,
    /// Rescoring passes started by a model change, passes finished, and customers
    /// they rescored.
    pub model_passes: AtomicU64,
    pub model_passes_done: AtomicU64,
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

    /// The Prometheus text exposition.
    pub fn render(&self) -> String {
        let mut out = String::new();
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
            let _ = writeln!(
                out,
                "# HELP {name} {help}\n# TYPE {name} counter\n{name} {}",
                Self::get(c)
            );
        }
        self.redis_write.render(
            &mut out,
            "custflow_redis_write_seconds",
            "Redis pipeline write latency",
        );
        self.freshness.render(
            &mut out,
            "custflow_freshness_seconds",
            "Event time to feature visible",
        );
        let _ = writeln!(out, "# HELP custflow_consumer_lag Messages between the committed offset and the log end (librdkafka's consumer_lag)\n# TYPE custflow_consumer_lag gauge");
        if let Ok(lag) = self.lag.lock() {
            for ((topic, p), v) in lag.iter() {
                let _ = writeln!(
                    out,
                    "custflow_consumer_lag{{topic=\"{topic}\",partition=\"{p}\"}} {v}"
                );
            }
        }
        let _ = writeln!(out, "# HELP custflow_model_input_psi Population stability index of a model input, live population against the model's training population\n# TYPE custflow_model_input_psi gauge");
        if let Ok(drift) = self.drift.lock() {
            for (input, v) in drift.iter() {
                let _ = writeln!(out, "custflow_model_input_psi{{input=\"{input}\"}} {v}");
            }
        }
        if let Ok(churn) = self.churn_realised.lock() {
            for (name, help) in [
                (
                    "auc",
                    "AUC of matured churn predictions against what customers did",
                ),
                (
                    "calibration_error",
                    "Expected calibration error of matured churn predictions",
                ),
                (
                    "predictions",
                    "Churn predictions in the newest matured snapshot",
                ),
                (
                    "churn_rate",
                    "Share of the matured snapshot's customers who churned",
                ),
            ] {
                if let Some(v) = churn.get(name) {
                    let _ = writeln!(out, "# HELP custflow_churn_realised_{name} {help}\n# TYPE custflow_churn_realised_{name} gauge\ncustflow_churn_realised_{name} {v}");
                }
            }
        }
        let _ = writeln!(out, "# HELP custflow_churn_refits_total Churn classifier refits started by a low realised AUC\n# TYPE custflow_churn_refits_total counter\ncustflow_churn_refits_total {}", Self::get(&self.churn_refits));
        out
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
        let m = Metrics::default();
        Metrics::add(&m.applied, 3);
        let text = m.render();
        assert!(text.contains("custflow_events_applied_total 3"));
        assert!(text.contains("custflow_freshness_seconds_count 0"));
        m.set_drift(&[("recency".to_owned(), 0.31)].into_iter().collect());
        assert!(m
            .render()
            .contains("custflow_model_input_psi{input=\"recency\"} 0.31"));
    }
}
