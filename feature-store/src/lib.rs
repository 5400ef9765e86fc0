//! Redis layout of DESIGN §5 (the one place that knows key names and what is stored
//! under them), features computed from the stored state as of any instant, sales
//! rollups, the served model and the consumers' membership leases. Redis only: the HTTP
//! API over it is `custflow-http`, the Kafka side `custflow-kafka`.

pub mod conn;
pub mod features;
pub mod keys;
pub mod members;
pub mod model;
pub mod pass;
pub mod sales;
pub mod state;
