//! The stream processor against the real broker and Redis: the CDNOW transactions (all
//! 18 months, produced in five interleaved chunks, so February's orders arrive after
//! September's) give the published BTYD summary as of 1997-09-30 for all 2,357
//! customers, with no event refused for being late; invalid events reach the dead-letter
//! topic with their reason; a rebuild gives identical state (in small batches, each
//! applied while the one before it is saved).

#![allow(clippy::unwrap_used)] // tests fail loudly on purpose

use std::sync::Arc;
use std::time::Duration;

use custflow_feature_store::features::compute;
use custflow_feature_store::keys::Keys;
use custflow_kafka::admin::client_config;
use custflow_processors::metrics::Metrics;
use custflow_processors::{Clock, Processor, ProcessorConfig};
use custflow_schemas::registry::Registry;
use custflow_schemas::time::DAY_MS;
use custflow_schemas::topics::{self, Topics};
use custflow_schemas::{json, Event, Order};
use rdkafka::consumer::{Consumer, StreamConsumer};
use rdkafka::message::Headers;
use rdkafka::producer::{FutureProducer, FutureRecord};
use rdkafka::Message;

/// (customer, day, value) of CDNOW_sample.txt, in five interleaved chunks: row i in
/// chunk i mod 5, the chunks one after the other (as a user loads monthly files in any
/// order, or a spool-dir connector with several tasks reads them).
fn cdnow_interleaved() -> Vec<(String, i64, f64)> {
    let text =
        std::fs::read_to_string(custflow_tests::reference_data().join("cdnow/CDNOW_sample.txt"))
            .unwrap();
    let rows = custflow_models::input::parse_cdnow(&text).unwrap();
    (0..5)
        .flat_map(|k| rows.iter().skip(k).step_by(5))
        .map(|(c, d, v)| (c.to_owned(), d, v))
        .collect()
}

async fn produce(brokers: &str, topic: &str, payloads: Vec<(String, Vec<u8>)>) {
    let producer: FutureProducer = client_config(brokers)
        .set("enable.idempotence", "true")
        .set("linger.ms", "5")
        .create()
        .unwrap();
    for chunk in payloads.chunks(500) {
        let sends = chunk.iter().map(|(k, v)| {
            producer.send(
                FutureRecord::to(topic).key(k).payload(v),
                Duration::from_secs(30),
            )
        });
        for r in futures::future::join_all(sends).await {
            r.unwrap();
        }
    }
}

