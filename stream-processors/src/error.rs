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
}

impl Error {
    /// Whether retrying the same work later can succeed.
    pub fn retryable(&self) -> bool {
        matches!(self, Error::Kafka(_) | Error::Redis(_))
    }
}

pub type Result<T, E = Error> = std::result::Result<T, E>;
