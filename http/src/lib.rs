//! The HTTP API of custflow, all of it: event ingest, feature lookups, sales analytics,
//! event streams (SSE), the schema registry, the dashboard, operations (`/metrics`,
//! `/healthz`, `/readyz`, `/v1/stats`) and the OpenAPI document, with API keys, scopes
//! and per-route metrics. The Kafka Connect REST API keeps its own port
//! (`custflow_connectors::connect::rest`).

pub mod auth;
pub mod dashboard;
pub mod error;
pub mod features;
pub mod http_metrics;
pub mod ingest;
pub mod openapi;
pub mod ops;
pub mod registry;
pub mod routes;
pub mod sales;
pub mod stream;

use std::sync::Arc;

use axum::Router;
use custflow_schemas::registry::Registry;

use crate::auth::Access;
use crate::http_metrics::HttpMetrics;
use crate::routes::{Route, Routes};

/// Everything the API's routes read and write.
#[derive(Clone)]
pub struct AppState {
    pub ingest: ingest::IngestState,
    pub features: features::FeatureState,
    pub sales: sales::SalesState,
    pub registry: Arc<Registry>,
    pub streams: Arc<stream::StreamHub>,
    pub ops: ops::OpsState,
    /// API keys, their scopes and limits.
    pub access: Arc<Access>,
    /// Requests and latency per route.
    pub http_metrics: Arc<HttpMetrics>,
}

/// Every route of the API with its state.
pub fn routes(state: AppState) -> Routes {
    ingest::router(state.ingest)
        .merge(features::routes().with_state(state.features))
        .merge(sales::routes().with_state(state.sales))
        .merge(registry::routes().with_state(state.registry))
        .merge(stream::routes().with_state(state.streams))
        .merge(dashboard::routes())
        .merge(ops::routes().with_state(state.ops))
}

/// The whole HTTP API: every route, API keys checked against each route's scope, and
/// every request (refused ones too) counted per route.
pub fn app(state: AppState) -> Router {
    let (access, metrics) = (state.access.clone(), state.http_metrics.clone());
    routes(state)
        .into_router(access)
        // Outermost, so refused requests (401, 403, 429) count too.
        .layer(axum::middleware::from_fn_with_state(
            metrics,
            http_metrics::track,
        ))
}

/// Every route of the API with its scope, without any state (for the OpenAPI document's
/// check and the docs).
pub fn route_table() -> Vec<Route> {
    let mut table = Vec::new();
    table.extend_from_slice(ingest::routes().table());
    table.extend_from_slice(features::routes().table());
    table.extend_from_slice(sales::routes().table());
    table.extend_from_slice(registry::routes().table());
    table.extend_from_slice(stream::routes().table());
    table.extend_from_slice(dashboard::routes().table());
    table.extend_from_slice(ops::routes().table());
    table
}
