//! Topic subscriptions over server-sent events against the real broker: 100 concurrent
//! subscribers each receive every update in order, filters select, and a client that
//! reconnects with `Last-Event-ID` gets exactly what followed its last event.

#![allow(clippy::unwrap_used)] // tests fail loudly on purpose

use std::collections::{BTreeMap, BTreeSet};
use std::time::Duration;

use custflow_http::stream::{self, StreamHub};
use custflow_kafka::admin::client_config;
use custflow_schemas::topics::{self};
use custflow_schemas::CustomerScore;
use custflow_tests::{produce_scores, SseEvent, SseStream};
use rdkafka::producer::FutureProducer;

const SUBSCRIBERS: usize = 100;
const CUSTOMERS: usize = 20;
const VERSIONS: i64 = 10;
const PATH: &str = "/v1/stream/customer-scores";

fn score(customer: &str, version: i64) -> CustomerScore {
    CustomerScore {
        customer_id: customer.to_owned(),
        version,
        as_of: 1_764_000_000_000 + version,
        model_version: "m1".into(),
        frequency: version as f64,
        recency: 1.0,
        age: 2.0,
        monetary_value: 10.0,
        p_alive: 0.5,
        churn_probability: 0.5,
        expected_orders_90d: 1.0,
        expected_aov: 10.0,
        clv_12m: 50.0,
        value_tier: "mid".into(),
        r_score: 3,
        f_score: 3,
        m_score: 3,
        rfm_segment: "loyal".into(),
        cluster: None,
        at_risk: false,
        retention_target: false,
        expected_retention_profit: 0.0,
    }
}

/// (customer, version) of an update event.
fn parse(ev: &SseEvent) -> (String, i64) {
    assert_eq!(ev.event, topics::CUSTOMER_SCORES, "{ev:?}");
    assert!(ev.id.is_some(), "{ev:?}");
    let v: serde_json::Value = serde_json::from_str(&ev.data).unwrap();
    (
        v["customer_id"].as_str().unwrap().to_owned(),
        v["version"].as_i64().unwrap(),
    )
}

async fn read(s: &mut SseStream, n: usize) -> Vec<SseEvent> {
    let mut out = Vec::with_capacity(n);
    while out.len() < n {
        let ev = tokio::time::timeout(Duration::from_secs(60), s.next())
            .await
            .unwrap_or_else(|_| panic!("no event within 60 s after {}", out.len()))
            .unwrap_or_else(|| panic!("stream ended after {} events", out.len()));
        assert_ne!(ev.event, "lagged", "{ev:?}");
        out.push(ev);
    }
    out
}

async fn subscribe(addr: &str, path: &str, headers: &[(&str, &str)]) -> (SseStream, SseEvent) {
    let mut s = SseStream::open(addr, path, headers).await;
    assert_eq!(s.status, 200);
    let ready = read(&mut s, 1).await.remove(0);
    assert_eq!(ready.event, "ready", "{ready:?}");
    (s, ready)
}

/// Every customer's versions in the order received.
fn per_customer(updates: &[(String, i64)]) -> BTreeMap<String, Vec<i64>> {
    let mut m: BTreeMap<String, Vec<i64>> = BTreeMap::new();
    for (c, v) in updates {
        m.entry(c.clone()).or_default().push(*v);
    }
    m
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn subscribers_get_every_update_in_order_and_resume_after_their_last_id() {
    let (brokers, names) = custflow_tests::deployment("sse").await;
    let app =
        custflow_tests::open(stream::routes().with_state(StreamHub::new(&brokers, names.clone())));
    let addr = custflow_tests::serve(app).await;

    let bad = SseStream::open(&addr, PATH, &[("Last-Event-ID", "not-an-id")]).await;
    assert_eq!(bad.status, 400);
    let body = bad.body().await;
    assert!(body.contains("headers.Last-Event-ID"), "{body}");

    let mut subscribers = Vec::new();
    for _ in 0..SUBSCRIBERS {
        subscribers.push(subscribe(&addr, PATH, &[]).await.0);
    }
    let (mut filtered, _) = subscribe(&addr, &format!("{PATH}?customer_id=c-3"), &[]).await;

    let producer: FutureProducer = client_config(&brokers).create().unwrap();
    let topic = names.name(topics::CUSTOMER_SCORES);
    let scores: Vec<CustomerScore> = (1..=VERSIONS)
        .flat_map(|v| (0..CUSTOMERS).map(move |c| score(&format!("c-{c}"), v)))
        .collect();
    produce_scores(&producer, &topic, &scores).await;

    let total = scores.len();
    let readers: Vec<_> = subscribers
        .into_iter()
        .map(|mut s| tokio::spawn(async move { read(&mut s, total).await }))
        .collect();
    let mut first = Vec::new();
    let want: BTreeMap<String, Vec<i64>> = (0..CUSTOMERS)
        .map(|c| (format!("c-{c}"), (1..=VERSIONS).collect()))
        .collect();
    for (i, r) in readers.into_iter().enumerate() {
        let events = r.await.unwrap();
        let updates: Vec<(String, i64)> = events.iter().map(parse).collect();
        assert_eq!(per_customer(&updates), want, "subscriber {i}");
        if i == 0 {
            first = events;
        }
    }
    let only: Vec<(String, i64)> = read(&mut filtered, VERSIONS as usize)
        .await
        .iter()
        .map(parse)
        .collect();
    assert_eq!(
        only,
        (1..=VERSIONS)
            .map(|v| ("c-3".to_owned(), v))
            .collect::<Vec<_>>()
    );

    // Reconnect after the 50th update: exactly the other 150 follow, each customer's in
    // order, and then live updates.
    let last = first[49].id.clone().unwrap();
    let (mut resumed, ready) = subscribe(&addr, PATH, &[("Last-Event-ID", &last)]).await;
    assert_eq!(ready.id.as_deref(), Some(last.as_str()));
    let rest: Vec<(String, i64)> = read(&mut resumed, total - 50)
        .await
        .iter()
        .map(parse)
        .collect();
    let seen: Vec<(String, i64)> = first[..50].iter().map(parse).collect();
    let all: BTreeSet<(String, i64)> = seen.iter().chain(&rest).cloned().collect();
    assert_eq!(all.len(), total, "no update twice, none missing");
    let mut joined = seen.clone();
    joined.extend(rest);
    assert_eq!(per_customer(&joined), want);
    produce_scores(&producer, &topic, &[score("c-0", VERSIONS + 1)]).await;
    assert_eq!(
        parse(&read(&mut resumed, 1).await[0]),
        ("c-0".to_owned(), VERSIONS + 1)
    );
}
