//! `FluvioSink`: the score and segment-change topics → one Fluvio topic, keyed by
//! customer id, JSON values, for dashboards that subscribe on Fluvio.
//!
//! At least once with idempotent keys: a batch is produced to Fluvio and acknowledged
//! before its Kafka offsets are committed, so a crash or an outage of the Fluvio cluster
//! repeats records (a later record of a key carries the newer state), never loses them.
//! While Fluvio does not answer, the batch is retried with backoff (1 s doubling to 30 s).

use std::fmt;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use custflow_feature_store::members::Member;
use custflow_kafka::assignment::{member_consumer, Assignment};
use custflow_kafka::client::Rewind;
use custflow_kafka::progress::Progress;
use custflow_metrics::{Collector, DescriptorEncoder, Families};
use custflow_schemas::{avro, CustomerScore, SegmentChange};
use fluvio::{Fluvio, FluvioClusterConfig, TopicProducerPool};
use rdkafka::consumer::{CommitMode, Consumer, StreamConsumer};
use rdkafka::message::BorrowedMessage;
use rdkafka::{Message, Offset, TopicPartitionList};
use serde_json::{json, Value};
use tokio::sync::watch;

/// Connects to the Fluvio SC at `endpoint` (`HOST:PORT`), waiting at most 10 s; the
/// error names the endpoint. The source and the sink both connect through here.
pub async fn connect_cluster(endpoint: &str) -> Result<Fluvio, String> {
    let config = FluvioClusterConfig::new(endpoint.to_owned());
    tokio::time::timeout(
        Duration::from_secs(10),
        Fluvio::connect_with_config(&config),
    )
    .await
    .map_err(|_| format!("connecting to {endpoint}: no answer within 10 s"))?
    .map_err(|e| format!("connecting to {endpoint}: {e}"))
}

/// A Fluvio topic on a cluster: `fluvio://HOST:PORT/TOPIC`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Target {
    /// The SC's `HOST:PORT`.
    pub endpoint: String,
    pub topic: String,
}

impl Target {
    pub fn parse(url: &str) -> Result<Self, FluvioSinkError> {
        let bad = || FluvioSinkError::Url(url.to_owned());
        let rest = url.strip_prefix("fluvio://").ok_or_else(bad)?;
        let (endpoint, topic) = rest.split_once('/').ok_or_else(bad)?;
        if !endpoint.contains(':') || topic.is_empty() || topic.contains('/') {
            return Err(bad());
        }
        Ok(Self {
            endpoint: endpoint.to_owned(),
            topic: topic.to_owned(),
        })
    }

    /// Connects and opens a producer of the topic.
    pub async fn connect(&self) -> Result<Publisher, FluvioSinkError> {
        let fluvio = connect_cluster(&self.endpoint)
            .await
            .map_err(FluvioSinkError::Fluvio)?;
        let producer = fluvio
            .topic_producer(self.topic.clone())
            .await
            .map_err(|e| FluvioSinkError::Fluvio(format!("topic {}: {e}", self.topic)))?;
        Ok(Publisher {
            _fluvio: fluvio,
            producer,
            pending: Vec::new(),
        })
    }
}

/// A producer of one Fluvio topic.
pub struct Publisher {
    /// Kept so the producer's connection lives as long as it does.
    _fluvio: Fluvio,
    producer: TopicProducerPool,
    /// Records sent and not yet acknowledged.
    pending: Vec<fluvio::ProduceOutput>,
}

impl Publisher {
    /// Queues one record (sent in batches by the client).
    pub async fn send(&mut self, key: &str, value: String) -> Result<(), FluvioSinkError> {
        let out = self
            .producer
            .send(key.to_owned(), value)
            .await
            .map_err(|e| FluvioSinkError::Fluvio(e.to_string()))?;
        self.pending.push(out);
        Ok(())
    }

