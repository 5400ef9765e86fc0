//! Error types of the schemas crate: decode failures and field-level validation problems.

use serde::{Deserialize, Serialize};

/// One problem with one field of an event, addressed by its path (`items[2].quantity`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct FieldError {
    /// Path of the field inside the event, `""` for the event itself.
    pub path: String,
    /// Machine-readable code: `missing`, `empty`, `type`, `enum`, `negative`, `non_finite`,
    /// `zero`, `mismatch`, `future`, `currency`, `format`.
    pub code: String,
    /// Human-readable explanation.
    pub message: String,
}

impl FieldError {
    pub fn new(path: impl Into<String>, code: &str, message: impl Into<String>) -> Self {
        Self {
            path: path.into(),
            code: code.to_owned(),
            message: message.into(),
        }
    }
}

impl std::fmt::Display for FieldError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        if self.path.is_empty() {
            write!(f, "{}: {}", self.code, self.message)
        } else {
            write!(f, "{}: {} ({})", self.path, self.message, self.code)
        }
    }
}

/// Errors of the schemas crate.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The event was read but is not valid; every problem is listed.
    #[error("invalid event: {}", join(.0))]
    Invalid(Vec<FieldError>),
    /// The bytes are not JSON.
    #[error("malformed JSON: {0}")]
    Json(#[from] serde_json::Error),
    /// The bytes are not a Confluent-framed Avro datum of a known schema.
    #[error("malformed Avro: {0}")]
    Avro(String),
    /// The schema id in the Confluent header is not registered.
    #[error("unknown schema id {0}")]
    UnknownSchemaId(u32),
    /// The registry refused a schema or a lookup.
    #[error("schema registry: {0}")]
    Registry(#[from] crate::registry::RegistryError),
}

impl Error {
    /// The field errors, when this is a validation failure.
    pub fn field_errors(&self) -> Option<&[FieldError]> {
        match self {
            Error::Invalid(errs) => Some(errs),
            _ => None,
        }
    }

    /// A short reason code for dead-letter headers and metrics.
    pub fn reason(&self) -> &'static str {
        match self {
            Error::Invalid(_) => "invalid",
            Error::Json(_) => "malformed_json",
            Error::Avro(_) => "malformed_avro",
            Error::UnknownSchemaId(_) => "unknown_schema",
            Error::Registry(_) => "registry",
        }
    }
}

impl From<apache_avro::Error> for Error {
    fn from(e: apache_avro::Error) -> Self {
        Error::Avro(e.to_string())
    }
}

fn join(errs: &[FieldError]) -> String {
    errs.iter()
        .map(ToString::to_string)
        .collect::<Vec<_>>()
        .join("; ")
}

pub type Result<T, E = Error> = std::result::Result<T, E>;
