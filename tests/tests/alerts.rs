//! Webhook alerts against a local HTTP server and the real broker: only changes matching
//! the rule are sent, failures are retried with the same idempotency key, and an alert
//! that never gets through lands on the dead-letter topic with the reason.

#![allow(clippy::unwrap_used)] // tests fail loudly on purpose

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::extract::{Path, State};
use axum::http::{HeaderMap, StatusCode};
use axum::routing::post;
use axum::Router;
use custflow_connectors::webhook::{self, AlertConfig, AlertMetrics, AlertRule, DEFAULT_RULE};
use custflow_kafka::admin::client_config;
use custflow_schemas::topics::{self, Topics};
use custflow_schemas::{avro, SegmentChange, SegmentDimension};
use rdkafka::consumer::{Consumer, StreamConsumer};
use rdkafka::message::Headers;
use rdkafka::producer::{FutureProducer, FutureRecord};
use rdkafka::Message;
use std::sync::atomic::Ordering;

/// Requests seen per idempotency key, by route.
type Seen = Arc<Mutex<HashMap<String, Vec<String>>>>;

/// `/flaky` fails the first two attempts of each key; `/down` always fails.
async fn receiver(
    State(seen): State<Seen>,
    Path(route): Path<String>,
    headers: HeaderMap,
    body: String,
) -> StatusCode {
    let key = headers
        .get("idempotency-key")
        .and_then(|v| v.to_str().ok())
        .unwrap_or("")
        .to_owned();
    let mut seen = seen.lock().unwrap();
    let attempts = seen.entry(format!("{route}:{key}")).or_default();
    attempts.push(body);
    match route.as_str() {
        "flaky" if attempts.len() >= 3 => StatusCode::OK,
        "flaky" => StatusCode::SERVICE_UNAVAILABLE,
        _ => StatusCode::INTERNAL_SERVER_ERROR,
    }
}

fn change(customer: &str, dimension: SegmentDimension, current: &str, tier: &str) -> SegmentChange {
    SegmentChange {
        customer_id: customer.into(),
        version: 42,
        as_of: custflow_schemas::time::now_ms(),
        model_version: "m1".into(),
        dimension,
        previous: Some("false".into()),
        current: current.into(),
        value_tier: Some(tier.into()),
    }
}

async fn config(brokers: &str, names: &Topics, url: String, attempts: u32) -> AlertConfig {
    let group_id = custflow_tests::unique("alerts-");
    AlertConfig {
        brokers: brokers.to_owned(),
        topic: names.name(topics::SEGMENT_CHANGES),
        dlq_topic: names.name(topics::DLQ),
        member: custflow_tests::member(&group_id, "alerts").await,
        progress: Arc::new(custflow_kafka::progress::Progress::new(group_id.clone())),
        group_id,
        url,
        rules: AlertRule::parse_all(DEFAULT_RULE).unwrap(),
        max_attempts: attempts,
        backoff: Duration::from_millis(20),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn webhook_alerts_retry_and_dead_letter() {
    let (brokers, names) = custflow_tests::deployment("alerts-").await;
    let seen: Seen = Arc::default();
    let app = Router::new()
        .route("/{route}", post(receiver))
        .with_state(seen.clone());
    let base = format!("http://{}", custflow_tests::serve(app).await);

    let producer: FutureProducer = client_config(&brokers).create().unwrap();
    let changes = [
        change("top-at-risk", SegmentDimension::AtRisk, "true", "top20"),
        change("mid-at-risk", SegmentDimension::AtRisk, "true", "mid60"),
        change("top-new", SegmentDimension::ValueTier, "top20", "top20"),
    ];
    for ch in &changes {
        let payload = avro::frame(1, &avro::encode_record("SegmentChange", ch).unwrap());
        producer
            .send(
                FutureRecord::to(&names.name(topics::SEGMENT_CHANGES))
                    .key(&ch.customer_id)
                    .payload(&payload),
                Duration::from_secs(10),
            )
            .await
            .unwrap();
    }

    // A flaky receiver: the one matching change arrives on the third attempt, same key.
    let (stop, rx) = tokio::sync::watch::channel(false);
    let metrics = Arc::new(AlertMetrics::default());
    let task = tokio::spawn(webhook::run(
        config(&brokers, &names, format!("{base}/flaky"), 5).await,
        metrics.clone(),
        rx,
    ));
    custflow_tests::wait_until(Duration::from_secs(60), "the alert", || {
        let m = metrics.clone();
        async move {
            (m.sent.load(Ordering::Relaxed) == 1 && m.not_matching.load(Ordering::Relaxed) == 2)
                .then_some(())
        }
    })
    .await;
    stop.send(true).unwrap();
    task.await.unwrap().unwrap();
    {
        let seen = seen.lock().unwrap();
        assert_eq!(seen.len(), 1, "only the matching change is sent: {seen:?}");
        let attempts = &seen["flaky:top-at-risk:42:at_risk"];
        assert_eq!(attempts.len(), 3);
        let body: serde_json::Value = serde_json::from_str(&attempts[2]).unwrap();
        assert_eq!(body["change"]["customer_id"], "top-at-risk");
        assert_eq!(body["change"]["value_tier"], "top20");
        assert_eq!(body["alert"], DEFAULT_RULE);
    }
    assert_eq!(metrics.retries.load(Ordering::Relaxed), 2);

    // A receiver that never answers 2xx: after 3 attempts the change is dead-lettered.
    let (stop, rx) = tokio::sync::watch::channel(false);
    let metrics = Arc::new(AlertMetrics::default());
    let task = tokio::spawn(webhook::run(
        config(&brokers, &names, format!("{base}/down"), 3).await,
        metrics.clone(),
        rx,
    ));
    let dlq: StreamConsumer = client_config(&brokers)
        .set("group.id", custflow_tests::unique("alerts-dlq-"))
        .set("auto.offset.reset", "earliest")
        .create()
        .unwrap();
    dlq.subscribe(&[&names.name(topics::DLQ)]).unwrap();
    let m = tokio::time::timeout(Duration::from_secs(60), dlq.recv())
        .await
        .expect("no dead letter within 60 s")
        .unwrap();
    assert_eq!(m.key(), Some("top-at-risk".as_bytes()));
    let header = |name: &str| {
        m.headers()
            .and_then(|h| h.iter().find(|x| x.key == name))
            .and_then(|x| x.value)
            .map(|v| String::from_utf8_lossy(v).into_owned())
    };
    assert_eq!(
        header("custflow.error.reason").as_deref(),
        Some("webhook_failed")
    );
    assert!(
        header("custflow.error.message")
            .unwrap()
            .contains("500 Internal Server Error after 3 attempt(s)"),
        "{:?}",
        header("custflow.error.message")
    );
    assert_eq!(
        header("custflow.source.topic"),
        Some(names.name(topics::SEGMENT_CHANGES))
    );
    assert_eq!(seen.lock().unwrap()["down:top-at-risk:42:at_risk"].len(), 3);
    custflow_tests::wait_until(Duration::from_secs(10), "the dead-letter count", || {
        let m = metrics.clone();
        async move { (m.dead_lettered.load(Ordering::Relaxed) == 1).then_some(()) }
    })
    .await;
    stop.send(true).unwrap();
    task.await.unwrap().unwrap();
}
