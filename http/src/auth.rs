//! API keys, scopes and per-key limits (DESIGN §6): `events:write`, `features:read`,
//! `sales:read` (aggregated sales analytics only, no customer's features), `admin`. Keys
//! are kept only as SHA-256 digests and compared in constant time; they are never logged.
//! Each key has a request rate (token bucket) and a number of open event streams.

use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

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

/// Why an API key specification was refused (keys are counted from 1; the key itself is
/// never part of the message).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum KeyError {
    #[error("API key {0}: expected KEY=scope+scope")]
    Shape(usize),
    #[error("API key {0}: unknown scope {1:?}")]
    UnknownScope(usize, String),
    #[error("API key {0}: bad sha256 hex")]
    BadHex(usize),
    #[error("API key {0}: a sha256 digest has 32 bytes")]
    DigestLength(usize),
    #[error("API key {0}: use at least 16 characters")]
    TooShort(usize),
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
    pub fn parse(spec: &str) -> Result<Self, KeyError> {
        let mut keys = Vec::new();
        for (i, entry) in spec
            .split(';')
            .map(str::trim)
            .filter(|e| !e.is_empty())
            .enumerate()
        {
            let n = i + 1;
            let (key, scopes) = entry.rsplit_once('=').ok_or(KeyError::Shape(n))?;
            let scopes = scopes
                .split('+')
                .map(|s| {
                    Scope::parse(s.trim()).ok_or_else(|| KeyError::UnknownScope(n, s.to_owned()))
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
                        .ok_or(KeyError::BadHex(n))?;
                    bytes.try_into().map_err(|_| KeyError::DigestLength(n))?
                }
                None if key.len() < 16 => return Err(KeyError::TooShort(n)),
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
        self.authorize(authorization, scope).map(|_| ())
    }

    /// Which key (by position) an `Authorization` header value names, if it has `scope`.
    fn authorize(&self, authorization: Option<&str>, scope: Scope) -> Result<usize, Denied> {
        let token = authorization
            .and_then(|h| h.strip_prefix("Bearer "))
            .map(str::trim)
            .ok_or(Denied::Unauthenticated)?;
        let d = digest(token);
        // Compare against every key so timing does not reveal which one matched.
        let mut found: Option<(usize, &Key)> = None;
        for (i, k) in self.keys.iter().enumerate() {
            if constant_time_eq(&k.digest, &d) {
                found = Some((i, k));
            }
        }
        let (i, key) = found.ok_or(Denied::Unauthenticated)?;
        if key.scopes.iter().any(|s| *s == scope || *s == Scope::Admin) {
            Ok(i)
        } else {
            Err(Denied::Forbidden(scope))
        }
    }
}

/// Per-key limits; they apply when keys are configured (without keys, on loopback, the
/// server is a developer's own).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limits {
    /// Requests per second per key, with bursts of one second's worth; 0 = unlimited.
    pub requests_per_s: u32,
    /// Event streams (`/v1/stream/*`) a key may hold open at once; 0 = unlimited.
    pub streams: u32,
}

impl Default for Limits {
    fn default() -> Self {
        Self {
            requests_per_s: 5_000,
            streams: 16,
        }
    }
}

/// A token bucket holding up to one second of requests.
#[derive(Debug)]
struct Bucket {
    tokens: f64,
    at: Instant,
}

impl Bucket {
    /// Takes one request at `now`, or says how long until one is allowed.
    fn take(&mut self, per_s: u32, now: Instant) -> Result<(), Duration> {
        let rate = f64::from(per_s);
        let refill = now.saturating_duration_since(self.at).as_secs_f64() * rate;
        self.tokens = (self.tokens + refill).min(rate);
        self.at = now;
        if self.tokens >= 1.0 {
            self.tokens -= 1.0;
            Ok(())
        } else {
            Err(Duration::from_secs_f64((1.0 - self.tokens) / rate))
        }
    }
}

/// What one key uses now.
#[derive(Debug)]
struct Usage {
    bucket: Mutex<Bucket>,
    streams: Arc<AtomicU32>,
}

/// An open event stream of a key, given back when the response body is dropped (no
/// counter when streams are unlimited).
struct StreamSlot(Option<Arc<AtomicU32>>);

impl Drop for StreamSlot {
    fn drop(&mut self) {
        if let Some(open) = &self.0 {
            open.fetch_sub(1, Ordering::AcqRel);
        }
    }
}

/// The keys, their limits and their current use: the state of [`require_scopes`].
#[derive(Debug)]
pub struct Access {
    keys: ApiKeys,
    limits: Limits,
    usage: Vec<Usage>,
}

impl Access {
    /// No keys: every request passes (a developer's server on loopback).
    pub fn open() -> Arc<Self> {
        Self::new(ApiKeys::default(), Limits::default())
    }

    pub fn new(keys: ApiKeys, limits: Limits) -> Arc<Self> {
        let now = Instant::now();
        let usage = keys
            .keys
            .iter()
            .map(|_| Usage {
                bucket: Mutex::new(Bucket {
                    tokens: f64::from(limits.requests_per_s),
                    at: now,
                }),
                streams: Arc::new(AtomicU32::new(0)),
            })
            .collect();
        Arc::new(Self {
            keys,
            limits,
            usage,
        })
    }

