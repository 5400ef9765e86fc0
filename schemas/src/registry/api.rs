//! Request and response bodies of the Confluent-compatible registry endpoints.

use serde::{Deserialize, Serialize};

/// `POST /subjects/{subject}/versions` and `POST /subjects/{subject}` body.
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct RegisterRequest {
    pub schema: String,
    /// `AVRO` (the default) is the only type custflow serves.
    #[serde(default)]
    pub schema_type: Option<String>,
}

/// `POST /subjects/{subject}/versions` answer.
#[derive(Debug, Clone, Deserialize, Serialize)]
pub struct RegisterResponse {
    pub id: u32,
}

/// `GET /schemas/ids/{id}` answer.
#[derive(Debug, Clone, Deserialize, Serialize)]
pub struct SchemaResponse {
    pub schema: String,
}

/// Confluent's error body.
#[derive(Debug, Clone, Deserialize, Serialize)]
pub struct ErrorResponse {
    pub error_code: u32,
    pub message: String,
}
