//! Kafka client settings shared by custflow's producers and consumers, and topic admin.

use std::time::Duration;

use custflow_schemas::topics::{self, Cleanup, Topics};
use rdkafka::admin::{AdminClient, AdminOptions, NewTopic, TopicReplication};
use rdkafka::client::DefaultClientContext;
use rdkafka::consumer::BaseConsumer;
use rdkafka::error::KafkaError;
use rdkafka::types::RDKafkaErrorCode;

/// Errors talking to the broker.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The broker did not answer or refused; retrying later may help.
    #[error("broker {brokers}: {source}")]
    Kafka {
        brokers: String,
        #[source]
        source: KafkaError,
    },
    #[error("topic {topic}: {reason}")]
    Topic { topic: String, reason: String },
}

pub type Result<T, E = Error> = std::result::Result<T, E>;

pub use crate::client::{client_config, Tune};

/// What `ensure_topics` found or did for one topic.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TopicState {
    pub name: String,
    pub partitions: i32,
    pub created: bool,
}

/// Creates every contract topic that is missing, with one replica; existing topics are
/// left alone.
pub async fn ensure_topics(
    brokers: &str,
    names: &Topics,
    timeout: Duration,
) -> Result<Vec<TopicState>> {
    ensure_topics_replicated(brokers, names, 1, timeout).await
}

/// [`ensure_topics`] with `replication` replicas per partition (3 on a cluster of three
/// brokers).
pub async fn ensure_topics_replicated(
    brokers: &str,
    names: &Topics,
    replication: i32,
    timeout: Duration,
) -> Result<Vec<TopicState>> {
    let kerr = |source| Error::Kafka {
        brokers: brokers.to_owned(),
        source,
    };
    let admin: AdminClient<DefaultClientContext> = client_config(brokers).create().map_err(kerr)?;
    let full: Vec<(String, &topics::TopicSpec)> = topics::ALL
        .iter()
        .map(|t| (names.name(t.name), t))
        .collect();
    let wanted: Vec<String> = full.iter().map(|(n, _)| n.clone()).collect();
    let existing = list_topics(brokers, &wanted, timeout)?;
    let missing: Vec<NewTopic<'_>> = full
        .iter()
        .filter(|(name, _)| !existing.iter().any(|(n, _)| n == name))
        .map(|(name, spec)| {
            let t = NewTopic::new(name, spec.partitions, TopicReplication::Fixed(replication));
            match spec.cleanup {
                Cleanup::Compact => t.set("cleanup.policy", "compact"),
                Cleanup::Delete => t
                    .set("cleanup.policy", "delete")
                    .set("retention.ms", spec.retention_ms),
            }
        })
        .collect();
    let mut created = Vec::new();
    if !missing.is_empty() {
        let opts = AdminOptions::new().operation_timeout(Some(timeout));
        for r in admin
            .create_topics(missing.iter(), &opts)
            .await
            .map_err(kerr)?
        {
            match r {
                Ok(name) => created.push(name),
                Err((_, RDKafkaErrorCode::TopicAlreadyExists)) => {}
                Err((topic, code)) => {
                    return Err(Error::Topic {
                        topic,
                        reason: code.to_string(),
                    })
                }
            }
        }
    }
    let after = list_topics(brokers, &wanted, timeout)?;
    full.iter()
        .map(|(name, spec)| {
            let partitions = after
                .iter()
                .find(|(n, _)| n == name)
                .map(|(_, p)| *p)
                .ok_or_else(|| Error::Topic { topic: name.clone(), reason: "not visible after create".into() })?;
            if partitions != spec.partitions {
                tracing::warn!(topic = %name, partitions, expected = spec.partitions, "topic has an unexpected partition count");
            }
            Ok(TopicState { name: name.clone(), partitions, created: created.contains(name) })
        })
        .collect()
}

/// The partition counts of those of `topics` that exist on the broker (asking for these
/// topics only: the metadata of every topic is a heavy request on tansu's SQLite engine
/// once many deployments share it).
pub fn list_topics(
    brokers: &str,
    topics: &[String],
    timeout: Duration,
) -> Result<Vec<(String, i32)>> {
    let kerr = |source| Error::Kafka {
        brokers: brokers.to_owned(),
        source,
    };
    let consumer: BaseConsumer = client_config(brokers).create().map_err(kerr)?;
    crate::client::partition_counts(&consumer, topics, timeout).map_err(kerr)
}
