//! Prometheus metric primitives shared by the processors, the sinks and the HTTP API.

pub mod histogram;

pub use histogram::Histogram;
