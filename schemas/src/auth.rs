//! API keys and scopes (DESIGN §6): `events:write`, `features:read`, `sales:read`
//! (aggregated sales analytics only, no customer's features), `admin`. Keys are
//! kept only as SHA-256 digests and compared in constant time; they are never logged.

use sha2::{Digest, Sha256};

/// A permission a route needs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Scope {
    EventsWrite,
    FeaturesRead,
    SalesRead,
    Admin,
}

impl Scope {
    pub fn parse(s: &str) -> Option<Self> {
        match s {
            "events:write" => Some(Scope::EventsWrite),
            "features:read" => Some(Scope::FeaturesRead),
            "sales:read" => Some(Scope::SalesRead),
            "admin" => Some(Scope::Admin),
            _ => None,
        }
    }

    pub fn as_str(self) -> &'static str {
        match self {
            Scope::EventsWrite => "events:write",
            Scope::FeaturesRead => "features:read",
            Scope::SalesRead => "sales:read",
            Scope::Admin => "admin",
        }
    }
}

/// The scope a request needs, by method and path; `None` for open routes (health,
/// readiness, the OpenAPI document).
pub fn required_scope(method: &str, path: &str) -> Option<Scope> {
    match path {
        "/healthz" | "/readyz" | "/openapi.json" => None,
        "/v1/events" => Some(Scope::EventsWrite),
        p if p.starts_with("/v1/sales/") => Some(Scope::SalesRead),
        p if (p.starts_with("/subjects") && method != "GET")
            || p == "/metrics"
            || p == "/"
            || p.starts_with("/connector") =>
        {
            Some(Scope::Admin)
        }
        _ => Some(Scope::FeaturesRead),
    }
}

/// Why a request was refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Denied {
    /// No key, or an unknown key (401).
    Unauthenticated,
    /// A known key without the scope (403).
    Forbidden(Scope),
}

#[derive(Clone)]
struct Key {
    digest: [u8; 32],
    scopes: Vec<Scope>,
}

/// The configured keys; empty means authentication is off.
#[derive(Clone, Default)]
pub struct ApiKeys {
    keys: Vec<Key>,
}

impl std::fmt::Debug for ApiKeys {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // Never print keys, not even their digests.
        write!(f, "ApiKeys({} keys)", self.keys.len())
    }
}

fn digest(key: &str) -> [u8; 32] {
    Sha256::digest(key.as_bytes()).into()
}

