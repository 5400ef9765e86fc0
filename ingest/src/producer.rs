//! Producing input events to their topics: idempotent (acks=all), compressed, batched.
//!
//! Delivery: at-least-once from the producer's side with idempotence, so librdkafka's
//! retries never duplicate; delivery failures are counted, never silently dropped.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use custflow_schemas::avro::AvroCodec;
use custflow_schemas::topics::Topics;
use custflow_schemas::{json, Event};
use rdkafka::error::{KafkaError, RDKafkaErrorCode};
use rdkafka::producer::{BaseRecord, DeliveryResult, Producer, ProducerContext, ThreadedProducer};
use rdkafka::ClientContext;

use custflow_kafka::admin::{Error, Result};
use custflow_kafka::client::bulk_producer_config;

/// Counts deliveries and failures reported by librdkafka.
#[derive(Debug, Default)]
pub struct Deliveries {
    pub delivered: AtomicU64,
    pub failed: AtomicU64,
}

/// The producer's context: records each delivery report.
#[derive(Clone, Default)]
pub struct Counting(pub Arc<Deliveries>);

impl ClientContext for Counting {}

impl ProducerContext for Counting {
    type DeliveryOpaque = ();
    fn delivery(&self, result: &DeliveryResult<'_>, _: ()) {
        match result {
            Ok(_) => self.0.delivered.fetch_add(1, Ordering::Relaxed),
            Err((e, _)) => {
                tracing::warn!(error = %e, "delivery failed");
                self.0.failed.fetch_add(1, Ordering::Relaxed)
            }
        };
    }
}

/// Wire format of produced events.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Format {
    Avro,
    Json,
}

/// Sends events to `customers` / `orders` / `activity`, keyed by customer id.
pub struct EventProducer {
    producer: ThreadedProducer<Counting>,
    topics: Topics,
    codec: Arc<AvroCodec>,
    format: Format,
    counts: Arc<Deliveries>,
    buf: Vec<u8>,
}

impl EventProducer {
    pub fn new(
        brokers: &str,
        topics: Topics,
        codec: Arc<AvroCodec>,
        format: Format,
    ) -> Result<Self> {
        let counts = Arc::new(Deliveries::default());
        let producer = bulk_producer_config(brokers)
            .create_with_context(Counting(counts.clone()))
            .map_err(|source| Error::Kafka {
                brokers: brokers.to_owned(),
                source,
            })?;
        Ok(Self {
            producer,
            topics,
            codec,
            format,
            counts,
            buf: Vec::with_capacity(512),
        })
    }

    /// Encodes and enqueues one event; waits while librdkafka's queue is full. Returns
    /// the encoded size.
    pub fn send(&mut self, event: &Event) -> Result<usize> {
        self.buf.clear();
        match self.format {
            Format::Avro => {
                self.codec
                    .encode_into(event, &mut self.buf)
                    .map_err(|e| Error::Topic {
                        topic: event.kind().topic().into(),
                        reason: e.to_string(),
                    })?
            }
            Format::Json => self.buf.extend_from_slice(&json::encode(event)),
        }
        let topic = self.topics.name(event.kind().topic());
        loop {
            let rec = BaseRecord::to(&topic)
                .key(event.customer_id())
                .payload(&self.buf);
            match self.producer.send(rec) {
                Ok(()) => return Ok(self.buf.len()),
                Err((KafkaError::MessageProduction(RDKafkaErrorCode::QueueFull), _)) => {
                    self.producer.poll(Duration::from_millis(5));
                }
                Err((e, _)) => {
                    return Err(Error::Topic {
                        topic,
                        reason: e.to_string(),
                    })
                }
            }
        }
    }

    /// Waits until everything enqueued was acknowledged or failed.
    pub fn flush(&self, timeout: Duration) -> Result<()> {
        self.producer.flush(timeout).map_err(|e| Error::Topic {
            topic: "*".into(),
            reason: format!("flush: {e}"),
        })
    }

    pub fn deliveries(&self) -> Arc<Deliveries> {
        self.counts.clone()
    }
}
