//! Getting events into custflow: Kafka client settings and topic administration; the
//! synthetic generator and the REST ingest routes build on them.

pub mod kafka;
pub mod producer;
pub mod rest;
pub mod synth;

pub use kafka::{ensure_topics, list_topics, Error, TopicState};
