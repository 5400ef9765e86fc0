//! Operations routes: `/metrics` (Prometheus), `/healthz` (liveness), `/readyz` (Redis,
//! broker, built features and moving consumers), `/v1/stats` (the dashboard's figures)
//! and `/openapi.json`.

use std::sync::Arc;
use std::time::Duration;

use axum::extract::State;
use axum::http::StatusCode;
use axum::response::IntoResponse;
use axum::Json;
use custflow_feature_store::conn::Redis;
use custflow_feature_store::keys::Keys;
use serde_json::json;

use crate::auth::Scope;
use crate::routes::Routes;

/// What the process running the API knows about itself: its metrics, its figures and
/// whether a consumer it runs is stalled.
pub trait Status: Send + Sync {
    /// Every metric of the process in the Prometheus text format.
    fn metrics(&self) -> String;
    /// The figures of `/v1/stats`.
    fn stats(&self) -> serde_json::Value;
    /// The first consumer group whose input waits while it does not move, and why.
    fn stalled(&self) -> Option<(String, String)>;
}

/// The state of the operations routes.
#[derive(Clone)]
pub struct OpsState {
    pub status: Arc<dyn Status>,
    pub redis: Redis,
    pub keys: Keys,
    pub brokers: String,
    /// The deployment's `orders` topic: readiness asks the broker for it.
    pub orders_topic: String,
}

pub fn routes() -> Routes<OpsState> {
    Routes::new()
        .get("/metrics", Some(Scope::Admin), metrics)
        .get("/healthz", None, || async { Json(json!({"status": "ok"})) })
        .get("/readyz", None, readyz)
        .get("/v1/stats", Some(Scope::FeaturesRead), stats)
        .get("/openapi.json", None, || async {
            Json(crate::openapi::document())
        })
}

async fn metrics(State(ops): State<OpsState>) -> impl IntoResponse {
    (
        [(
            axum::http::header::CONTENT_TYPE,
            custflow_metrics::CONTENT_TYPE,
        )],
        ops.status.metrics(),
    )
}

async fn readyz(State(ops): State<OpsState>) -> impl IntoResponse {
    let redis_ok = redis::cmd("PING")
        .query_async::<String>(&mut ops.redis.clone())
        .await
        .is_ok();
    // The features are built (every input partition's state is `ready`): not after a
    // start on an empty Redis, or Redis losing its data, until the processors replayed.
    let state_ok = redis::cmd("EXISTS")
        .arg(ops.keys.state_ready())
        .query_async::<bool>(&mut ops.redis.clone())
        .await
        .unwrap_or(false);
    let (brokers, topic) = (ops.brokers.clone(), ops.orders_topic.clone());
    let broker_ok = tokio::task::spawn_blocking(move || {
        custflow_kafka::list_topics(&brokers, &[topic], Duration::from_secs(2)).is_ok()
    })
    .await
    .unwrap_or(false);
    // Input waits and no consumer of it moves (for 15 s): not ready, and why.
    let stalled = ops.status.stalled();
    let status = if redis_ok && broker_ok && state_ok && stalled.is_none() {
        StatusCode::OK
    } else {
        StatusCode::SERVICE_UNAVAILABLE
    };
    let mut body = json!({
        "redis": redis_ok,
        "broker": broker_ok,
        "features": state_ok,
        "processing": stalled.is_none(),
    });
    if let Some((group, why)) = stalled {
        body["reason"] = json!(format!("{group}: {why}"));
    }
    (status, Json(body))
}

async fn stats(State(ops): State<OpsState>) -> Json<serde_json::Value> {
    Json(ops.status.stats())
}
