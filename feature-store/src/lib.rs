//! Redis key layout of DESIGN §5 (the one place that knows key names); the feature API,
//! topic-to-SSE bridge and dashboard are built on it.

pub mod keys;
