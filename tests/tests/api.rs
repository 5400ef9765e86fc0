//! The HTTP API on a real bound port against the real broker and Redis: REST ingest
//! (statuses, field paths, idempotency, broker down) and feature lookups.

#![allow(clippy::unwrap_used)] // tests fail loudly on purpose

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use custflow_feature_store::conn::Redis;
use custflow_feature_store::keys::Keys;
use custflow_feature_store::model::ModelHandle;
use custflow_feature_store::state::{CustomerState, SourcePos};
use custflow_http::features::FeatureState;
use custflow_http::ingest::{IngestMetrics, IngestState};
use custflow_kafka::admin::client_config;
use custflow_schemas::avro::AvroCodec;
use custflow_schemas::topics::{self, Topics};
use custflow_schemas::{Event, EventKind, Order, OrderStatus, ValidationContext};
use custflow_tests::http;
use rdkafka::consumer::{Consumer, StreamConsumer};
use rdkafka::Message;
use serde_json::{json, Value};
use tokio::sync::Semaphore;

use custflow_tests::{open, serve};

async fn redis() -> Redis {
    custflow_tests::redis_conn().await
}

fn ingest_state(brokers: &str, names: &Topics, redis: Redis, body_limit: usize) -> IngestState {
    IngestState {
        producer: IngestState::producer(brokers).unwrap(),
        topics: names.clone(),
        codec: Arc::new(AvroCodec::builtin()),
        redis: Some(redis),
        permits: Arc::new(Semaphore::new(10_000)),
        max_items: 100,
        body_limit,
        metrics: Arc::new(IngestMetrics::default()),
        deny: Default::default(),
    }
}

fn order(id: &str, customer: &str) -> Value {
    json!({"type": "order", "event_id": id, "order_id": format!("o-{id}"), "customer_id": customer,
           "occurred_at": custflow_schemas::time::format_rfc3339(custflow_schemas::time::now_ms() - 60_000),
           "status": "placed", "currency": "EUR",
           "items": [{"sku": "burger", "category": "mains", "quantity": 2, "unit_price": 10.0}], "total": 20.0})
}