    /// Sends what is queued and waits until Fluvio acknowledged every record.
    pub async fn flush(&mut self) -> Result<(), FluvioSinkError> {
        self.producer
            .flush()
            .await
            .map_err(|e| FluvioSinkError::Fluvio(e.to_string()))?;
        for o in self.pending.drain(..) {
            o.wait()
                .await
                .map_err(|e| FluvioSinkError::Fluvio(e.to_string()))?;
        }
        Ok(())
    }
}

#[derive(Debug, thiserror::Error)]
pub enum FluvioSinkError {
    #[error("{0:?} is not fluvio://HOST:PORT/TOPIC")]
    Url(String),
    #[error("Fluvio: {0}")]
    Fluvio(String),
    #[error("Kafka: {0}")]
    Kafka(#[from] rdkafka::error::KafkaError),
    #[error(transparent)]
    Membership(#[from] custflow_feature_store::members::Error),
}

/// Where the sink reads from and writes to.
#[derive(Clone)]
pub struct FluvioSinkConfig {
    pub brokers: String,
    pub scores_topic: String,
    pub changes_topic: String,
    pub group_id: String,
    pub member: Member,
    pub progress: Arc<Progress>,
    pub target: Target,
}

/// Counters of the Fluvio sink.
#[derive(Debug, Default)]
pub struct FluvioSinkMetrics {
    pub sent: AtomicU64,
    pub undecodable: AtomicU64,
    pub retries: AtomicU64,
}

impl Collector for FluvioSinkMetrics {
    fn encode(&self, e: DescriptorEncoder) -> fmt::Result {
        let g = |c: &AtomicU64| c.load(Ordering::Relaxed);
        let mut f = Families::from(e);
        f.counters(
            "custflow_fluvio_sink_records_total",
            "Score and segment-change records the Fluvio sink read, by what became of them",
            [
                ([("result", "sent")], g(&self.sent)),
                ([("result", "undecodable")], g(&self.undecodable)),
            ],
        )?;
        f.counter(
            "custflow_fluvio_sink_retries_total",
            "Batches sent again because the Fluvio cluster did not acknowledge them",
            g(&self.retries),
        )
    }
}

/// The JSON record of one Kafka message: a score, a segment change, or the erasure of a
/// customer (a tombstone on the score topic). `None` when it cannot be read.
fn to_json(msg: &BorrowedMessage<'_>, scores_topic: &str) -> Option<(String, Value)> {
    let key = msg.key().and_then(|k| std::str::from_utf8(k).ok());
    let Some(bytes) = msg.payload() else {
        let customer = key?;
        return Some((
            customer.to_owned(),
            json!({"type": "erased", "customer_id": customer}),
        ));
    };
    let (_, datum) = avro::unframe(bytes).ok()?;
    let (kind, customer, mut v) = if msg.topic() == scores_topic {
        let s: CustomerScore = avro::decode_score(datum).ok()?;
        (
            "score",
            s.customer_id.clone(),
            serde_json::to_value(s).ok()?,
        )
    } else {
        let c: SegmentChange = avro::decode_change(datum).ok()?;
        (
            "segment_change",
            c.customer_id.clone(),
            serde_json::to_value(c).ok()?,
        )
    };
    if let Value::Object(m) = &mut v {
        m.insert("type".into(), json!(kind));
    }
    Some((key.map_or(customer, str::to_owned), v))
}

/// Sends a batch and waits for Fluvio's acknowledgement of every record.
async fn send(
    publisher: &mut Publisher,
    batch: &[(String, String)],
) -> Result<(), FluvioSinkError> {
    for (k, v) in batch {
        publisher.send(k, v.clone()).await?;
    }
    publisher.flush().await
}

/// Runs until `shutdown` turns true.
pub async fn run(
    cfg: FluvioSinkConfig,
    metrics: Arc<FluvioSinkMetrics>,
    mut shutdown: watch::Receiver<bool>,
) -> Result<(), FluvioSinkError> {
    let consumer: Arc<StreamConsumer<Rewind>> =
        Arc::new(member_consumer(&cfg.brokers, &cfg.group_id)?);
    let topics = [cfg.scores_topic.clone(), cfg.changes_topic.clone()];
    let mut assignment = Assignment::start(
        cfg.member.clone(),
        &cfg.brokers,
        &topics,
        cfg.progress.clone(),
        shutdown.clone(),
    )
    .await?;
    // A wrong address or topic fails the start; later outages are retried.
    let mut conn = Some(cfg.target.connect().await?);
    'outer: loop {
        if let Some(e) = assignment.failed().await {
            return Err(FluvioSinkError::Membership(e));
        }
        if let Err(e) = assignment.apply(&consumer).await {
            tracing::warn!(error = %e, "taking the Fluvio sink's partitions; retrying");
        }
        // A batch: what arrives within 50 ms of its first record, at most 2000.
        let first = tokio::select! {
            m = consumer.recv() => m?,
            _ = shutdown.changed() => break,
            () = assignment.changed() => continue,
        };
        let mut batch = Vec::new();
        let mut ends = TopicPartitionList::new();
        let deadline = tokio::time::Instant::now() + Duration::from_millis(50);
        let mut next = Some(first);
        while let Some(msg) = next.take() {
            let owned = consumer.assignment()?;
            if owned.find_partition(msg.topic(), msg.partition()).is_some()
                && consumer.context().keep(&msg)
            {
                match to_json(&msg, &cfg.scores_topic) {
                    Some((k, v)) => batch.push((k, v.to_string())),
                    None => {
                        metrics.undecodable.fetch_add(1, Ordering::Relaxed);
                        tracing::warn!(
                            topic = msg.topic(),
                            offset = msg.offset(),
                            "undecodable record not sent to Fluvio"
                        );
                    }
                }
                ends.add_partition_offset(
                    msg.topic(),
                    msg.partition(),
                    Offset::Offset(msg.offset() + 1),
                )?;
            }
            if batch.len() >= 2000 {
                break;
            }
            next = tokio::select! {
                m = consumer.recv() => Some(m?),
                () = tokio::time::sleep_until(deadline) => None,
            };
        }
        // Fluvio acknowledges the batch before its offsets are committed.
        let mut wait = Duration::from_secs(1);
        loop {
            if conn.is_none() {
                match cfg.target.connect().await {
                    Ok(c) => conn = Some(c),
                    Err(e) => tracing::warn!(error = %e, "Fluvio sink reconnecting"),
                }
            }
            if let Some(publisher) = conn.as_mut() {
                match send(publisher, &batch).await {
                    Ok(()) => break,
                    Err(e) => {
                        tracing::warn!(error = %e, records = batch.len(), "Fluvio did not take a batch; retrying");
                        conn = None;
                    }
                }
            }
            metrics.retries.fetch_add(1, Ordering::Relaxed);
            tokio::select! {
                () = tokio::time::sleep(wait) => {}
                // Not acknowledged, not committed: the next run sends the batch again.
                _ = shutdown.changed() => break 'outer,
            }
            wait = (wait * 2).min(Duration::from_secs(30));
        }
        metrics
            .sent
            .fetch_add(batch.len() as u64, Ordering::Relaxed);
        if ends.count() > 0 {
            consumer.commit(&ends, CommitMode::Async)?;
        }
    }
    assignment.finish().await;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn targets_parse_or_say_the_shape() {
        assert_eq!(
            Target::parse("fluvio://127.0.0.1:9003/scores").unwrap(),
            Target {
                endpoint: "127.0.0.1:9003".into(),
                topic: "scores".into()
            }
        );
        for bad in [
            "127.0.0.1:9003/scores",
            "fluvio://host/scores",
            "fluvio://h:1/",
            "fluvio://h:1/a/b",
        ] {
            assert!(
                matches!(Target::parse(bad), Err(FluvioSinkError::Url(_))),
                "{bad}"
            );
        }
    }
}
