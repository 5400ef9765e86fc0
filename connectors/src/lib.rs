//! Kafka Connect-style sources and sinks of custflow (DESIGN §9). Today: the SQL sink
//! that keeps `customer_scores`, `customer_score_history` (SCD type 2) and `models`, and
//! the webhook sink that turns matching segment changes into alerts.

pub mod score_sink;
pub mod sql_sink;
pub mod webhook;
