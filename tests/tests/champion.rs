//! A champion switch mid-stream, against the real broker and Redis: while orders keep
//! arriving, a new model becomes current; the processor rescores every customer once, so
//! each customer's latest score names the new model, and per-customer versions only grow.

#![allow(clippy::unwrap_used)] // tests fail loudly on purpose

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use custflow_feature_store::model::ModelHandle;
use custflow_ingest::kafka::client_config;
use custflow_models::artefact::ModelArtefact;
use custflow_processors::metrics::Metrics;
use custflow_processors::runtime::{BoxFuture, Tick};
use custflow_processors::scoring::Scorer;
use custflow_processors::{Clock, Processor, ProcessorConfig};
use custflow_schemas::registry::Registry;
use custflow_schemas::topics::{self, Topics};
use custflow_schemas::{avro, json, CustomerScore, Event};
use rdkafka::consumer::{Consumer, StreamConsumer};
use rdkafka::producer::{FutureProducer, FutureRecord};
use rdkafka::Message;

/// Makes `next` current at the following tick, like a model job publishing a champion.
struct Switch {
    model: ModelHandle,
    next: Mutex<Option<ModelArtefact>>,
}

impl Tick for Switch {
    fn tick(&self) -> BoxFuture<'_, custflow_processors::Result<bool>> {
        Box::pin(async move {
            let next = self.next.lock().unwrap().take();
            Ok(next.map(|m| self.model.set(m)).is_some())
        })
    }
}

fn artefact(version: &str) -> ModelArtefact {
    let text =
        std::fs::read_to_string(custflow_tests::repo_root().join("connectors/tests/model.json"))
            .unwrap();
    let mut m: ModelArtefact = serde_json::from_str(&text).unwrap();
    m.version = version.into();
    m
}

async fn send_orders(
    producer: &FutureProducer,
    topic: &str,
    customers: std::ops::Range<u32>,
    day: i64,
) {
    let sends = customers.map(|c| {
        let id = format!("cust-{c:04}");
        let e = Event::Order(custflow_tests::placed_order(
            format!("e-{c}-{day}"),
            format!("o-{c}-{day}"),
            &id,
            20_000 + day,
            10.0 + f64::from(c % 7),
        ));
        let payload = json::encode(&e);
        async move {
            producer
                .send(
                    FutureRecord::to(topic).key(&id).payload(&payload),
                    Duration::from_secs(30),
                )
                .await
                .unwrap();
        }
    });
    futures::future::join_all(sends).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_new_champion_mid_stream_rescores_every_customer() {
    let brokers = custflow_tests::ensure_stack();
    let names = Topics::new(custflow_tests::unique("champ-"));
    custflow_ingest::ensure_topics(&brokers, &names, Duration::from_secs(20))
        .await
        .unwrap();
    let registry = Arc::new(Registry::in_memory());
    let out_ids = registry.register_outputs(&names).await.unwrap();
    let metrics = Arc::new(Metrics::default());
    let mut cfg = ProcessorConfig::new(
        &brokers,
        &custflow_tests::redis_url(),
        names.clone(),
        Clock::event(0),
    );
    cfg.sweep_every = Duration::from_millis(200);
    cfg.rescore_slice = 40; // several slices, interleaved with live batches
    let model = ModelHandle::default();
    model.set(artefact("model-a"));
    let switch = Arc::new(Switch {
        model: model.clone(),
        next: Mutex::new(None),
    });
    let p = Processor::new(cfg, registry, metrics.clone())
        .await
        .unwrap();
    let scorer = Scorer::new(
        p.producer().clone(),
        names.clone(),
        model.clone(),
        metrics.clone(),
        45.0,
        out_ids,
    );
    let p = p.with_hook(Arc::new(scorer)).with_tick(switch.clone());
    let (stop, rx) = tokio::sync::watch::channel(false);
    let handle = tokio::spawn(async move { p.run(rx).await.unwrap() });

    let producer: FutureProducer = client_config(&brokers).create().unwrap();
    let orders = names.name(topics::ORDERS);
    send_orders(&producer, &orders, 0..400, 0).await;
    custflow_tests::wait_until(Duration::from_secs(60), "400 first scores", || {
        let m = metrics.clone();
        async move { (Metrics::get(&m.applied) >= 400).then_some(()) }
    })
    .await;

    // The switch, with orders still flowing: repeat orders of some, new customers.
    *switch.next.lock().unwrap() = Some(artefact("model-b"));
    send_orders(&producer, &orders, 300..500, 3).await;
    custflow_tests::wait_until(Duration::from_secs(60), "the rescoring pass", || {
        let m = metrics.clone();
        async move {
            (Metrics::get(&m.model_passes) == 1
                && Metrics::get(&m.model_rescored) >= 400
                && Metrics::get(&m.applied) >= 600)
                .then_some(())
        }
    })
    .await;
    send_orders(&producer, &orders, 0..50, 5).await;
    custflow_tests::wait_until(Duration::from_secs(60), "the last orders", || {
        let m = metrics.clone();
        async move { (Metrics::get(&m.applied) >= 650).then_some(()) }
    })
    .await;
    stop.send(true).unwrap();
    handle.await.unwrap();

    // Every score on the topic: per customer, versions grow; the latest names model-b.
    let consumer: StreamConsumer = client_config(&brokers)
        .set("group.id", custflow_tests::unique("champ-check-"))
        .set("auto.offset.reset", "earliest")
        .create()
        .unwrap();
    consumer
        .subscribe(&[&names.name(topics::CUSTOMER_SCORES)])
        .unwrap();
    let emitted = Metrics::get(&metrics.scores_emitted);
    let mut latest: HashMap<String, CustomerScore> = HashMap::new();
    let mut models_seen: HashMap<String, u64> = HashMap::new();
    for _ in 0..emitted {
        let m = tokio::time::timeout(Duration::from_secs(30), consumer.recv())
            .await
            .expect("fewer scores on the topic than emitted")
            .unwrap();
        let (_, datum) = avro::unframe(m.payload().unwrap()).unwrap();
        let s: CustomerScore = avro::decode_record("CustomerScore", datum).unwrap();
        *models_seen.entry(s.model_version.clone()).or_default() += 1;
        if let Some(prev) = latest.get(&s.customer_id) {
            assert!(
                s.version > prev.version,
                "{}: version {} after {}",
                s.customer_id,
                s.version,
                prev.version
            );
        }
        latest.insert(s.customer_id.clone(), s);
    }
    assert_eq!(latest.len(), 500, "every customer has a score");
    let stale: Vec<&str> = latest
        .values()
        .filter(|s| s.model_version != "model-b")
        .map(|s| s.customer_id.as_str())
        .collect();
    assert!(stale.is_empty(), "still scored by the old model: {stale:?}");
    assert!(models_seen["model-a"] >= 400, "{models_seen:?}");
}
