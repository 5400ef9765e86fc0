//! Kafka plumbing of custflow, in one place: client settings and topic administration,
//! reading and seeking partitions, the schema registry's log on a compacted topic,
//! consumer progress (lag and stalls), applying a membership's share of partitions to a
//! consumer, and W3C trace context carried in Kafka headers.

pub mod admin;
pub mod assignment;
pub mod client;
pub mod progress;
pub mod registry_store;
pub mod trace;

pub use admin::{ensure_topics, ensure_topics_replicated, list_topics, Error, TopicState};
