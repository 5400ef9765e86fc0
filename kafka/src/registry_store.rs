//! Registry log on a compacted Kafka topic (one partition; key `subject/version`).
//!
//! Delivery: appends use an idempotent producer with `acks=all` and return only once
//! the broker acknowledged the record; loads read the partition from the beginning to
//! its end.

use std::time::Duration;

use crate::client::{client_config, read_to_end};
use rdkafka::producer::{FutureProducer, FutureRecord};
use rdkafka::Message;

use custflow_schemas::registry::async_trait_free::BoxFuture;
use custflow_schemas::registry::{RegistryError, RegistryRecord, RegistryStore};

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

    /// Reads the log to its end (where fetches say it ends: tansu's ListOffsets answer
    /// can trail the log, and a schema registered just before would be missed).
    fn load_blocking(
        brokers: &str,
        topic: &str,
        timeout: Duration,
    ) -> Result<Vec<RegistryRecord>, RegistryError> {
        let mut out = Vec::new();
        read_to_end(brokers, &[(topic.to_owned(), 0, 0)], timeout, |msg| {
            let Some(payload) = msg.payload() else {
                return;
            };
            match serde_json::from_slice::<RegistryRecord>(payload) {
                Ok(r) => out.push(r),
                Err(e) => {
                    tracing::warn!(offset = msg.offset(), error = %e, "skipping malformed registry record")
                }
            }
        })
        .map_err(|e| RegistryError::Storage(e.to_string()))?;
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
