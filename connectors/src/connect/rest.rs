//! The worker's management REST API, compatible with Kafka Connect's: the same paths,
//! status codes and JSON shapes, so Connect tooling and scripts work against custflow.
//!
//! Errors carry Connect's `error_code` and `message` and, beside them, custflow's one
//! error shape (`error.code`, `error.message`, `error.details` with field paths).

use std::collections::BTreeMap;

use axum::extract::rejection::JsonRejection;
use axum::extract::{Path, Query, State};
use axum::http::{header, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::Json;
use custflow_http::auth::Scope;
use custflow_http::routes::Routes;
use serde::Deserialize;
use serde_json::{json, Value};

use super::task;
use super::worker::Worker;
use super::{ConnectorClass, ConnectorConfig, Error};

/// An error in Connect's shape plus custflow's.
pub struct ConnectError {
    status: StatusCode,
    code: &'static str,
    message: String,
    details: Vec<Value>,
}

impl ConnectError {
    fn new(status: StatusCode, code: &'static str, message: impl Into<String>) -> Self {
        Self {
            status,
            code,
            message: message.into(),
            details: Vec::new(),
        }
    }
}

impl From<Error> for ConnectError {
    fn from(e: Error) -> Self {
        match &e {
            Error::Invalid { path, message } => {
                let mut err = Self::new(StatusCode::BAD_REQUEST, "invalid_config", e.to_string());
                err.details = vec![json!({"path": path, "code": "invalid", "message": message})];
                err
            }
            Error::NotFound(_) => Self::new(StatusCode::NOT_FOUND, "not_found", e.to_string()),
            Error::Exists(_) => Self::new(StatusCode::CONFLICT, "conflict", e.to_string()),
            Error::Kafka(_) => Self::new(
                StatusCode::SERVICE_UNAVAILABLE,
                "unavailable",
                e.to_string(),
            ),
            _ => Self::new(StatusCode::INTERNAL_SERVER_ERROR, "internal", e.to_string()),
        }
    }
}

impl From<JsonRejection> for ConnectError {
    fn from(r: JsonRejection) -> Self {
        Self::new(StatusCode::BAD_REQUEST, "invalid_json", r.body_text())
    }
}

impl IntoResponse for ConnectError {
    fn into_response(self) -> Response {
        let body = json!({
            "error_code": self.status.as_u16(),
            "message": self.message,
            "error": {"code": self.code, "message": self.message, "details": self.details},
        });
        (self.status, Json(body)).into_response()
    }
}

type Result<T> = std::result::Result<T, ConnectError>;

/// The management routes (scope `admin`), plus `/metrics` (`admin`) and `/healthz`
/// (open).
pub fn routes(worker: Worker) -> Routes {
    let admin = Some(Scope::Admin);
    Routes::new()
        .get("/", admin, root)
        .get("/connectors", admin, list)
        .post("/connectors", admin, create)
        .get("/connectors/{name}", admin, info)
        .delete("/connectors/{name}", admin, delete)
        .get("/connectors/{name}/config", admin, config)
        .put("/connectors/{name}/config", admin, put_config)
        .get("/connectors/{name}/status", admin, status)
        .get("/connectors/{name}/tasks", admin, tasks)
        .put("/connectors/{name}/pause", admin, pause)
        .put("/connectors/{name}/resume", admin, resume)
        .post("/connectors/{name}/restart", admin, restart)
        .get("/connector-plugins", admin, plugins)
        .put(
            "/connector-plugins/{class}/config/validate",
            admin,
            validate,
        )
        .get("/metrics", admin, metrics)
        .get("/healthz", None, || async { Json(json!({"status": "ok"})) })
        .with_state(worker)
}

async fn root() -> Json<Value> {
    Json(json!({"version": env!("CARGO_PKG_VERSION"), "commit": "", "kafka_cluster_id": null}))
}

#[derive(Deserialize)]
struct ListQuery {
    #[serde(default)]
    expand: Option<String>,
}

async fn list(State(w): State<Worker>, Query(q): Query<ListQuery>) -> Result<Json<Value>> {
    let names = w.names().await;
    match q.expand.as_deref() {
        None => Ok(Json(json!(names))),
        Some(kind @ ("status" | "info")) => {
            let mut out = serde_json::Map::new();
            for n in names {
                let v = if kind == "status" {
                    json!({"status": w.status(&n).await?})
                } else {
                    json!({"info": w.info(&n).await?})
                };
                out.insert(n, v);
            }
            Ok(Json(Value::Object(out)))
        }
        Some(other) => Err(ConnectError::new(
            StatusCode::BAD_REQUEST,
            "invalid_query",
            format!("expand={other:?} is not status or info"),
        )),
    }
}

#[derive(Deserialize)]
struct CreateBody {
    name: Option<String>,
    config: Option<BTreeMap<String, Value>>,
}

async fn create(
    State(w): State<Worker>,
    body: std::result::Result<Json<CreateBody>, JsonRejection>,
) -> Result<Response> {
    let Json(body) = body?;
    let name = body
        .name
        .ok_or_else(|| Error::invalid("name", "is required"))?;
    let config = body
        .config
        .ok_or_else(|| Error::invalid("config", "is required"))?;
    let config = ConnectorConfig::from_json(&name, config)?;
    w.create(config).await?;
    let info = w.info(&name).await?;
    Ok((
        StatusCode::CREATED,
        [(header::LOCATION, format!("/connectors/{name}"))],
        Json(info),
    )
        .into_response())
}

async fn info(State(w): State<Worker>, Path(name): Path<String>) -> Result<Response> {
    Ok(Json(w.info(&name).await?).into_response())
}

async fn config(State(w): State<Worker>, Path(name): Path<String>) -> Result<Response> {
    Ok(Json(w.info(&name).await?.config).into_response())
}

async fn put_config(
    State(w): State<Worker>,
    Path(name): Path<String>,
    body: std::result::Result<Json<BTreeMap<String, Value>>, JsonRejection>,
) -> Result<Response> {
    let Json(body) = body?;
    let config = ConnectorConfig::from_json(&name, body)?;
    let created = w.put(config).await?;
    let info = w.info(&name).await?;
    let status = if created {
        StatusCode::CREATED
    } else {
        StatusCode::OK
    };
    Ok((status, Json(info)).into_response())
}

async fn status(State(w): State<Worker>, Path(name): Path<String>) -> Result<Json<Value>> {
    Ok(Json(w.status(&name).await?))
}

async fn tasks(State(w): State<Worker>, Path(name): Path<String>) -> Result<Json<Value>> {
    let info = w.info(&name).await?;
    Ok(Json(json!(info
        .tasks
        .iter()
        .map(|id| json!({"id": id, "config": info.config}))
        .collect::<Vec<_>>())))
}

async fn pause(State(w): State<Worker>, Path(name): Path<String>) -> Result<StatusCode> {
    w.set_paused(&name, true).await?;
    Ok(StatusCode::ACCEPTED)
}

async fn resume(State(w): State<Worker>, Path(name): Path<String>) -> Result<StatusCode> {
    w.set_paused(&name, false).await?;
    Ok(StatusCode::ACCEPTED)
}

async fn restart(State(w): State<Worker>, Path(name): Path<String>) -> Result<StatusCode> {
    w.restart(&name).await?;
    Ok(StatusCode::NO_CONTENT)
}

async fn delete(State(w): State<Worker>, Path(name): Path<String>) -> Result<StatusCode> {
    w.delete(&name).await?;
    Ok(StatusCode::NO_CONTENT)
}

async fn plugins() -> Json<Value> {
    Json(json!(ConnectorClass::ALL
        .iter()
        .map(
            |c| json!({"class": c.as_str(), "type": "source", "version": env!("CARGO_PKG_VERSION")})
        )
        .collect::<Vec<_>>()))
}

/// Connect's validation answer: the error count and one entry per problem.
async fn validate(
    State(w): State<Worker>,
    Path(class): Path<String>,
    body: std::result::Result<Json<BTreeMap<String, Value>>, JsonRejection>,
) -> Result<Json<Value>> {
    let Json(body) = body?;
    let mut config = super::config::string_settings(body)?;
    config
        .entry("connector.class".into())
        .or_insert(class.clone());
    let name = config
        .get("name")
        .cloned()
        .unwrap_or_else(|| "validate".into());
    let checked = ConnectorConfig::new(&name, config)
        .and_then(|c| task::validate(&c, &w.topics()).map(|_| ()));
    let configs = match &checked {
        Ok(()) => Vec::new(),
        Err(Error::Invalid { path, message }) => {
            let key = path.strip_prefix("config.").unwrap_or(path);
            vec![json!({"definition": {"name": key}, "value": {"name": key, "errors": [message]}})]
        }
        Err(e) => vec![json!({"definition": {"name": ""}, "value": {"errors": [e.to_string()]}})],
    };
    Ok(Json(json!({
        "name": class,
        "error_count": configs.len(),
        "groups": [],
        "configs": configs,
    })))
}

async fn metrics(State(w): State<Worker>) -> impl IntoResponse {
    (
        [(header::CONTENT_TYPE, custflow_metrics::CONTENT_TYPE)],
        custflow_metrics::Registry::of(w.metrics()).render(),
    )
}
