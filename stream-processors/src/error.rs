//! Errors of the processors; `retryable` says whether trying again can help.

/// What can stop a processor.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("kafka: {0}")]
    Kafka(#[from] rdkafka::error::KafkaError),
    #[error("redis: {0}")]
    Redis(#[from] redis::RedisError),
    #[error("stored state of customer {customer} is unreadable: {reason}")]
    CorruptState { customer: String, reason: String },
    #[error("schema registry: {0}")]
    Registry(#[from] custflow_schemas::registry::RegistryError),
    #[error("{0}")]
    Config(String),
    /// Redis no longer holds the state of these input partitions (it restarted empty,
    /// or was wiped): they must be replayed from the start.
    #[error("Redis lost the state of partitions {0:?}")]
    StateLost(Vec<i32>),
    /// The state of these partitions changed since the batch read it (a write that was
    /// delayed, or another instance now owning them): the batch is read again.
    #[error("the state of partitions {0:?} changed since it was read")]
    Conflict(Vec<i32>),
}

impl Error {
    /// Whether retrying the same work later can succeed.
    pub fn retryable(&self) -> bool {
        matches!(self, Error::Kafka(_) | Error::Redis(_) | Error::Conflict(_))
    }
}

pub type Result<T, E = Error> = std::result::Result<T, E>;
