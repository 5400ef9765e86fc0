//! A Kafka Connect-style source framework: connectors split work into tasks, tasks poll
//! records with source offsets, and the worker produces them and commits the offsets to a
//! compacted topic only after the broker acknowledged the records.
//!
//! Exactly once on the topic: every record carries its source partition and a record id
//! in headers. After a crash, a task reads back what reached the destination topics past
//! the last committed offsets and skips those records when it reads the source again, so
//! a kill between "acknowledged" and "offset committed" does not duplicate.

mod acks;
pub mod config;
pub mod metrics;
pub mod offsets;
pub mod rest;
mod runner;
pub mod task;
pub mod worker;

use std::sync::Arc;

use custflow_kafka::client::dead_letter_headers;
use rdkafka::message::{Header, OwnedHeaders};
use serde_json::Value;

pub use config::{Common, ConnectorClass, ConnectorConfig, Tolerance, ValueFormat};

/// Header saying where a record came from: `CCCCCCCCPPPPPPPPPPPPPPPP/ID`, a hash of the
/// connector name (8 hex digits), a hash of the source partition's key (16), and the
/// record's id, unique within its partition. One short header, because librdkafka
/// allocates per header and per message.
pub const SOURCE_HEADER: &str = "custflow.connect.source";

/// FNV-1a, 64 bits: stable across runs and builds (the source header's hashes).
pub fn fnv(bytes: &[u8]) -> u64 {
    bytes.iter().fold(0xcbf2_9ce4_8422_2325_u64, |h, &x| {
        (h ^ u64::from(x)).wrapping_mul(0x0100_0000_01b3)
    })
}

/// The first 8 hex digits of the source header: the connector's.
pub fn connector_tag(connector: &str) -> String {
    format!("{:08x}", fnv(connector.as_bytes()) as u32)
}

/// Errors of the connector framework and its sources.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// A connector configuration is wrong; `path` names the setting.
    #[error("{path}: {message}")]
    Invalid { path: String, message: String },
    #[error("no connector named {0:?}")]
    NotFound(String),
    #[error("connector {0:?} already exists")]
    Exists(String),
    #[error("broker: {0}")]
    Kafka(String),
    #[error("{path}: {source}")]
    Io {
        path: String,
        #[source]
        source: std::io::Error,
    },
    #[error("database: {0}")]
    Sql(String),
    /// The source system failed (a Fluvio cluster that does not answer).
    #[error("{0}")]
    Source(String),
    /// A record could not be converted and `errors.tolerance` is `none`.
    #[error("{0}")]
    Record(String),
}

impl Error {
    pub fn invalid(path: impl Into<String>, message: impl Into<String>) -> Self {
        Self::Invalid {
            path: path.into(),
            message: message.into(),
        }
    }

    pub(crate) fn io(path: &std::path::Path, source: std::io::Error) -> Self {
        Self::Io {
            path: path.display().to_string(),
            source,
        }
    }

    pub(crate) fn kafka(e: impl std::fmt::Display) -> Self {
        Self::Kafka(e.to_string())
    }
}

/// A source partition: its key in the offsets topic, `["connector", {…}]` as in Connect.
pub type PartitionKey = Arc<str>;

/// The offsets-topic key of a source partition.
pub fn partition_key(connector: &str, partition: &Value) -> PartitionKey {
    Value::Array(vec![Value::String(connector.into()), partition.clone()])
        .to_string()
        .into()
}

/// One record for the broker, with where it came from.
#[derive(Debug, Clone)]
pub struct SourceRecord {
    pub topic: Arc<str>,
    pub key: Option<Vec<u8>>,
    pub value: Vec<u8>,
    /// Dead-letter context headers; empty for data records.
    pub headers: Option<OwnedHeaders>,
    pub partition: PartitionKey,
    /// Unique within the partition and the same on every read of the source.
    pub id: String,
}

/// What a task's poll returned.
#[derive(Debug, Default)]
pub struct Batch {
    pub records: Vec<SourceRecord>,
    /// Where reading resumes once these records are delivered, per partition.
    pub offsets: Vec<(PartitionKey, Value)>,
    /// Partitions finished by this batch, with their final offsets; the task hears of
    /// them again in [`task::SourceTask::committed`] once those offsets are committed.
    pub ends: Vec<(PartitionKey, Value)>,
    /// Stop the task after this batch with this reason (`errors.tolerance=none`).
    pub fatal: Option<String>,
    /// Source bytes consumed by this batch (for progress).
    pub bytes: u64,
}

/// What a task does with a record it cannot convert.
#[derive(Debug, Clone)]
pub struct ErrorPolicy {
    pub connector: String,
    pub task: usize,
    pub tolerance: Tolerance,
    pub dlq_topic: Arc<str>,
    pub context_headers: bool,
}

impl ErrorPolicy {
    pub fn new(common: &Common, task: usize) -> Self {
        Self {
            connector: common.name.clone(),
            task,
            tolerance: common.tolerance,
            dlq_topic: common.dlq_topic.as_str().into(),
            context_headers: common.dlq_context_headers,
        }
    }

    /// A dead letter at `(partition, id)`: the raw source bytes with headers saying where they came from and
    /// why they were refused (custflow's `custflow.*` headers, and Connect's
    /// `__connect.errors.*` ones when context headers are on).
    pub fn dead_letter(
        &self,
        raw: &[u8],
        key: Option<&str>,
        reason: &str,
        location: &str,
        (partition, id): (PartitionKey, String),
    ) -> SourceRecord {
        let source = format!("connect:{}", self.connector);
        let mut headers =
            dead_letter_headers(&source, -1, -1, "conversion", reason).insert(Header {
                key: "custflow.source.location",
                value: Some(location),
            });
        if self.context_headers {
            let task = self.task.to_string();
            for (k, v) in [
                ("__connect.errors.connector.name", self.connector.as_str()),
                ("__connect.errors.task.id", task.as_str()),
                ("__connect.errors.stage", "VALUE_CONVERTER"),
                (
                    "__connect.errors.exception.class.name",
                    "io.custflow.RecordError",
                ),
                ("__connect.errors.exception.message", reason),
            ] {
                headers = headers.insert(Header {
                    key: k,
                    value: Some(v),
                });
            }
        }
        SourceRecord {
            topic: self.dlq_topic.clone(),
            key: key.map(|k| k.as_bytes().to_vec()),
            value: raw.to_vec(),
            headers: Some(headers),
            partition,
            id,
        }
    }
}
