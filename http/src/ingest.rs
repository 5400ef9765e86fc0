//! `POST /v1/events`: JSON object, JSON array or NDJSON; every item validated with its
//! field paths; an item is reported accepted only after the broker acknowledged it.
//! `DELETE /v1/customers/{id}`: an erasure request, written to the `customers` topic.
//!
//! `Idempotency-Key` makes a retried request a no-op (responses kept 24 h in Redis);
//! bounded in-flight work answers 429 with `Retry-After` instead of growing memory; an
//! unreachable broker answers 503.

use std::fmt;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use crate::error::ApiError;
use axum::extract::{DefaultBodyLimit, Path, State};
use axum::http::{header, HeaderMap, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::Json;
use bytes::Bytes;
use custflow_feature_store::conn::Redis;
use custflow_kafka::client as kafka;
use custflow_kafka::client::Tune;
use custflow_kafka::trace::{self, KeyValue, SpanKind, TraceContextExt};
use custflow_metrics::{Collector, DescriptorEncoder, Families, Histogram};
use custflow_schemas::avro::AvroCodec;
use custflow_schemas::topics::Topics;
use custflow_schemas::{json, DenyList, Event, EventKind, FieldError, ValidationContext};
use rdkafka::message::OwnedHeaders;
use rdkafka::producer::{FutureProducer, FutureRecord, Producer};
use serde_json::{json as j, Value};
use tokio::sync::Semaphore;

use crate::auth::Scope;
use crate::routes::Routes;

/// Counters of the ingest endpoint.
#[derive(Debug, Default)]
pub struct IngestMetrics {
    pub accepted: AtomicU64,
    pub rejected: AtomicU64,
    pub broker_failures: AtomicU64,
    pub requests_throttled: AtomicU64,
    /// Time for the broker to acknowledge one request's events.
    pub produce: Histogram,
}

impl Collector for IngestMetrics {
    fn encode(&self, e: DescriptorEncoder) -> fmt::Result {
        let g = |c: &AtomicU64| c.load(Ordering::Relaxed);
        let mut f = Families::from(e);
        f.counter(
            "custflow_ingest_accepted_total",
            "Events accepted by the ingest endpoint and acknowledged by the broker",
            g(&self.accepted),
        )?;
        f.counters(
            "custflow_ingest_rejected_total",
            "Events refused by the ingest endpoint, by reason",
            [
                ([("reason", "invalid")], g(&self.rejected)),
                ([("reason", "broker")], g(&self.broker_failures)),
                ([("reason", "throttled")], g(&self.requests_throttled)),
            ],
        )?;
        f.histogram(
            "custflow_ingest_produce_seconds",
            "Time for the broker to acknowledge one request's events",
            &self.produce,
        )
    }
}

/// What the ingest routes need.
#[derive(Clone)]
pub struct IngestState {
    pub producer: RenewingProducer,
    pub topics: Topics,
    pub codec: Arc<AvroCodec>,
    /// Idempotency window storage; without it the header is ignored.
    pub redis: Option<Redis>,
    /// Events in flight at once, over all requests.
    pub permits: Arc<Semaphore>,
    pub max_items: usize,
    pub body_limit: usize,
    pub metrics: Arc<IngestMetrics>,
    /// Customer attributes dropped before anything is written.
    pub deny: DenyList,
}

impl IngestState {
    /// A producer suited to request/response: acks=all, idempotent, short timeouts so an
    /// unreachable broker turns into a 503 within seconds.
    pub fn producer(brokers: &str) -> Result<RenewingProducer, rdkafka::error::KafkaError> {
        RenewingProducer::new(brokers)
    }
}

/// The endpoint's producer, replaced by a new one when it is fenced or fails fatally. An
/// idempotent producer whose messages timed out (the broker was away for more than 5 s)
/// moves to a new epoch, and a broker may then refuse every produce as fenced (tansu
/// does): the endpoint would answer 503 until restarted.
#[derive(Clone)]
pub struct RenewingProducer {
    brokers: String,
    current: Arc<std::sync::RwLock<FutureProducer>>,
}

impl RenewingProducer {
    pub fn new(brokers: &str) -> Result<Self, rdkafka::error::KafkaError> {
        Ok(Self {
            brokers: brokers.to_owned(),
            current: Arc::new(std::sync::RwLock::new(Self::create(brokers)?)),
        })
    }

    fn create(brokers: &str) -> Result<FutureProducer, rdkafka::error::KafkaError> {
        custflow_kafka::client::client_config(brokers)
            .set("enable.idempotence", "true")
            .set("acks", "all")
            .tune("linger.ms", "0")
            .tune("compression.type", "lz4")
            .tune("message.timeout.ms", "5000")
            .create()
    }

    /// The producer in use.
    pub fn get(&self) -> FutureProducer {
        self.current
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
    }

    /// After `used` failed a send with `error`: replaces it if it is fenced or in a fatal
    /// state (once, however many requests saw it fail).
    pub fn renew_after(&self, used: &FutureProducer, error: &rdkafka::error::KafkaError) {
        if !kafka::is_fenced(error) && used.client().fatal_error().is_none() {
            return;
        }
        let mut current = self.current.write().unwrap_or_else(|p| p.into_inner());
        if current.client().native_ptr() != used.client().native_ptr() {
            return; // another request replaced it already
        }
        match Self::create(&self.brokers) {
            Ok(fresh) => {
                tracing::warn!(error = %error, "the ingest producer is fenced; replaced it");
                *current = fresh;
            }
            Err(e) => {
                tracing::error!(error = %e, "the ingest producer failed fatally and a new one could not be made")
            }
        }
    }
}

/// Why one event of a request was not written.
#[derive(Debug, thiserror::Error)]
enum Failure {
    #[error("{0}")]
    Encode(String),
    #[error("{0}")]
    Kafka(rdkafka::error::KafkaError),
}

/// The ingest routes.
pub fn routes() -> Routes<IngestState> {
    Routes::new()
        .post("/v1/events", Some(Scope::EventsWrite), post_events)
        .delete("/v1/customers/{id}", Some(Scope::Admin), erase_customer)
}

/// [`routes`] with their state and its body limit.
pub fn router(state: IngestState) -> Routes {
    let limit = state.body_limit;
    routes()
        .layer(DefaultBodyLimit::max(limit))
        .with_state(state)
}

const IDEMPOTENCY_TTL_SECS: u64 = 24 * 3600;

async fn post_events(
    State(st): State<IngestState>,
    headers: HeaderMap,
    body: Bytes,
) -> Result<Response, ApiError> {
    let key = headers
        .get("idempotency-key")
        .and_then(|v| v.to_str().ok())
        .map(str::to_owned);
    let redis_key = key
        .as_ref()
        .map(|k| format!("{}cf:idem:{k}", st.topics.name("")));
    if let (Some(rk), Some(conn)) = (&redis_key, &st.redis) {
        let mut conn = conn.clone();
        let claimed: bool = redis::cmd("SET")
            .arg(rk)
            .arg("pending")
            .arg("NX")
            .arg("EX")
            .arg(IDEMPOTENCY_TTL_SECS)
            .query_async::<Option<String>>(&mut conn)
            .await
            .map_err(|e| {
                ApiError::unavailable(format!("idempotency store (Redis) does not answer: {e}"), 2)
            })?
            .is_some();
        if !claimed {
            let stored: Option<String> = redis::cmd("GET")
                .arg(rk)
                .query_async(&mut conn)
                .await
                .map_err(ApiError::internal)?;
            return match stored.as_deref() {
                Some("pending") | None => Err(ApiError::new(
                    StatusCode::CONFLICT,
                    "in_progress",
                    "a request with this Idempotency-Key is being processed",
                )),
                Some(s) => {
                    let v: Value = serde_json::from_str(s).map_err(ApiError::internal)?;
                    let status = StatusCode::from_u16(v["status"].as_u64().unwrap_or(200) as u16)
                        .unwrap_or(StatusCode::OK);
                    let mut resp = (status, Json(v["body"].clone())).into_response();
                    resp.headers_mut()
                        .insert("idempotent-replayed", HeaderValue::from_static("true"));
                    Ok(resp)
                }
            };
        }
    }
    let result = handle(&st, &headers, &body).await;
    if let (Some(rk), Some(conn)) = (&redis_key, &st.redis) {
        let mut conn = conn.clone();
        match &result {
            // Only a definitive answer is remembered; failures may be retried.
            Ok((status, body)) if status.is_success() || status.is_client_error() => {
                let stored = j!({"status": status.as_u16(), "body": body}).to_string();
                let _: Result<(), _> = redis::cmd("SET")
                    .arg(rk)
                    .arg(stored)
                    .arg("EX")
                    .arg(IDEMPOTENCY_TTL_SECS)
                    .query_async(&mut conn)
                    .await;
            }
            _ => {
                let _: Result<(), _> = redis::cmd("DEL").arg(rk).query_async(&mut conn).await;
            }
        }
    }
    let (status, body) = result?;
    Ok((status, Json(body)).into_response())
}

/// Items of a request body of `content_type` (JSON object or array, or NDJSON), each
/// parsed JSON or the reason it could not be.
pub fn items(
    content_type: Option<&str>,
    body: &[u8],
) -> Result<Vec<Result<Value, String>>, ApiError> {
    let ct = content_type.unwrap_or("application/json");
    let mime = ct
        .split(';')
        .next()
        .unwrap_or("")
        .trim()
        .to_ascii_lowercase();
    match mime.as_str() {
        "application/json" | "" => {
            let v: Value = serde_json::from_slice(body).map_err(|e| {
                ApiError::new(
                    StatusCode::BAD_REQUEST,
                    "invalid_json",
                    format!("body is not JSON: {e}"),
                )
            })?;
            Ok(match v {
                Value::Array(a) => a.into_iter().map(Ok).collect(),
                other => vec![Ok(other)],
            })
        }
        "application/x-ndjson" | "application/jsonl" | "application/json-seq" => Ok(body
            .split(|b| *b == b'\n')
            .filter(|l| !l.iter().all(u8::is_ascii_whitespace))
            .map(|l| serde_json::from_slice(l).map_err(|e| format!("line is not JSON: {e}")))
            .collect()),
        other => Err(ApiError::new(
            StatusCode::UNSUPPORTED_MEDIA_TYPE,
            "unsupported_media_type",
            format!("content type {other:?}: send application/json or application/x-ndjson"),
        )),
    }
}

async fn handle(
    st: &IngestState,
    headers: &HeaderMap,
    body: &[u8],
) -> Result<(StatusCode, Value), ApiError> {
    let content_type = headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok());
    let parsed = items(content_type, body)?;
    if parsed.is_empty() {
        return Err(ApiError::bad_request("no events in the body", &[]));
    }
    if parsed.len() > st.max_items {
        return Err(ApiError::new(
            StatusCode::PAYLOAD_TOO_LARGE,
            "too_many_items",
            format!(
                "{} events in one request; the limit is {}",
                parsed.len(),
                st.max_items
            ),
        ));
    }
    let n = u32::try_from(parsed.len()).unwrap_or(u32::MAX);
    let Ok(_permit) = st.permits.clone().try_acquire_many_owned(n) else {
        st.metrics
            .requests_throttled
            .fetch_add(1, Ordering::Relaxed);
        return Err(ApiError::too_many_requests(
            "overloaded",
            "too much work in flight; retry shortly",
            1,
        ));
    };
    let ctx = ValidationContext::now();
    let mut results: Vec<Value> = Vec::with_capacity(parsed.len());
    let mut valid: Vec<(usize, Event)> = Vec::new();
    for (i, item) in parsed.into_iter().enumerate() {
        let decoded = item
            .map_err(|m| vec![FieldError::new("", "malformed_json", m)])
            .and_then(|v| {
                json::decode_tagged(&v, &ctx).map_err(|e| {
                    e.field_errors()
                        .map(<[FieldError]>::to_vec)
                        .unwrap_or_else(|| vec![FieldError::new("", e.reason(), e.to_string())])
                })
            });
        match decoded {
            Ok(mut e) => {
                st.deny.apply(&mut e);
                results.push(Value::Null);
                valid.push((i, e));
            }
            Err(errors) => results.push(j!({"index": i, "status": "rejected", "errors": errors})),
        }
    }
    let started = Instant::now();
    // A traced request (tracing on): one span, under the caller's `traceparent` if it
    // sent one, whose context goes with every event it produces.
    let span = trace::enabled().then(|| {
        let parent = headers
            .get(trace::TRACEPARENT)
            .and_then(|v| v.to_str().ok())
            .and_then(trace::parse)
            .unwrap_or_default();
        let attributes = vec![
            KeyValue::new("http.route", "/v1/events"),
            KeyValue::new("custflow.events", valid.len() as i64),
        ];
        trace::start("custflow.ingest", SpanKind::Server, &parent, attributes)
    });
    let trace_headers = span
        .as_ref()
        .map(|cx| trace::add_header(OwnedHeaders::new(), cx));
    let producer = st.producer.get();
    let sends = valid.iter().map(|(_, e)| {
        let topic = st.topics.name(e.kind().topic());
        let payload = st.codec.encode(e);
        let producer = producer.clone();
        let key = e.customer_id().to_owned();
        let headers = trace_headers.clone();
        async move {
            let payload = payload.map_err(|e| Failure::Encode(e.to_string()))?;
            let mut record = FutureRecord::to(&topic).key(&key).payload(&payload);
            if let Some(h) = headers {
                record = record.headers(h);
            }
            producer
                .send(record, Duration::from_secs(5))
                .await
                .map(|_| ())
                .map_err(|(e, _)| Failure::Kafka(e))
        }
    });
    let outcomes = futures::future::join_all(sends).await;
    st.metrics.produce.observe(started.elapsed().as_secs_f64());
    let (mut accepted, mut failed) = (0u64, 0u64);
    let mut kafka_failure = None;
    for ((i, e), outcome) in valid.iter().zip(outcomes) {
        results[*i] = match outcome {
            Ok(()) => {
                accepted += 1;
                j!({"index": i, "status": "accepted", "event_id": e.event_id()})
            }
            Err(failure) => {
                failed += 1;
                let reason = failure.to_string();
                if let Failure::Kafka(k) = failure {
                    kafka_failure = Some(k);
                }
                j!({"index": i, "status": "failed", "error": reason})
            }
        };
    }
    let rejected = results.len() as u64 - accepted - failed;
    if let Some(cx) = span {
        let span = cx.span();
        span.set_attribute(KeyValue::new("custflow.accepted", accepted as i64));
        span.set_attribute(KeyValue::new("custflow.failed", failed as i64));
        span.end();
    }
    st.metrics.accepted.fetch_add(accepted, Ordering::Relaxed);
    st.metrics.rejected.fetch_add(rejected, Ordering::Relaxed);
    st.metrics
        .broker_failures
        .fetch_add(failed, Ordering::Relaxed);
    let summary =
        j!({"accepted": accepted, "rejected": rejected, "failed": failed, "results": results});
    if failed > 0 {
        if let Some(e) = kafka_failure {
            st.producer.renew_after(&producer, &e);
        }
        return Err(ApiError::unavailable(
            format!("{failed} events were not acknowledged by the broker; retry them"),
            2,
        )
        .with_details(vec![summary]));
    }
    if accepted == 0 {
        return Err(ApiError::bad_request("no event was valid", &[])
            .with_details(summary["results"].as_array().cloned().unwrap_or_default()));
    }
    Ok((StatusCode::OK, summary))
}

