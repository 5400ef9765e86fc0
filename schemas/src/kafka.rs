//! Kafka client settings shared by every custflow producer and consumer.

use rdkafka::message::{Header, OwnedHeaders};
use rdkafka::ClientConfig;

/// Base client settings: the bootstrap servers and anything in `CUSTFLOW_KAFKA_*`
/// (for example `CUSTFLOW_KAFKA_SECURITY_PROTOCOL=ssl` becomes `security.protocol=ssl`),
/// so TLS and SASL settings pass through to librdkafka unchanged.
///
/// Nagle's algorithm is off by default: with it, a small produce request waits for the
/// previous one's TCP acknowledgement, which tripled the REST endpoint's latency.
pub fn client_config(brokers: &str) -> ClientConfig {
    let mut c = ClientConfig::new();
    c.set("bootstrap.servers", brokers);
    c.set("socket.nagle.disable", "true");
    for (k, v) in std::env::vars() {
        if let Some(rest) = k.strip_prefix("CUSTFLOW_KAFKA_") {
            c.set(rest.to_ascii_lowercase().replace('_', "."), v);
        }
    }
    c
}

/// Settings of a producer for bulk input (generator backfill, connectors): idempotent
/// with `acks=all`, lz4-compressed, large batches after a short linger.
pub fn bulk_producer_config(brokers: &str) -> ClientConfig {
    let mut c = client_config(brokers);
    c.set("enable.idempotence", "true")
        .set("acks", "all")
        .set("compression.type", "lz4")
        .set("linger.ms", "20")
        .set("batch.size", "1000000")
        .set("queue.buffering.max.messages", "500000");
    c
}

/// The headers of a dead letter on `custflow-dlq`: where the message came from and why
/// it could not be handled.
pub fn dead_letter_headers(
    topic: &str,
    partition: i32,
    offset: i64,
    reason: &str,
    message: &str,
) -> OwnedHeaders {
    let (partition, offset) = (partition.to_string(), offset.to_string());
    [
        ("custflow.source.topic", topic),
        ("custflow.source.partition", &partition),
        ("custflow.source.offset", &offset),
        ("custflow.error.reason", reason),
        ("custflow.error.message", message),
    ]
    .into_iter()
    .fold(OwnedHeaders::new(), |h, (key, value)| {
        h.insert(Header {
            key,
            value: Some(value),
        })
    })
}
