//! Source offsets and connector configs on compacted topics, and the read-back that
//! finds records a crashed task delivered but had not yet covered by an offset commit.

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;
use std::time::Duration;

use custflow_kafka::client::{client_config, produce_all, read_to_end};
use rdkafka::admin::{AdminClient, AdminOptions, NewTopic, TopicReplication};
use rdkafka::client::DefaultClientContext;
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::message::Headers;
use rdkafka::producer::{FutureProducer, FutureRecord};
use rdkafka::types::RDKafkaErrorCode;
use rdkafka::Message;
use serde_json::Value;

use super::{Error, SOURCE_HEADER};

/// Broker positions per topic and partition.
pub type Positions = BTreeMap<String, BTreeMap<i32, i64>>;

/// Creates a topic if it is missing (`partitions`, compacted or not).
pub async fn ensure_topic(
    brokers: &str,
    topic: &str,
    partitions: i32,
    compact: bool,
) -> Result<(), Error> {
    let admin: AdminClient<DefaultClientContext> =
        client_config(brokers).create().map_err(Error::kafka)?;
    let t = NewTopic::new(topic, partitions, TopicReplication::Fixed(1))
        .set("cleanup.policy", if compact { "compact" } else { "delete" });
    let opts = AdminOptions::new().operation_timeout(Some(Duration::from_secs(10)));
    for r in admin
        .create_topics([&t], &opts)
        .await
        .map_err(Error::kafka)?
    {
        match r {
            Ok(_) | Err((_, RDKafkaErrorCode::TopicAlreadyExists)) => {}
            Err((topic, code)) => return Err(Error::Kafka(format!("creating {topic}: {code}"))),
        }
    }
    Ok(())
}

/// High watermarks of every partition of `topics`.
pub fn high_watermarks(brokers: &str, topics: &[&str]) -> Result<Positions, Error> {
    let consumer: BaseConsumer = client_config(brokers).create().map_err(Error::kafka)?;
    let timeout = Duration::from_secs(10);
    let mut out = Positions::new();
    for topic in topics {
        let md = consumer
            .fetch_metadata(Some(topic), timeout)
            .map_err(Error::kafka)?;
        let parts = md
            .topics()
            .first()
            .map(|t| t.partitions().iter().map(|p| p.id()).collect::<Vec<_>>())
            .unwrap_or_default();
        for p in parts {
            let (_, high) = consumer
                .fetch_watermarks(topic, p, timeout)
                .map_err(Error::kafka)?;
            out.entry((*topic).to_owned()).or_default().insert(p, high);
        }
    }
    Ok(out)
}

/// A key/value log on one partition of a compacted topic, loaded whole on start
/// (connector configs, source offsets). Writes return once the broker acknowledged them.
pub struct KvTopic {
    brokers: String,
    topic: String,
    producer: FutureProducer,
}

impl KvTopic {
    pub async fn open(brokers: &str, topic: &str) -> Result<Self, Error> {
        ensure_topic(brokers, topic, 1, true).await?;
        let producer = client_config(brokers)
            .set("enable.idempotence", "true")
            .set("acks", "all")
            .create()
            .map_err(Error::kafka)?;
        Ok(Self {
            brokers: brokers.to_owned(),
            topic: topic.to_owned(),
            producer,
        })
    }

    /// Every key's latest value (tombstones remove the key).
    pub async fn load(&self) -> Result<HashMap<String, Value>, Error> {
        let (brokers, topic) = (self.brokers.clone(), self.topic.clone());
        tokio::task::spawn_blocking(move || {
            let mut out = HashMap::new();
            read_to_end(
                &brokers,
                &[(topic.clone(), 0, 0)],
                Duration::from_secs(60),
                |m| {
                    let Some(key) = m.key().and_then(|k| std::str::from_utf8(k).ok()) else {
                        return;
                    };
                    match m.payload().map(serde_json::from_slice::<Value>) {
                        None => {
                            out.remove(key);
                        }
                        Some(Ok(v)) => {
                            out.insert(key.to_owned(), v);
                        }
                        Some(Err(e)) => {
                            tracing::warn!(topic = %topic, key, error = %e, "skipping malformed record")
                        }
                    }
                },
            )
            .map_err(|e| Error::Kafka(e.to_string()))?;
            Ok(out)
        })
        .await
        .map_err(|e| Error::Kafka(e.to_string()))?
    }

    /// Writes values (`None` deletes) and waits for the broker's acknowledgements.
    pub async fn put(&self, entries: &[(String, Option<Value>)]) -> Result<(), Error> {
        let payloads: Vec<Option<String>> = entries
            .iter()
            .map(|(_, v)| v.as_ref().map(Value::to_string))
            .collect();
        let records = entries
            .iter()
            .zip(&payloads)
            .map(|((k, _), payload)| {
                let rec = FutureRecord::<str, str>::to(&self.topic)
                    .key(k)
                    .partition(0);
                match payload.as_deref() {
                    Some(p) => rec.payload(p),
                    None => rec,
                }
            })
            .collect();
        produce_all(&self.producer, records, Duration::from_secs(30))
            .await
            .map_err(|e| Error::Kafka(format!("writing {}: {e}", self.topic)))
    }
}

/// Where a record was found: topic, partition, broker offset.
pub type Location = (Arc<str>, i32, i64);

/// Records of one connector found on its destination topics past the scan positions:
/// hash of the partition key → record id → where it is.
pub type Delivered = HashMap<u64, HashMap<String, Location>>;

/// Reads the destination partitions from `from` to their ends and collects the records
/// of the connector whose [`super::connector_tag`] is `tag` (by the source header).
/// Blocking.
pub fn read_back(brokers: &str, tag: &str, from: &Positions) -> Result<Delivered, Error> {
    let starts: Vec<(String, i32, i64)> = from
        .iter()
        .flat_map(|(t, ps)| ps.iter().map(move |(p, o)| (t.clone(), *p, *o)))
        .collect();
    let mut out = Delivered::new();
    read_to_end(brokers, &starts, Duration::from_secs(120), |m| {
        let Some(headers) = m.headers() else { return };
        for h in headers.iter() {
            if h.key != SOURCE_HEADER {
                continue;
            }
            let Some(v) = h.value.and_then(|v| std::str::from_utf8(v).ok()) else {
                continue;
            };
            let Some((head, id)) = v.split_once('/') else {
                continue;
            };
            let Some(hash) = head.strip_prefix(tag) else {
                continue;
            };
            let Ok(hash) = u64::from_str_radix(hash, 16) else {
                continue;
            };
            out.entry(hash)
                .or_default()
                .insert(id.to_owned(), (m.topic().into(), m.partition(), m.offset()));
        }
    })
    .map_err(|e| Error::Kafka(e.to_string()))?;
    Ok(out)
}