async fn start(
    prefix: &Topics,
    brokers: &str,
    rebuild: bool,
    batch_max: usize,
) -> (
    Arc<Metrics>,
    tokio::sync::watch::Sender<bool>,
    tokio::task::JoinHandle<()>,
) {
    let registry = Arc::new(Registry::in_memory());
    let metrics = Arc::new(Metrics::default());
    let mut cfg = ProcessorConfig::new(
        brokers,
        &custflow_tests::redis_url(),
        prefix.clone(),
        Clock::event(0),
    );
    cfg.rebuild = rebuild;
    cfg.batch_max = batch_max;
    let p = Processor::new(cfg, registry, metrics.clone())
        .await
        .unwrap();
    let (tx, rx) = tokio::sync::watch::channel(false);
    let handle = tokio::spawn(async move { p.run(rx).await.unwrap() });
    (metrics, tx, handle)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cdnow_through_the_processor_reproduces_the_published_summary() {
    let (brokers, names) = custflow_tests::deployment("p-").await;
    let tx = cdnow_interleaved();
    let mut payloads: Vec<(String, Vec<u8>)> = tx
        .iter()
        .enumerate()
        .map(|(i, (c, day, value))| {
            let e = Event::Order(Order {
                currency: "USD".into(),
                ..custflow_tests::placed_order(
                    format!("cdnow-{i}"),
                    format!("cdnow-{i}"),
                    c,
                    *day,
                    *value,
                )
            });
            (c.clone(), json::encode(&e))
        })
        .collect();
    // Three invalid events: not JSON, a negative total, an unknown status.
    payloads.push(("bad-1".into(), b"{not json".to_vec()));
    payloads.push(("bad-2".into(), br#"{"event_id":"x","order_id":"o","customer_id":"bad-2","occurred_at":"1997-01-01T00:00:00Z","status":"placed","currency":"USD","total":-5}"#.to_vec()));
    payloads.push(("bad-3".into(), br#"{"event_id":"y","order_id":"o","customer_id":"bad-3","occurred_at":"1997-01-01T00:00:00Z","status":"shipped","currency":"USD","total":5}"#.to_vec()));
    produce(&brokers, &names.name(topics::ORDERS), payloads).await;

    let (metrics, stop, handle) = start(&names, &brokers, false, 5000).await;
    let expected = tx.len() as u64;
    custflow_tests::wait_until(
        Duration::from_secs(120),
        "every event applied or dead-lettered",
        || {
            let m = metrics.clone();
            async move {
                (Metrics::get(&m.applied) == expected && Metrics::get(&m.dead_lettered) == 3)
                    .then_some(())
            }
        },
    )
    .await;
    stop.send(true).unwrap();
    handle.await.unwrap();
    assert_eq!(Metrics::get(&metrics.duplicates), 0);

    // Features as of 1997-09-30 equal the published summary (weeks, 2 decimals).
    let summary = std::fs::read_to_string(
        custflow_tests::reference_data()
            .join("cdnow/cdnow_customers_summary_with_transactions.csv"),
    )
    .unwrap();
    let rows: Vec<Vec<String>> = summary
        .lines()
        .skip(1)
        .map(|l| l.split(',').map(str::to_owned).collect())
        .collect();
    assert_eq!(rows.len(), 2357);
    let ids: Vec<String> = rows.iter().map(|r| r[0].clone()).collect();
    let keys = Keys::new(names.name(""));
    let states = custflow_tests::read_states(&keys, &ids).await;
    let as_of = custflow_models::summary::parse_yyyymmdd("19970930").unwrap() * DAY_MS;
    let same =
        |ours: f64, printed: &str| (ours - printed.parse::<f64>().unwrap()).abs() <= 0.005 + 1e-9;
    for (row, state) in rows.iter().zip(&states) {
        let state = state
            .as_ref()
            .unwrap_or_else(|| panic!("customer {} has no state", row[0]));
        let f = compute(state, as_of, 45.0);
        assert_eq!(f.frequency.to_string(), row[1], "x of {}", row[0]);
        assert!(
            same(f.recency / 7.0, &row[2]),
            "t_x of {}: {}",
            row[0],
            f.recency / 7.0
        );
        assert!(
            same(f.age / 7.0, &row[3]),
            "T of {}: {}",
            row[0],
            f.age / 7.0
        );
        assert!(
            same(f.monetary_value, &row[4]),
            "zbar of {}: {}",
            row[0],
            f.monetary_value
        );
    }

    // The dead letters carry their reasons.
    let consumer: StreamConsumer = client_config(&brokers)
        .set("group.id", custflow_tests::unique("dlq-"))
        .set("auto.offset.reset", "earliest")
        .create()
        .unwrap();
    consumer.subscribe(&[&names.name(topics::DLQ)]).unwrap();
    let mut reasons = Vec::new();
    while reasons.len() < 3 {
        let msg = tokio::time::timeout(Duration::from_secs(20), consumer.recv())
            .await
            .unwrap()
            .unwrap();
        let headers = msg.headers().unwrap();
        let get = |name: &str| {
            headers
                .iter()
                .find(|h| h.key == name)
                .and_then(|h| h.value)
                .map(|v| String::from_utf8_lossy(v).into_owned())
        };
        assert_eq!(
            get("custflow.source.topic").as_deref(),
            Some(names.name(topics::ORDERS).as_str())
        );
        reasons.push((
            String::from_utf8_lossy(msg.key().unwrap()).into_owned(),
            get("custflow.error.reason").unwrap(),
            get("custflow.error.message").unwrap(),
        ));
    }
    reasons.sort();
    assert_eq!(reasons[0].1, "malformed_json");
    assert_eq!(reasons[1].1, "invalid");
    assert!(
        reasons[1].2.contains("\"path\":\"total\""),
        "{}",
        reasons[1].2
    );
    assert!(
        reasons[2].2.contains("\"path\":\"status\""),
        "{}",
        reasons[2].2
    );

    // A rebuild replays everything into a wiped Redis and arrives at identical states,
    // in batches of 50: a backlog of about 140 batches, each applied while the one
    // before is saved, most sharing customers with it.
    let (metrics, stop, handle) = start(&names, &brokers, true, 50).await;
    custflow_tests::wait_until(
        Duration::from_secs(120),
        "the rebuild to apply every event",
        || {
            let m = metrics.clone();
            async move { (Metrics::get(&m.applied) == expected).then_some(()) }
        },
    )
    .await;
    stop.send(true).unwrap();
    handle.await.unwrap();
    assert_eq!(Metrics::get(&metrics.duplicates), 0);
    assert!(
        Metrics::get(&metrics.pipelined) > 0,
        "no batch was applied while the one before was saved"
    );
    let rebuilt = custflow_tests::read_states(&keys, &ids).await;
    assert_eq!(rebuilt, states);
}
