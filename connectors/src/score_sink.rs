//! The sink connector's runtime: consumes `customer-scores` in batches, writes them with
//! [`SqlSink`], then commits offsets.
//!
//! Delivery: at-least-once from Kafka; the tables see each version once in effect, since
//! a score is applied only when its version is newer than the stored one.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use custflow_schemas::avro;
use custflow_schemas::kafka::client_config;
use custflow_schemas::CustomerScore;
use rdkafka::consumer::{CommitMode, Consumer, StreamConsumer};
use rdkafka::Message;
use tokio::sync::watch;

use crate::sql_sink::{Error, Result, SqlSink};

/// Counters of a running sink.
#[derive(Debug, Default)]
pub struct SinkMetrics {
    pub applied: AtomicU64,
    pub skipped: AtomicU64,
    pub undecodable: AtomicU64,
    /// Milliseconds from a score's production to its row committed, last batch's worst.
    pub last_latency_ms: AtomicU64,
}

/// Where the sink reads from.
#[derive(Debug, Clone)]
pub struct ScoreSinkConfig {
    pub brokers: String,
    pub topic: String,
    pub group_id: String,
    pub batch_max: usize,
    pub batch_wait: Duration,
}

fn kafka_err(e: rdkafka::error::KafkaError) -> Error {
    Error::Io(std::io::Error::other(e.to_string()))
}

/// Runs until `shutdown` turns true. Database errors are retried with backoff (the batch
/// is kept and offsets are not committed meanwhile).
pub async fn run(
    cfg: ScoreSinkConfig,
    sink: SqlSink,
    metrics: Arc<SinkMetrics>,
    mut shutdown: watch::Receiver<bool>,
) -> Result<()> {
    let consumer: StreamConsumer = client_config(&cfg.brokers)
        .set("group.id", &cfg.group_id)
        .set("enable.auto.commit", "false")
        .set("enable.auto.offset.store", "false")
        .set("auto.offset.reset", "earliest")
        .set("fetch.wait.max.ms", "20")
        .create()
        .map_err(kafka_err)?;
    consumer.subscribe(&[&cfg.topic]).map_err(kafka_err)?;
    loop {
        let first = tokio::select! {
            m = consumer.recv() => m.map_err(kafka_err)?,
            _ = shutdown.changed() => break,
        };
        let mut batch = vec![first.detach()];
        let deadline = tokio::time::Instant::now() + cfg.batch_wait;
        while batch.len() < cfg.batch_max {
            match tokio::time::timeout_at(deadline, consumer.recv()).await {
                Ok(m) => batch.push(m.map_err(kafka_err)?.detach()),
                Err(_) => break,
            }
        }
        let mut scores = Vec::with_capacity(batch.len());
        let mut oldest = i64::MAX;
        for m in &batch {
            let decoded = m
                .payload()
                .ok_or_else(|| "empty payload (a tombstone)".to_owned())
                .and_then(|b| avro::unframe(b).map_err(|e| e.to_string()))
                .and_then(|(_, datum)| {
                    avro::decode_record::<CustomerScore>("CustomerScore", datum)
                        .map_err(|e| e.to_string())
                });
            match decoded {
                Ok(s) => {
                    if let Some(t) = m.timestamp().to_millis() {
                        oldest = oldest.min(t);
                    }
                    scores.push(s);
                }
                Err(reason) => {
                    tracing::warn!(partition = m.partition(), offset = m.offset(), %reason, "skipping undecodable score");
                    metrics.undecodable.fetch_add(1, Ordering::Relaxed);
                }
            }
        }
        let mut backoff = Duration::from_millis(200);
        let stats = loop {
            match sink.write_scores(&scores).await {
                Ok(s) => break s,
                Err(e) => {
                    tracing::warn!(error = %e, "sink write failed; retrying in {backoff:?}");
                    tokio::select! {
                        () = tokio::time::sleep(backoff) => {}
                        _ = shutdown.changed() => return Ok(()),
                    }
                    backoff = (backoff * 2).min(Duration::from_secs(10));
                }
            }
        };
        metrics.applied.fetch_add(stats.applied, Ordering::Relaxed);
        metrics.skipped.fetch_add(stats.skipped, Ordering::Relaxed);
        if oldest != i64::MAX {
            let lat = (custflow_schemas::time::now_ms() - oldest).max(0) as u64;
            metrics.last_latency_ms.store(lat, Ordering::Relaxed);
        }
        for m in &batch {
            consumer
                .store_offset(m.topic(), m.partition(), m.offset())
                .map_err(kafka_err)?;
        }
        consumer
            .commit_consumer_state(CommitMode::Async)
            .map_err(kafka_err)?;
    }
    consumer.commit_consumer_state(CommitMode::Sync).ok();
    Ok(())
}
