//! Confluent-compatible schema-registry endpoints over the registry core, so unmodified
//! Confluent clients (serializers, `SchemaRegistryClient`) work against custflow.

use std::sync::Arc;

use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::Json;
use custflow_schemas::registry::api::{
    ErrorResponse, RegisterRequest, RegisterResponse, SchemaResponse,
};
use custflow_schemas::registry::{Registry, RegistryError, VersionRef};
use serde_json::json;

use crate::auth::Scope;
use crate::routes::Routes;

const CONTENT_TYPE: &str = "application/vnd.schemaregistry.v1+json";

/// A registry error in Confluent's shape (`{"error_code", "message"}`).
pub struct RegError(RegistryError);

impl IntoResponse for RegError {
    fn into_response(self) -> Response {
        let status = match self.0.code() {
            40401..=40403 => StatusCode::NOT_FOUND,
            409 => StatusCode::CONFLICT,
            42201..=42299 => StatusCode::UNPROCESSABLE_ENTITY,
            _ => StatusCode::INTERNAL_SERVER_ERROR,
        };
        let mut r = (
            status,
            Json(ErrorResponse {
                error_code: self.0.code(),
                message: self.0.to_string(),
            }),
        )
            .into_response();
        r.headers_mut().insert(
            axum::http::header::CONTENT_TYPE,
            axum::http::HeaderValue::from_static(CONTENT_TYPE),
        );
        r
    }
}

impl From<RegistryError> for RegError {
    fn from(e: RegistryError) -> Self {
        Self(e)
    }
}

/// The registry routes.
pub fn routes() -> Routes<Arc<Registry>> {
    let (read, admin) = (Some(Scope::FeaturesRead), Some(Scope::Admin));
    Routes::new()
        .get("/subjects", read, subjects)
        .post("/subjects/{subject}", admin, lookup)
        .get("/subjects/{subject}/versions", read, versions)
        .post("/subjects/{subject}/versions", admin, register)
        .get("/subjects/{subject}/versions/{version}", read, version)
        .get("/schemas/ids/{id}", read, by_id)
        .get("/config", read, || async {
            Json(json!({"compatibilityLevel": "BACKWARD"}))
        })
}

fn parse_body(body: &[u8]) -> Result<RegisterRequest, RegError> {
    let req: RegisterRequest = serde_json::from_slice(body)
        .map_err(|e| RegError(RegistryError::InvalidSchema(format!("request body: {e}"))))?;
    match req.schema_type.as_deref() {
        None | Some("AVRO") => Ok(req),
        Some(other) => Err(RegError(RegistryError::InvalidSchema(format!(
            "schemaType {other} is not supported; custflow serves AVRO"
        )))),
    }
}

async fn subjects(State(r): State<Arc<Registry>>) -> Json<Vec<String>> {
    Json(r.subjects())
}

async fn versions(
    State(r): State<Arc<Registry>>,
    Path(subject): Path<String>,
) -> Result<Json<Vec<u32>>, RegError> {
    Ok(Json(r.versions(&subject)?))
}

async fn version(
    State(r): State<Arc<Registry>>,
    Path((subject, v)): Path<(String, String)>,
) -> Result<Json<serde_json::Value>, RegError> {
    let which = VersionRef::parse(&v)
        .ok_or_else(|| RegistryError::VersionNotFound(subject.clone(), v.clone()))?;
    let sv = r.version(&subject, which)?;
    Ok(Json(
        json!({"subject": sv.subject, "version": sv.version, "id": sv.id, "schema": sv.schema}),
    ))
}

async fn by_id(
    State(r): State<Arc<Registry>>,
    Path(id): Path<u32>,
) -> Result<Json<SchemaResponse>, RegError> {
    if r.schema(id).is_err() {
        r.reload().await?;
    }
    Ok(Json(SchemaResponse {
        schema: r.schema(id)?.text.clone(),
    }))
}

async fn register(
    State(r): State<Arc<Registry>>,
    Path(subject): Path<String>,
    body: axum::body::Bytes,
) -> Result<Json<RegisterResponse>, RegError> {
    let req = parse_body(&body)?;
    let sv = r.register(&subject, &req.schema).await?;
    Ok(Json(RegisterResponse { id: sv.id }))
}

async fn lookup(
    State(r): State<Arc<Registry>>,
    Path(subject): Path<String>,
    body: axum::body::Bytes,
) -> Result<Json<serde_json::Value>, RegError> {
    let req = parse_body(&body)?;
    let sv = r.lookup(&subject, &req.schema)?;
    Ok(Json(
        json!({"subject": sv.subject, "version": sv.version, "id": sv.id, "schema": sv.schema}),
    ))
}