fn constant_time_eq(a: &[u8; 32], b: &[u8; 32]) -> bool {
    a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

impl ApiKeys {
    /// Parses `KEY=scope+scope;KEY=scope` (or `sha256:HEX=scope` to configure a digest
    /// instead of the key itself).
    pub fn parse(spec: &str) -> Result<Self, String> {
        let mut keys = Vec::new();
        for (i, entry) in spec
            .split(';')
            .map(str::trim)
            .filter(|e| !e.is_empty())
            .enumerate()
        {
            let (key, scopes) = entry
                .rsplit_once('=')
                .ok_or_else(|| format!("API key {}: expected KEY=scope+scope", i + 1))?;
            let scopes = scopes
                .split('+')
                .map(|s| {
                    Scope::parse(s.trim())
                        .ok_or_else(|| format!("API key {}: unknown scope {s:?}", i + 1))
                })
                .collect::<Result<Vec<_>, _>>()?;
            let digest = match key.strip_prefix("sha256:") {
                Some(hex) => {
                    let bytes: Vec<u8> = (0..hex.len())
                        .step_by(2)
                        .map(|j| {
                            hex.get(j..j + 2)
                                .and_then(|h| u8::from_str_radix(h, 16).ok())
                        })
                        .collect::<Option<_>>()
                        .ok_or_else(|| format!("API key {}: bad sha256 hex", i + 1))?;
                    bytes
                        .try_into()
                        .map_err(|_| format!("API key {}: a sha256 digest has 32 bytes", i + 1))?
                }
                None if key.len() < 16 => {
                    return Err(format!("API key {}: use at least 16 characters", i + 1))
                }
                None => digest(key),
            };
            keys.push(Key { digest, scopes });
        }
        Ok(Self { keys })
    }

    pub fn is_empty(&self) -> bool {
        self.keys.is_empty()
    }

    /// Checks an `Authorization` header value for a scope.
    pub fn check(&self, authorization: Option<&str>, scope: Scope) -> Result<(), Denied> {
        let token = authorization
            .and_then(|h| h.strip_prefix("Bearer "))
            .map(str::trim)
            .ok_or(Denied::Unauthenticated)?;
        let d = digest(token);
        // Compare against every key so timing does not reveal which one matched.
        let mut found: Option<&Key> = None;
        for k in &self.keys {
            if constant_time_eq(&k.digest, &d) {
                found = Some(k);
            }
        }
        let key = found.ok_or(Denied::Unauthenticated)?;
        if key.scopes.iter().any(|s| *s == scope || *s == Scope::Admin) {
            Ok(())
        } else {
            Err(Denied::Forbidden(scope))
        }
    }
}

/// Axum middleware: every route needs the scope of [`required_scope`] when keys are
/// configured; 401 without a known key, 403 without the scope, in the one error shape.
pub async fn require_scopes(
    axum::extract::State(keys): axum::extract::State<std::sync::Arc<ApiKeys>>,
    req: axum::extract::Request,
    next: axum::middleware::Next,
) -> axum::response::Response {
    use axum::response::IntoResponse;

    use crate::api::ApiError;
    if keys.is_empty() {
        return next.run(req).await;
    }
    let Some(scope) = required_scope(req.method().as_str(), req.uri().path()) else {
        return next.run(req).await;
    };
    let header = req
        .headers()
        .get(axum::http::header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok());
    match keys.check(header, scope) {
        Ok(()) => next.run(req).await,
        Err(Denied::Unauthenticated) => ApiError::new(
            axum::http::StatusCode::UNAUTHORIZED,
            "unauthenticated",
            "send an API key as Authorization: Bearer <key>",
        )
        .into_response(),
        Err(Denied::Forbidden(s)) => ApiError::new(
            axum::http::StatusCode::FORBIDDEN,
            "forbidden",
            format!("this API key lacks the {} scope", s.as_str()),
        )
        .into_response(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_scopes_and_routes() {
        let keys = ApiKeys::parse("writer-key-0123456789=events:write; reader-key-0123456789=features:read ;admin-key-0123456789=admin").unwrap();
        let bearer = |k: &str| format!("Bearer {k}");
        assert_eq!(
            keys.check(None, Scope::FeaturesRead),
            Err(Denied::Unauthenticated)
        );
        assert_eq!(
            keys.check(Some("Bearer nope"), Scope::FeaturesRead),
            Err(Denied::Unauthenticated)
        );
        assert_eq!(
            keys.check(Some(&bearer("writer-key-0123456789")), Scope::EventsWrite),
            Ok(())
        );
        assert_eq!(
            keys.check(Some(&bearer("writer-key-0123456789")), Scope::FeaturesRead),
            Err(Denied::Forbidden(Scope::FeaturesRead))
        );
        assert_eq!(
            keys.check(Some(&bearer("admin-key-0123456789")), Scope::EventsWrite),
            Ok(())
        );
        assert_eq!(
            required_scope("POST", "/v1/events"),
            Some(Scope::EventsWrite)
        );
        assert_eq!(
            required_scope("GET", "/v1/customers/a/features"),
            Some(Scope::FeaturesRead)
        );
        assert_eq!(
            required_scope("POST", "/subjects/x/versions"),
            Some(Scope::Admin)
        );
        assert_eq!(
            required_scope("GET", "/subjects"),
            Some(Scope::FeaturesRead)
        );
        assert_eq!(
            required_scope("GET", "/v1/sales/trends"),
            Some(Scope::SalesRead)
        );
        let analyst = ApiKeys::parse("analyst-key-0123456789=sales:read").unwrap();
        assert_eq!(
            analyst.check(Some(&bearer("analyst-key-0123456789")), Scope::FeaturesRead),
            Err(Denied::Forbidden(Scope::FeaturesRead))
        );
        assert_eq!(required_scope("GET", "/healthz"), None);
        assert!(ApiKeys::parse("short=admin").is_err());
        assert!(ApiKeys::parse("long-enough-key-123=root").is_err());
        let hex: String = digest("hashed-key-0123456789")
            .iter()
            .map(|b| format!("{b:02x}"))
            .collect();
        let hashed = ApiKeys::parse(&format!("sha256:{hex}=features:read")).unwrap();
        assert_eq!(
            hashed.check(Some("Bearer hashed-key-0123456789"), Scope::FeaturesRead),
            Ok(())
        );
        assert!(!format!("{keys:?}").contains("key-0123"));
    }
}
