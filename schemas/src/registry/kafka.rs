//! Registry log on a compacted Kafka topic (one partition; key `subject/version`).
//!
//! Delivery: appends use an idempotent producer with `acks=all` and return only once
//! the broker acknowledged the record; loads read the partition from the beginning to
//! its high watermark.

use std::time::Duration;

use crate::kafka::client_config;
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::producer::{FutureProducer, FutureRecord};
use rdkafka::{Message, Offset, TopicPartitionList};

use super::async_trait_free::BoxFuture;
use super::{RegistryError, RegistryRecord, RegistryStore};

/// The registry log on a Kafka topic.
pub struct KafkaRegistryStore {
    brokers: String,
    topic: String,
    producer: FutureProducer,
    timeout: Duration,
}

impl KafkaRegistryStore {
    pub fn new(brokers: &str, topic: &str) -> Result<Self, RegistryError> {
        let producer = client_config(brokers)
            .set("enable.idempotence", "true")
            .set("acks", "all")
            .create()
            .map_err(storage)?;
        Ok(Self {
            brokers: brokers.to_owned(),
            topic: topic.to_owned(),
            producer,
            timeout: Duration::from_secs(10),
        })
    }

    fn load_blocking(
        brokers: &str,
        topic: &str,
        timeout: Duration,
    ) -> Result<Vec<RegistryRecord>, RegistryError> {
        let consumer: BaseConsumer = client_config(brokers)
            .set("group.id", "custflow-registry-reader")
            .set("enable.auto.commit", "false")
            .set("enable.partition.eof", "false")
            .create()
            .map_err(storage)?;
        let (low, high) = consumer
            .fetch_watermarks(topic, 0, timeout)
            .map_err(storage)?;
        let mut out = Vec::new();
        if high <= low {
            return Ok(out);
        }
        let mut tpl = TopicPartitionList::new();
        tpl.add_partition_offset(topic, 0, Offset::Beginning)
            .map_err(storage)?;
        consumer.assign(&tpl).map_err(storage)?;
        let deadline = std::time::Instant::now() + timeout;
        let mut next = low;
        while next < high {
            if std::time::Instant::now() > deadline {
                return Err(RegistryError::Storage(format!(
                    "timed out reading {topic} at offset {next} of {high}"
                )));
            }
            let Some(msg) = consumer.poll(Duration::from_millis(200)) else {
                continue;
            };
            let msg = msg.map_err(storage)?;
            next = msg.offset() + 1;
            let Some(payload) = msg.payload() else {
                continue;
            };
            match serde_json::from_slice::<RegistryRecord>(payload) {
                Ok(r) => out.push(r),
                Err(e) => {
                    tracing::warn!(offset = msg.offset(), error = %e, "skipping malformed registry record")
                }
            }
        }
        Ok(out)
    }
}

impl RegistryStore for KafkaRegistryStore {
    fn load(&self) -> BoxFuture<'_, Result<Vec<RegistryRecord>, RegistryError>> {
        let (brokers, topic, timeout) = (self.brokers.clone(), self.topic.clone(), self.timeout);
        Box::pin(async move {
            tokio::task::spawn_blocking(move || Self::load_blocking(&brokers, &topic, timeout))
                .await
                .map_err(storage)?
        })
    }

    fn append<'a>(
        &'a self,
        record: &'a RegistryRecord,
    ) -> BoxFuture<'a, Result<(), RegistryError>> {
        Box::pin(async move {
            let key = format!("{}/{}", record.subject, record.version);
            let value = serde_json::to_vec(record).map_err(storage)?;
            self.producer
                .send(
                    FutureRecord::to(&self.topic)
                        .key(&key)
                        .payload(&value)
                        .partition(0),
                    self.timeout,
                )
                .await
                .map_err(|(e, _)| storage(e))?;
            Ok(())
        })
    }
}

fn storage(e: impl std::fmt::Display) -> RegistryError {
    RegistryError::Storage(e.to_string())
}