    /// Counts a request of key `key` against its rate.
    fn admit(&self, key: usize) -> Result<(), Duration> {
        let per_s = self.limits.requests_per_s;
        let Some(u) = self.usage.get(key).filter(|_| per_s > 0) else {
            return Ok(());
        };
        match u.bucket.lock() {
            Ok(mut b) => b.take(per_s, Instant::now()),
            Err(_) => Ok(()),
        }
    }

    /// Opens an event stream for key `key`, if it holds fewer than its limit.
    fn open_stream(&self, key: usize) -> Option<StreamSlot> {
        let Some(u) = self.usage.get(key).filter(|_| self.limits.streams > 0) else {
            return Some(StreamSlot(None));
        };
        if u.streams.fetch_add(1, Ordering::AcqRel) >= self.limits.streams {
            u.streams.fetch_sub(1, Ordering::AcqRel);
            return None;
        }
        Some(StreamSlot(Some(u.streams.clone())))
    }
}

/// Axum middleware (see [`crate::routes::Routes::into_router`]): every route needs the
/// scope it was declared with when keys are configured; 401 without a known key, 403
/// without the scope, 429 over the key's limits, in the one error shape.
pub async fn require_scopes(
    axum::extract::State((access, scopes)): axum::extract::State<(
        Arc<Access>,
        Arc<crate::routes::Scopes>,
    )>,
    req: axum::extract::Request,
    next: axum::middleware::Next,
) -> axum::response::Response {
    use axum::http::StatusCode;
    use axum::response::IntoResponse;
    use futures::StreamExt;

    use crate::error::ApiError;
    if access.keys.is_empty() {
        return next.run(req).await;
    }
    let template = req
        .extensions()
        .get::<axum::extract::MatchedPath>()
        .map(axum::extract::MatchedPath::as_str);
    let Some(scope) = scopes.required(req.method(), template) else {
        return next.run(req).await;
    };
    let header = req
        .headers()
        .get(axum::http::header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok());
    let key = match access.keys.authorize(header, scope) {
        Ok(k) => k,
        Err(Denied::Unauthenticated) => {
            return ApiError::new(
                StatusCode::UNAUTHORIZED,
                "unauthenticated",
                "send an API key as Authorization: Bearer <key>",
            )
            .into_response()
        }
        Err(Denied::Forbidden(s)) => {
            return ApiError::new(
                StatusCode::FORBIDDEN,
                "forbidden",
                format!("this API key lacks the {} scope", s.as_str()),
            )
            .into_response()
        }
    };
    if let Err(wait) = access.admit(key) {
        return ApiError::too_many_requests(
            "rate_limited",
            format!(
                "this API key is limited to {} requests/s",
                access.limits.requests_per_s
            ),
            wait.as_secs_f64().ceil().max(1.0) as u64,
        )
        .into_response();
    }
    if !req.uri().path().starts_with("/v1/stream/") {
        return next.run(req).await;
    }
    let Some(slot) = access.open_stream(key) else {
        return ApiError::too_many_requests(
            "too_many_streams",
            format!(
                "this API key already holds {} open streams; close one first",
                access.limits.streams
            ),
            1,
        )
        .into_response();
    };
    // The slot is held for as long as the response body (the stream) lives.
    let (parts, body) = next.run(req).await.into_parts();
    let body = axum::body::Body::from_stream(body.into_data_stream().map(move |chunk| {
        let _held = &slot;
        chunk
    }));
    axum::response::Response::from_parts(parts, body)
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
        let analyst = ApiKeys::parse("analyst-key-0123456789=sales:read").unwrap();
        assert_eq!(
            analyst.check(Some(&bearer("analyst-key-0123456789")), Scope::FeaturesRead),
            Err(Denied::Forbidden(Scope::FeaturesRead))
        );
        assert_eq!(
            ApiKeys::parse("short=admin").unwrap_err(),
            KeyError::TooShort(1)
        );
        assert_eq!(
            ApiKeys::parse("long-enough-key-123=admin;long-enough-key-456=root").unwrap_err(),
            KeyError::UnknownScope(2, "root".into())
        );
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

    #[test]
    fn buckets_allow_a_second_of_burst_then_the_rate() {
        let t0 = Instant::now();
        let mut b = Bucket {
            tokens: 10.0,
            at: t0,
        };
        for _ in 0..10 {
            assert_eq!(b.take(10, t0), Ok(()));
        }
        let wait = b.take(10, t0).unwrap_err();
        assert!((wait.as_secs_f64() - 0.1).abs() < 1e-9, "{wait:?}");
        assert_eq!(b.take(10, t0 + Duration::from_millis(100)), Ok(()));
        assert!(b.take(10, t0 + Duration::from_millis(150)).is_err());
        // Idle time refills up to one second's worth, no more.
        for _ in 0..10 {
            assert_eq!(b.take(10, t0 + Duration::from_secs(60)), Ok(()));
        }
        assert!(b.take(10, t0 + Duration::from_secs(60)).is_err());
    }

    #[test]
    fn streams_per_key_are_counted_until_dropped() {
        let keys = ApiKeys::parse("reader-key-0123456789=features:read").unwrap();
        let access = Access::new(
            keys,
            Limits {
                requests_per_s: 0,
                streams: 2,
            },
        );
        let a = access.open_stream(0).unwrap();
        let b = access.open_stream(0).unwrap();
        assert!(access.open_stream(0).is_none());
        drop(a);
        assert!(access.open_stream(0).is_some());
        drop(b);
        assert_eq!(access.admit(0), Ok(()));
    }
}
