//! Redis layout of DESIGN §5 (the one place that knows key names and what is stored
//! under them), features computed from the stored state as of any instant, and the
//! feature API, topic-to-SSE bridge and dashboard built on them.

pub mod api;
pub mod conn;
pub mod dashboard;
pub mod features;
pub mod keys;
pub mod members;
pub mod model;
pub mod registry_api;
pub mod sales;
pub mod sales_api;
pub mod state;
pub mod stream;
