//! Getting events into custflow: the input producer, the synthetic generator and the
//! HTTP load generator (the REST ingest routes are `custflow_http::ingest`, topic
//! administration `custflow_kafka::admin`).

pub mod load;
pub mod producer;
pub mod synth;
