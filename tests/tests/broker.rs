//! Produces and consumes Avro and JSON events through the real broker (tansu) with
//! rdkafka: topic creation, idempotent produce with acks=all, a consumer group with
//! committed offsets, and the schema registry persisted in its compacted topic.

#![allow(clippy::unwrap_used)] // tests and benches fail loudly on purpose

use std::collections::BTreeSet;
use std::sync::Arc;
use std::time::Duration;

use custflow_kafka::admin::client_config;
use custflow_kafka::registry_store::KafkaRegistryStore;
use custflow_schemas::avro::AvroCodec;
use custflow_schemas::registry::{Registry, VersionRef};
use custflow_schemas::topics::{self, Topics};
use custflow_schemas::{json, Event, EventKind, Order, OrderItem, OrderStatus, ValidationContext};
use rdkafka::consumer::{CommitMode, Consumer, StreamConsumer};
use rdkafka::producer::{FutureProducer, FutureRecord};
use rdkafka::{Message, Offset};

fn order(i: usize) -> Event {
    let qty = i32::try_from(i % 3 + 1).unwrap();
    Event::Order(Order {
        event_id: ulid::Ulid::new().to_string(),
        order_id: format!("o-{i}"),
        customer_id: format!("c-{}", i % 17),
        occurred_at: 1_795_615_200_000 + i as i64 * 1000,
        status: OrderStatus::Placed,
        location_id: Some(format!("loc-{}", i % 4)),
        channel: None,
        currency: "EUR".into(),
        items: vec![OrderItem {
            sku: "burger".into(),
            category: "mains".into(),
            quantity: qty,
            unit_price: 9.5,
        }],
        discount_code: None,
        discount_amount: 0.0,
        total: f64::from(qty) * 9.5,
    })
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn avro_and_json_round_trip_through_the_broker_with_committed_offsets() {
    let brokers = custflow_tests::ensure_stack();
    let names = Topics::new(custflow_tests::unique("t-"));
    let timeout = Duration::from_secs(20);

    // Topics: created once, then found.
    let first = custflow_kafka::ensure_topics(&brokers, &names, timeout)
        .await
        .unwrap();
    assert_eq!(first.len(), topics::ALL.len());
    assert!(first.iter().all(|t| t.created));
    let orders = first
        .iter()
        .find(|t| t.name == names.name(topics::ORDERS))
        .unwrap();
    assert_eq!(orders.partitions, topics::DEFAULT_PARTITIONS);
    let again = custflow_kafka::ensure_topics(&brokers, &names, timeout)
        .await
        .unwrap();
    assert!(again.iter().all(|t| !t.created));

    // Schema ids come from the registry, persisted in its compacted topic.
    let store = Arc::new(KafkaRegistryStore::new(&brokers, &names.name(topics::SCHEMAS)).unwrap());
    let registry = Arc::new(Registry::open(store.clone()).await.unwrap());
    let ids = registry.register_builtin(&names).await.unwrap();
    let codec = AvroCodec::new(registry.clone(), ids.clone());

    let producer: FutureProducer = client_config(&brokers)
        .set("enable.idempotence", "true")
        .set("acks", "all")
        .set("compression.type", "lz4")
        .create()
        .unwrap();
    let topic = names.name(topics::ORDERS);
    let sent: Vec<Event> = (0..200).map(order).collect();
    for (i, e) in sent.iter().enumerate() {
        // Even events as Avro, odd ones as JSON: both are accepted on every input.
        let payload = if i % 2 == 0 {
            codec.encode(e).unwrap()
        } else {
            json::encode(e)
        };
        producer
            .send(
                FutureRecord::to(&topic)
                    .key(e.customer_id())
                    .payload(&payload),
                timeout,
            )
            .await
            .unwrap();
    }

    let group = custflow_tests::unique("g-");
    let consumer: StreamConsumer = client_config(&brokers)
        .set("group.id", &group)
        .set("enable.auto.commit", "false")
        .set("auto.offset.reset", "earliest")
        .create()
        .unwrap();
    consumer.subscribe(&[&topic]).unwrap();
    let ctx = ValidationContext::now();
    let mut got = Vec::new();
    let mut avro_count = 0;
    while got.len() < sent.len() {
        let msg = tokio::time::timeout(timeout, consumer.recv())
            .await
            .expect("events arrive")
            .unwrap();
        let bytes = msg.payload().unwrap();
        let e = if custflow_schemas::avro::is_framed(bytes) {
            avro_count += 1;
            codec.decode(EventKind::Order, bytes, &ctx).unwrap()
        } else {
            json::decode(EventKind::Order, bytes, &ctx).unwrap()
        };
        assert_eq!(
            msg.key().unwrap(),
            e.customer_id().as_bytes(),
            "keyed by customer_id"
        );
        got.push(e);
        consumer.store_offset_from_message(&msg).unwrap();
    }
    consumer.commit_consumer_state(CommitMode::Sync).unwrap();
    assert_eq!(avro_count, 100);
    let key = |e: &Event| e.event_id().to_owned();
    assert_eq!(
        got.iter().map(key).collect::<BTreeSet<_>>(),
        sent.iter().map(key).collect::<BTreeSet<_>>()
    );
    for e in &got {
        let original = sent.iter().find(|s| s.event_id() == e.event_id()).unwrap();
        assert_eq!(e, original, "decoded record equals the one produced");
    }

    // The committed offsets cover exactly what was consumed.
    let committed = consumer.committed(timeout).unwrap();
    let mut total = 0;
    for p in committed.elements_for_topic(&topic) {
        let (low, high) = consumer
            .fetch_watermarks(&topic, p.partition(), timeout)
            .unwrap();
        match p.offset() {
            Offset::Offset(o) => {
                assert_eq!(o, high, "partition {} committed to its end", p.partition());
                total += o - low;
            }
            other => assert_eq!(
                high,
                low,
                "partition {} has data but offset {other:?}",
                p.partition()
            ),
        }
    }
    assert_eq!(total, 200);

    // A restarted registry reads the same ids back from the topic.
    let reopened = Registry::open(store).await.unwrap();
    for kind in EventKind::ALL {
        let subject = custflow_schemas::registry::subject_for(&names.name(kind.topic()));
        assert_eq!(
            reopened.version(&subject, VersionRef::Latest).unwrap().id,
            ids[&kind]
        );
    }
}
