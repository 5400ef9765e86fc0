//! Kafka client settings shared by every custflow producer and consumer.

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
