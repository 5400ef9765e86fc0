//! Prometheus metrics for every custflow process: one [`Registry`] per scrape that gathers
//! each component's [`Collector`], encoded by `prometheus-client` in the Prometheus text
//! format, and the latency [`Histogram`] the components share.

pub mod exposition;
pub mod histogram;

pub use exposition::{Collector, DescriptorEncoder, Families, Registry, CONTENT_TYPE};
pub use histogram::{Counts, Histogram, Recent};
