//! An unmodified Confluent client works with custflow: the Python `confluent-kafka`
//! package's SchemaRegistryClient registers its own (smaller, compatible) Order schema
//! through custflow's registry endpoints, its AvroSerializer produces orders to the
//! broker, and custflow's processor consumes them through the generic Avro path.
//!
//! Needs `CUSTFLOW_PYTHON`: a Python with `confluent-kafka[avro]` (scripts/test.sh
//! creates one).

#![allow(clippy::unwrap_used)] // tests fail loudly on purpose

use std::sync::Arc;
use std::time::Duration;

use custflow_feature_store::features::compute;
use custflow_feature_store::keys::Keys;
use custflow_kafka::registry_store::KafkaRegistryStore;
use custflow_processors::metrics::Metrics;
use custflow_processors::{Clock, Processor, ProcessorConfig};
use custflow_schemas::registry::{Registry, VersionRef};
use custflow_schemas::topics::{self, Topics};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn confluent_python_client_registers_and_produces_custflow_consumes() {
    let python = std::env::var("CUSTFLOW_PYTHON").unwrap_or_else(|_| {
        panic!("CUSTFLOW_PYTHON must name a Python with confluent-kafka[avro]; scripts/test.sh sets it up")
    });
    let brokers = custflow_tests::ensure_stack();
    let names = Topics::new(custflow_tests::unique("ck-") + ".");
    custflow_kafka::ensure_topics(&brokers, &names, Duration::from_secs(20))
        .await
        .unwrap();
    let store = Arc::new(KafkaRegistryStore::new(&brokers, &names.name(topics::SCHEMAS)).unwrap());
    let registry = Arc::new(Registry::open(store).await.unwrap());

    // custflow's registry endpoints on a real port.
    let app = custflow_tests::open(custflow_http::registry::routes().with_state(registry.clone()));
    let addr = custflow_tests::serve(app).await;

    // The processor registers custflow's Order schema as version 1 of the subject.
    let metrics = Arc::new(Metrics::default());
    let cfg = ProcessorConfig::new(
        &brokers,
        &custflow_tests::redis_url(),
        names.clone(),
        Clock::Wall,
    );
    let processor = Processor::new(cfg, registry.clone(), metrics.clone())
        .await
        .unwrap();
    let (stop, rx) = tokio::sync::watch::channel(false);
    let handle = tokio::spawn(async move { processor.run(rx).await.unwrap() });

    let topic = names.name(topics::ORDERS);
    let script = custflow_tests::repo_root().join("tests/py/confluent_orders.py");
    let out = tokio::process::Command::new(&python)
        .arg(&script)
        .arg(format!("http://{addr}"))
        .arg(&brokers)
        .arg(&topic)
        .arg("50")
        .output()
        .await
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let summary: serde_json::Value = serde_json::from_slice(out.stdout.trim_ascii()).unwrap();
    assert_eq!(summary["failed"], 0, "{summary}");
    assert_eq!(
        summary["version"], 2,
        "the client's schema is a new, compatible version: {summary}"
    );
    let subject = custflow_schemas::registry::subject_for(&topic);
    assert_eq!(
        registry.version(&subject, VersionRef::Latest).unwrap().id as u64,
        summary["schema_id"].as_u64().unwrap()
    );

    custflow_tests::wait_until(
        Duration::from_secs(60),
        "the 50 orders to be applied",
        || {
            let m = metrics.clone();
            async move { (Metrics::get(&m.applied) >= 50).then_some(()) }
        },
    )
    .await;
    stop.send(true).unwrap();
    handle.await.unwrap();
    assert_eq!(Metrics::get(&metrics.dead_lettered), 0);
    let ids: Vec<String> = (0..10).map(|i| format!("py-{i}")).collect();
    let states = custflow_tests::read_states(&Keys::new(names.name("")), &ids).await;
    for (id, s) in ids.iter().zip(states) {
        let f = compute(
            &s.unwrap_or_else(|| panic!("{id} has no state")),
            custflow_schemas::time::now_ms(),
            45.0,
        );
        assert_eq!(f.orders_total, 5, "{id}");
        assert_eq!(f.frequency, 4, "{id}: five orders on five different days");
    }
}
