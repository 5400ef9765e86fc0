//! Getting events into custflow: Kafka client settings and topic administration; the
//! synthetic generator, the REST ingest routes and the HTTP load generator build on them.

pub mod kafka;
pub mod load;
pub mod producer;
pub mod rest;
pub mod synth;

pub use kafka::{ensure_topics, ensure_topics_replicated, list_topics, Error, TopicState};