/// Every event on the orders topic, by event id.
async fn topic_events(brokers: &str, names: &Topics, expect: usize) -> BTreeMap<String, usize> {
    let consumer: StreamConsumer = client_config(brokers)
        .set("group.id", custflow_tests::unique("check-"))
        .set("auto.offset.reset", "earliest")
        .create()
        .unwrap();
    consumer.subscribe(&[&names.name(topics::ORDERS)]).unwrap();
    let codec = AvroCodec::builtin();
    let mut seen = BTreeMap::new();
    // Read what is expected, then make sure nothing else follows for a while.
    loop {
        let wait = if seen.values().sum::<usize>() >= expect {
            Duration::from_secs(3)
        } else {
            Duration::from_secs(30)
        };
        match tokio::time::timeout(wait, consumer.recv()).await {
            Err(_) => break,
            Ok(m) => {
                let m = m.unwrap();
                let e = codec
                    .decode(
                        EventKind::Order,
                        m.payload().unwrap(),
                        &ValidationContext::now(),
                    )
                    .unwrap();
                *seen.entry(e.event_id().to_owned()).or_insert(0) += 1;
            }
        }
    }
    seen
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ingest_validates_dedupes_and_reports_per_item() {
    let (brokers, names) = custflow_tests::deployment("api-").await;
    let addr = serve(open(custflow_http::ingest::router(ingest_state(
        &brokers,
        &names,
        redis().await,
        64 * 1024,
    ))))
    .await;
    let nd = "application/x-ndjson";

    // NDJSON: two valid, one invalid with every field error reported.
    let mut bad = order("e-bad", "c1");
    bad["currency"] = json!("EURO");
    bad["items"][0]["quantity"] = json!(0);
    let body = [order("e-1", "c1"), bad, order("e-2", "c2")]
        .iter()
        .map(Value::to_string)
        .collect::<Vec<_>>()
        .join("\n");
    let (status, _, resp) = http(
        &addr,
        "POST",
        "/v1/events",
        &[("content-type", nd)],
        body.as_bytes(),
    );
    assert_eq!(status, 200, "{resp}");
    let v: Value = serde_json::from_str(&resp).unwrap();
    assert_eq!(
        (v["accepted"].as_u64(), v["rejected"].as_u64()),
        (Some(2), Some(1))
    );
    let paths: Vec<&str> = v["results"][1]["errors"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["path"].as_str().unwrap())
        .collect();
    assert!(
        paths.contains(&"currency") && paths.contains(&"items[0].quantity"),
        "{paths:?}"
    );

    // A retried Idempotency-Key is a no-op: one copy on the topic.
    let one = order("e-idem", "c3").to_string();
    let key = [
        ("content-type", "application/json"),
        ("idempotency-key", "k-123"),
    ];
    let (s1, h1, b1) = http(&addr, "POST", "/v1/events", &key, one.as_bytes());
    let (s2, h2, b2) = http(&addr, "POST", "/v1/events", &key, one.as_bytes());
    assert_eq!((s1, s2), (200, 200));
    assert_eq!(b1, b2);
    assert!(
        !h1.contains("idempotent-replayed") && h2.contains("idempotent-replayed: true"),
        "{h2}"
    );

    // Statuses for bad requests; nothing of them reaches the topic.
    let (s, _, b) = http(
        &addr,
        "POST",
        "/v1/events",
        &[("content-type", "text/plain")],
        b"hello",
    );
    assert_eq!(s, 415, "{b}");
    let (s, _, b) = http(
        &addr,
        "POST",
        "/v1/events",
        &[("content-type", "application/json")],
        b"{not json",
    );
    assert_eq!(s, 400, "{b}");
    assert_eq!(
        serde_json::from_str::<Value>(&b).unwrap()["error"]["code"],
        "invalid_json"
    );
    let (s, _, b) = http(
        &addr,
        "POST",
        "/v1/events",
        &[("content-type", "application/json")],
        json!({"type": "order"}).to_string().as_bytes(),
    );
    assert_eq!(s, 400, "{b}");
    let err: Value = serde_json::from_str(&b).unwrap();
    assert!(
        err["error"]["details"][0]["errors"]
            .as_array()
            .unwrap()
            .len()
            >= 5,
        "{err}"
    );
    let huge = vec![b' '; 70 * 1024];
    let (s, _, _) = http(
        &addr,
        "POST",
        "/v1/events",
        &[("content-type", "application/json")],
        &huge,
    );
    assert_eq!(s, 413);
    let many = (0..101)
        .map(|i| order(&format!("m{i}"), "c"))
        .collect::<Vec<_>>();
    let (s, _, _) = http(
        &addr,
        "POST",
        "/v1/events",
        &[("content-type", "application/json")],
        Value::Array(many).to_string().as_bytes(),
    );
    assert_eq!(s, 413);

    let seen = topic_events(&brokers, &names, 3).await;
    assert_eq!(
        seen,
        BTreeMap::from([("e-1".into(), 1), ("e-2".into(), 1), ("e-idem".into(), 1)])
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ingest_answers_503_when_the_broker_is_down() {
    custflow_tests::ensure_stack();
    // Nothing listens on port 1: every produce times out.
    let names = Topics::new(custflow_tests::unique("down-"));
    let addr = serve(open(custflow_http::ingest::router(ingest_state(
        "127.0.0.1:1",
        &names,
        redis().await,
        1 << 20,
    ))))
    .await;
    let (status, head, body) = http(
        &addr,
        "POST",
        "/v1/events",
        &[("content-type", "application/json")],
        order("e-down", "c").to_string().as_bytes(),
    );
    assert_eq!(status, 503, "{body}");
    assert!(head.contains("retry-after:"), "{head}");
    let v: Value = serde_json::from_str(&body).unwrap();
    assert_eq!(v["error"]["code"], "unavailable");
    assert_eq!(v["error"]["details"][0]["results"][0]["status"], "failed");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn feature_lookups_compute_as_of_and_explain_errors() {
    custflow_tests::ensure_stack();
    let prefix = custflow_tests::unique("feat-");
    let keys = Keys::new(prefix.clone());
    let mut conn = redis().await;
    let day = 20_000i64;
    let mut state = CustomerState::default();
    for (i, d) in [day, day + 10, day + 30].iter().enumerate() {
        let e = Event::Order(Order {
            event_id: format!("e{i}"),
            order_id: format!("o{i}"),
            customer_id: "alice".into(),
            occurred_at: d * custflow_schemas::time::DAY_MS + 12 * 3_600_000,
            status: OrderStatus::Placed,
            location_id: Some("loc-1".into()),
            channel: None,
            currency: "EUR".into(),
            items: vec![],
            discount_code: None,
            discount_amount: 0.0,
            total: 10.0 * (i + 1) as f64,
        });
        state
            .apply(
                &e,
                SourcePos {
                    topic: 1,
                    partition: 0,
                    offset: i as i64,
                },
            )
            .unwrap();
    }
    let () = redis::cmd("SET")
        .arg(keys.features("alice", 0))
        .arg(state.encode())
        .query_async(&mut conn)
        .await
        .unwrap();
    let ready_key = keys.state_ready();
    let app = custflow_http::features::routes().with_state(FeatureState {
        redis: conn.clone(),
        keys,
        model: ModelHandle::default(),
        at_risk_days: custflow_feature_store::features::DEFAULT_AT_RISK_DAYS,
    });
    let addr = serve(open(app)).await;

    // Until the processors mark the features built, lookups answer 503, not 404 or a
    // partial state. This test wrote the state itself, so it marks it built too.
    let (s, _, b) = http(&addr, "GET", "/v1/customers/alice/features", &[], b"");
    assert_eq!(s, 503, "{b}");
    assert!(b.contains("being built"), "{b}");
    let () = redis::cmd("SET")
        .arg(&ready_key)
        .arg("1")
        .query_async(&mut conn)
        .await
        .unwrap();

    let as_of = (day + 40) * custflow_schemas::time::DAY_MS + 12 * 3_600_000;
    let (s, _, b) = http(
        &addr,
        "GET",
        &format!("/v1/customers/alice/features?as_of={as_of}"),
        &[],
        b"",
    );
    assert_eq!(s, 200, "{b}");
    let v: Value = serde_json::from_str(&b).unwrap();
    let f = &v["features"];
    assert_eq!(
        (
            f["frequency"].as_u64(),
            f["recency"].as_f64(),
            f["age"].as_f64()
        ),
        (Some(2), Some(30.0), Some(40.0))
    );
    assert_eq!(
        (f["days_since_last_order"].as_f64(), f["at_risk"].as_bool()),
        (Some(10.0), Some(false))
    );
    // Later, with no new event, the same customer is at risk.
    let later = as_of + 50 * custflow_schemas::time::DAY_MS;
    let (_, _, b) = http(
        &addr,
        "GET",
        &format!("/v1/customers/alice/features?as_of={later}&features=at_risk,frequency"),
        &[],
        b"",
    );
    let v: Value = serde_json::from_str(&b).unwrap();
    assert_eq!(v["features"], json!({"at_risk": true, "frequency": 2}));

    let (s, _, b) = http(&addr, "GET", "/v1/customers/nobody/features", &[], b"");
    assert_eq!(s, 404, "{b}");
    let (s, _, b) = http(
        &addr,
        "GET",
        "/v1/customers/alice/features?as_of=yesterday&features=nope",
        &[],
        b"",
    );
    assert_eq!(s, 400);
    let paths: Vec<String> = serde_json::from_str::<Value>(&b).unwrap()["error"]["details"]
        .as_array()
        .unwrap()
        .iter()
        .map(|d| d["path"].as_str().unwrap().to_owned())
        .collect();
    assert_eq!(paths, vec!["as_of", "features[0]"]);

    let body =
        json!({"customer_ids": ["alice", "nobody", 7], "features": ["orders_total"]}).to_string();
    let (s, _, b) = http(
        &addr,
        "POST",
        "/v1/features:batch",
        &[("content-type", "application/json")],
        body.as_bytes(),
    );
    assert_eq!(s, 400);
    assert_eq!(
        serde_json::from_str::<Value>(&b).unwrap()["error"]["details"][0]["path"],
        "customer_ids[2]"
    );
    let body =
        json!({"customer_ids": ["alice", "nobody"], "features": ["orders_total"]}).to_string();
    let (s, _, b) = http(
        &addr,
        "POST",
        "/v1/features:batch",
        &[("content-type", "application/json")],
        body.as_bytes(),
    );
    assert_eq!(s, 200, "{b}");
    let v: Value = serde_json::from_str(&b).unwrap();
    assert_eq!(v["customers"][0]["features"], json!({"orders_total": 3}));
    assert_eq!(v["customers"][1]["error"]["code"], "not_found");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn each_api_key_has_its_own_rate_and_stream_limits() {
    use axum::response::sse::{Event, KeepAlive, Sse};
    use custflow_http::auth::{Access, ApiKeys, Limits, Scope};
    use custflow_http::routes::Routes;
    use custflow_tests::SseStream;
    let keys = "first-key-0123456789=features:read;second-key-0123456789=features:read";
    let app = |limits| {
        let ok = || async { "ok" };
        // A stream that stays open; its keep-alives notice a client that went away.
        let stream = || async {
            Sse::new(futures::stream::pending::<
                Result<Event, std::convert::Infallible>,
            >())
            .keep_alive(KeepAlive::new().interval(Duration::from_millis(100)))
        };
        Routes::new()
            .get("/v1/segments", Some(Scope::FeaturesRead), ok)
            .get("/v1/stream/{topic}", Some(Scope::FeaturesRead), stream)
            .into_router(Access::new(ApiKeys::parse(keys).unwrap(), limits))
    };
    let first = [("authorization", "Bearer first-key-0123456789")];
    let second = [("authorization", "Bearer second-key-0123456789")];

    // Two requests a second with bursts of two: the third at once is refused, for this
    // key only.
    let addr = serve(app(Limits {
        requests_per_s: 2,
        streams: 0,
    }))
    .await;
    let get = |headers: [(&'static str, &'static str); 1]| {
        let addr = addr.clone();
        async move {
            tokio::task::spawn_blocking(move || http(&addr, "GET", "/v1/segments", &headers, b""))
                .await
                .unwrap()
        }
    };
    let statuses = [get(first).await, get(first).await, get(first).await];
    assert_eq!(statuses.each_ref().map(|r| r.0), [200, 200, 429]);
    let (_, head, body) = &statuses[2];
    assert!(head.contains("retry-after: 1"), "{head}");
    let v: Value = serde_json::from_str(body).unwrap();
    assert_eq!(v["error"]["code"], "rate_limited", "{body}");
    assert_eq!(get(second).await.0, 200);

    // Two open streams per key: a third is refused until one closes.
    let addr = serve(app(Limits {
        requests_per_s: 0,
        streams: 2,
    }))
    .await;
    let path = "/v1/stream/customer-scores";
    let a = SseStream::open(&addr, path, &first).await;
    let b = SseStream::open(&addr, path, &first).await;
    assert_eq!((a.status, b.status), (200, 200));
    let refused = SseStream::open(&addr, path, &first).await;
    assert_eq!(refused.status, 429);
    assert!(refused.body().await.contains("too_many_streams"));
    assert_eq!(SseStream::open(&addr, path, &second).await.status, 200);
    drop(a);
    let reopened =
        custflow_tests::wait_until(Duration::from_secs(30), "a freed stream slot", || {
            let addr = addr.clone();
            async move {
                let s = SseStream::open(&addr, path, &first).await;
                (s.status == 200).then_some(s)
            }
        })
        .await;
    assert_eq!(reopened.status, 200);
    drop(b);
}
