//! Kafka Connect-style sources and sinks of custflow (DESIGN §9): the source framework
//! and worker with its Connect-compatible REST API, the CSV spool-dir and PostgreSQL
//! sources, the SQL sink that keeps `customer_scores`, `customer_score_history` (SCD
//! type 2) and `models`, and the webhook sink that turns segment changes into alerts.

pub mod connect;
#[cfg(feature = "fluvio")]
pub mod fluvio_sink;
#[cfg(feature = "fluvio")]
pub mod fluvio_source;
pub mod pg_source;
pub mod sales_sink;
pub mod score_sink;
pub mod spooldir;
pub mod sql_sink;
pub mod webhook;
