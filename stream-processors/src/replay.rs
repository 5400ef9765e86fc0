//! Reading the `orders` topic back from the beginning of the deployment's log as `(customer, day, net value)`
//! transactions, the way the processors apply orders: a refund or a cancellation counts
//! on the original order's day (a cancelled day nets to nothing). The training sets of
//! `custflow train-churn --from-topics` are built from it.

use std::collections::{HashMap, HashSet};
use std::time::Duration;

use custflow_schemas::avro::{self, AvroCodec};
use custflow_schemas::time::DAY_MS;
use custflow_schemas::topics::Topics;
use custflow_schemas::{json, Event, EventKind, OrderStatus, ValidationContext};
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::{Message, Offset, TopicPartitionList};

use crate::error::{Error, Result};

/// What a replay read.
#[derive(Debug, Clone, Default)]
pub struct Replayed {
    pub transactions: Vec<(String, i64, f64)>,
    /// Records read.
    pub records: u64,
    /// Records that did not decode or validate (the processors dead-letter them).
    pub rejected: u64,
}

/// Every order on the topic up to its current end (what was appended before the replay
/// started), with `occurred_at` at most `up_to_ms`.
pub fn order_transactions(
    brokers: &str,
    topics: &Topics,
    codec: &AvroCodec,
    up_to_ms: Option<i64>,
) -> Result<Replayed> {
    let topic = topics.name(EventKind::Order.topic());
    let consumer: BaseConsumer = custflow_kafka::client::client_config(brokers)
        .set(
            "group.id",
            format!("custflow-replay-{}", custflow_schemas::time::now_ms()),
        )
        .set("enable.auto.commit", "false")
        .create()?;
    let timeout = Duration::from_secs(10);
    let meta = consumer.fetch_metadata(Some(&topic), timeout)?;
    let partitions: Vec<i32> = meta
        .topics()
        .iter()
        .flat_map(|t| t.partitions().iter().map(|p| p.id()))
        .collect();
    if partitions.is_empty() {
        return Err(Error::Config(format!(
            "topic {topic} has no partitions (does it exist?)"
        )));
    }
    let mut assignment = TopicPartitionList::new();
    let mut open: HashSet<i32> = HashSet::new();
    let parts: Vec<(String, i32)> = partitions.iter().map(|p| (topic.clone(), *p)).collect();
    let starts = custflow_kafka::client::log_starts(brokers, &topics.name(""), &parts, timeout)?;
    for &p in &partitions {
        let (_, high) = consumer.fetch_watermarks(&topic, p, timeout)?;
        let start = starts.get(&(topic.clone(), p)).copied().unwrap_or(0);
        if high > start {
            open.insert(p);
            assignment.add_partition_offset(&topic, p, Offset::Offset(start))?;
        }
    }
    consumer.assign(&assignment)?;
    let started = custflow_schemas::time::now_ms();
    let ctx = ValidationContext::now();
    let mut out = Replayed::default();
    // order id → (customer, day, placed total)
    let mut placed: HashMap<String, (String, i64, f64)> = HashMap::new();
    // The end of a partition is its first record appended after the replay started, or
    // silence: high watermarks alone are not reliable on every Kafka API broker.
    let mut quiet = 0;
    while !open.is_empty() {
        let Some(m) = consumer.poll(Duration::from_millis(1000)) else {
            quiet += 1;
            // Two silent seconds once records flow; ten before the first arrives.
            if quiet >= if out.records == 0 { 10 } else { 2 } {
                break;
            }
            continue;
        };
        quiet = 0;
        let m = m?;
        if !open.contains(&m.partition()) {
            continue;
        }
        if m.timestamp().to_millis().is_some_and(|t| t > started) {
            open.remove(&m.partition());
            continue;
        }
        out.records += 1;
        let bytes = m.payload().unwrap_or_default();
        let event = if avro::is_framed(bytes) {
            codec.decode(EventKind::Order, bytes, &ctx)
        } else {
            json::decode(EventKind::Order, bytes, &ctx)
        };
        let Ok(Event::Order(o)) = event else {
            out.rejected += 1;
            continue;
        };
        if up_to_ms.is_some_and(|t| o.occurred_at > t) {
            continue;
        }
        let day = o.occurred_at.div_euclid(DAY_MS);
        match o.status {
            // A placed order seen twice (a producer's retry) counts once.
            OrderStatus::Placed if placed.contains_key(&o.order_id) => {}
            OrderStatus::Placed => {
                placed.insert(o.order_id, (o.customer_id.clone(), day, o.total));
                out.transactions.push((o.customer_id, day, o.total));
            }
            OrderStatus::Refunded => {
                let on = placed.get(&o.order_id).map_or(day, |p| p.1);
                out.transactions.push((o.customer_id, on, -o.total));
            }
            OrderStatus::Cancelled => {
                if let Some((customer, on, total)) = placed.get(&o.order_id) {
                    out.transactions.push((customer.clone(), *on, -total));
                }
            }
        }
    }
    Ok(out)
}
