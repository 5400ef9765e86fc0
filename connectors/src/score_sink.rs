//! The sink connector's runtime: consumes `customer-scores` in batches, writes them with
//! [`SqlSink`], then commits offsets.
//!
//! Delivery: at-least-once from Kafka; the tables see each version once in effect, since
//! a score is applied only when its version is newer than the stored one. A tombstone (a
//! customer's erasure) deletes the customer's current row and history.

use std::collections::HashMap;
use std::fmt;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use custflow_feature_store::members::Member;
use custflow_kafka::assignment::{member_consumer, Assignment};
use custflow_kafka::client::{self as kafka, Rewind};
use custflow_kafka::progress::Progress;
use custflow_kafka::trace::{self, SpanKind, TraceContextExt};
use custflow_metrics::{Collector, DescriptorEncoder, Families, Histogram};
use custflow_schemas::avro;
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
    /// Tombstones applied (customers erased) and the rows they deleted.
    pub erased: AtomicU64,
    pub erased_rows: AtomicU64,
    /// Seconds from a score's production (its message timestamp) to its row committed.
    pub latency: Histogram,
    /// Seconds from the production of the earliest event behind a score (its
    /// `custflow.event-ms` header) to the score's row committed.
    pub event_to_row: Histogram,
}

impl Collector for SinkMetrics {
    fn encode(&self, e: DescriptorEncoder) -> fmt::Result {
        let g = |c: &AtomicU64| c.load(Ordering::Relaxed);
        let mut f = Families::from(e);
        f.counters(
            "custflow_sink_rows_total",
            "Score records the SQL sink read, by what became of them",
            [
                ([("result", "applied")], g(&self.applied)),
                ([("result", "skipped")], g(&self.skipped)),
                ([("result", "undecodable")], g(&self.undecodable)),
            ],
        )?;
        f.counter(
            "custflow_sink_erasures_total",
            "Tombstones applied (customers erased)",
            g(&self.erased),
        )?;
        f.counter(
            "custflow_sink_erased_rows_total",
            "Rows the tombstones deleted",
            g(&self.erased_rows),
        )?;
        f.histogram(
            "custflow_sink_latency_seconds",
            "Score message produced to its row committed in the sink tables",
            &self.latency,
        )?;
        f.histogram(
            "custflow_event_to_row_seconds",
            "Earliest event behind a score produced to the score's row committed (event-caused scores only)",
            &self.event_to_row,
        )
    }
}

