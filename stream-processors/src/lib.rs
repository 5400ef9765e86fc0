//! Stream processors of custflow: a consumer group over the input topics that keeps
//! every customer's feature state in Redis, exactly once in effect.
//!
//! Delivery: at-least-once from Kafka, exactly once in effect in Redis. Each customer's
//! state records the source position of the last event applied, so a re-delivered event
//! is skipped; consumer offsets are committed only after Redis confirmed the writes (and
//! the broker acknowledged any dead-letter and score records of the batch).

pub mod clock;
pub mod error;
pub mod metrics;
pub mod model_job;
pub use custflow_feature_store::pass;
pub mod replay;
pub mod runtime;
pub mod scoring;
pub mod store;

pub use clock::Clock;
pub use error::{Error, Result};
pub use runtime::{Processor, ProcessorConfig};
