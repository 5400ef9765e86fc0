//! Kafka Connect-style sources and sinks of custflow (DESIGN §9). Today: the SQL sink
//! that keeps `customer_scores`, `customer_score_history` (SCD type 2) and `models`.

pub mod score_sink;
pub mod sql_sink;