/// Where the sink reads from.
#[derive(Debug, Clone)]
pub struct ScoreSinkConfig {
    pub brokers: String,
    pub topic: String,
    pub group_id: String,
    pub batch_max: usize,
    pub batch_wait: Duration,
    /// This process's membership among the deployment's sinks (which partitions it
    /// writes).
    pub member: Member,
    /// The group's progress, as its watcher sees it.
    pub progress: Arc<Progress>,
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
    // The sinks split the partitions among themselves (`members`).
    let consumer: Arc<StreamConsumer<Rewind>> =
        Arc::new(member_consumer(&cfg.brokers, &cfg.group_id).map_err(kafka_err)?);
    let mut assignment = Assignment::start(
        cfg.member.clone(),
        &cfg.brokers,
        std::slice::from_ref(&cfg.topic),
        cfg.progress.clone(),
        shutdown.clone(),
    )
    .await
    .map_err(kafka_err)?;
    loop {
        if let Some(e) = assignment.failed().await {
            return Err(Error::Io(std::io::Error::other(e.to_string())));
        }
        if let Err(e) = assignment.apply(&consumer).await {
            tracing::warn!(error = %e, "taking the sink's partitions; retrying");
        }
        let first = tokio::select! {
            m = consumer.recv() => m.map_err(kafka_err)?,
            _ = shutdown.changed() => break,
            () = assignment.changed() => continue,
        };
        let mut batch = vec![first.detach()];
        let deadline = tokio::time::Instant::now() + cfg.batch_wait;
        while batch.len() < cfg.batch_max {
            match tokio::time::timeout_at(deadline, consumer.recv()).await {
                Ok(m) => batch.push(m.map_err(kafka_err)?.detach()),
                Err(_) => break,
            }
        }
        // Messages of partitions handed to another instance meanwhile are its to write.
        let owned = consumer.assignment().map_err(kafka_err)?;
        batch.retain(|m| {
            owned.find_partition(m.topic(), m.partition()).is_some() && consumer.context().keep(m)
        });
        if batch.is_empty() {
            continue;
        }
        let mut scores = Vec::with_capacity(batch.len());
        let mut produced_at = Vec::with_capacity(batch.len());
        let mut event_at = Vec::new();
        // Spans of the traced scores (tracing on), ended once the rows are committed.
        let spans: Vec<trace::Context> = batch
            .iter()
            .filter_map(|m| {
                let parent = trace::of_message(m)?;
                let attributes = trace::message_attributes(m);
                Some(trace::start(
                    "custflow.sink",
                    SpanKind::Consumer,
                    &parent,
                    attributes,
                ))
            })
            .collect();
        // Customers whose tombstone (erasure) is in this batch, with its place: their
        // scores from before it are dropped, the ones after it start a new life.
        let mut erased: HashMap<&str, usize> = HashMap::new();
        for (i, m) in batch.iter().enumerate() {
            let Some(payload) = m.payload() else {
                match m.key().map(std::str::from_utf8) {
                    Some(Ok(customer)) => {
                        erased.insert(customer, i);
                    }
                    _ => {
                        tracing::warn!(
                            partition = m.partition(),
                            offset = m.offset(),
                            "skipping a tombstone without a customer id key"
                        );
                        metrics.undecodable.fetch_add(1, Ordering::Relaxed);
                    }
                }
                continue;
            };
            let decoded = avro::unframe(payload)
                .map_err(|e| e.to_string())
                .and_then(|(_, datum)| avro::decode_score(datum).map_err(|e| e.to_string()));
            match decoded {
                Ok(s) => {
                    produced_at.extend(m.timestamp().to_millis());
                    event_at.extend(kafka::event_time(m));
                    scores.push((i, s));
                }
                Err(reason) => {
                    tracing::warn!(partition = m.partition(), offset = m.offset(), %reason, "skipping undecodable score");
                    metrics.undecodable.fetch_add(1, Ordering::Relaxed);
                }
            }
        }
        let scores: Vec<CustomerScore> = scores
            .into_iter()
            .filter(|(i, s)| erased.get(s.customer_id.as_str()).is_none_or(|e| i > e))
            .map(|(_, s)| s)
            .collect();
        let erased: Vec<&str> = erased.into_keys().collect();
        let mut backoff = Duration::from_millis(200);
        let stats = loop {
            // Erasures first: the scores kept for those customers came after them. Both
            // are idempotent, so a retry after a partial failure redoes both.
            let written = async {
                let rows = sink.erase(&erased).await?;
                Ok::<_, Error>((rows, sink.write_scores(&scores).await?))
            };
            match written.await {
                Ok((rows, s)) => {
                    metrics
                        .erased
                        .fetch_add(erased.len() as u64, Ordering::Relaxed);
                    metrics.erased_rows.fetch_add(rows, Ordering::Relaxed);
                    break s;
                }
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
        for cx in &spans {
            cx.span().end();
        }
        metrics.applied.fetch_add(stats.applied, Ordering::Relaxed);
        metrics.skipped.fetch_add(stats.skipped, Ordering::Relaxed);
        let committed = custflow_schemas::time::now_ms();
        for t in produced_at {
            metrics
                .latency
                .observe((committed - t).max(0) as f64 / 1000.0);
        }
        for t in event_at {
            metrics
                .event_to_row
                .observe((committed - t).max(0) as f64 / 1000.0);
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
    assignment.finish().await;
    Ok(())
}