/// Asks for a customer's erasure: an erasure record keyed by the customer id goes to each
/// input topic, where the processor that owns the customer applies the first to arrive,
/// in order with the customer's other events (DESIGN deviation "Customer erasure").
/// Answers 202 once the broker acknowledged the records; the features, scores and score
/// history go when the processor and the sink have read them.
async fn erase_customer(
    State(st): State<IngestState>,
    Path(id): Path<String>,
) -> Result<Response, ApiError> {
    if id.trim().is_empty() || id.len() > 256 {
        return Err(ApiError::bad_request(
            "invalid customer id",
            &[FieldError::new(
                "customer_id",
                "format",
                "must be 1 to 256 bytes, not blank",
            )],
        ));
    }
    let at = custflow_schemas::time::now_ms();
    let payload = j!({"customer_id": id, "erased_at": at}).to_string();
    let used = st.producer.get();
    let sends = EventKind::ALL.map(|kind| {
        let topic = st.topics.name(kind.topic());
        let (producer, id, payload) = (used.clone(), id.clone(), payload.clone());
        async move {
            producer
                .send(
                    FutureRecord::to(&topic)
                        .key(&id)
                        .payload(&payload)
                        .timestamp(at)
                        .headers(kafka::erasure_headers(at)),
                    Duration::from_secs(5),
                )
                .await
                .map(|d| j!({"topic": topic, "partition": d.partition, "offset": d.offset}))
                .map_err(|(e, _)| e)
        }
    });
    let records = futures::future::try_join_all(sends).await.map_err(|e| {
        st.metrics.broker_failures.fetch_add(1, Ordering::Relaxed);
        st.producer.renew_after(&used, &e);
        ApiError::unavailable(
            format!("the broker did not take the erasure request: {e}"),
            2,
        )
    })?;
    tracing::info!("customer erasure requested");
    let body = j!({
        "customer_id": id,
        "status": "accepted",
        "erased_at": custflow_schemas::time::format_rfc3339(at),
        "records": records,
    });
    Ok((StatusCode::ACCEPTED, Json(body)).into_response())
}
