//! Kafka client settings shared by every custflow producer and consumer.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use rdkafka::consumer::{BaseConsumer, Consumer, ConsumerContext, Rebalance};
use rdkafka::error::KafkaError;
use rdkafka::message::{BorrowedMessage, Header, Headers, OwnedHeaders};
use rdkafka::statistics::Statistics;
use rdkafka::types::RDKafkaErrorCode;
use rdkafka::{ClientConfig, ClientContext, Message, Offset, TopicPartitionList};

/// Base client settings: the bootstrap servers and anything in `CUSTFLOW_KAFKA_*`
/// (for example `CUSTFLOW_KAFKA_SECURITY_PROTOCOL=ssl` becomes `security.protocol=ssl`),
/// so TLS and SASL settings pass through to librdkafka unchanged. Callers set the
/// settings custflow's guarantees depend on (acks, idempotence, manual commits) with
/// `set`, which replaces these, and tuning settings with [`Tune::tune`], which does not.
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
        .tune("compression.type", "lz4")
        .tune("linger.ms", "20")
        .tune("batch.size", "1000000")
        .tune("queue.buffering.max.messages", "500000");
    c
}

/// custflow's choice of a tuning setting (batching, compression, fetch waits, timeouts),
/// which the operator's `CUSTFLOW_KAFKA_*` variables override.
pub trait Tune {
    /// Sets `key` to `value` unless the environment already set it.
    fn tune(&mut self, key: &str, value: &str) -> &mut Self;
}

impl Tune for ClientConfig {
    fn tune(&mut self, key: &str, value: &str) -> &mut Self {
        if self.get(key).is_none() {
            self.set(key, value);
        }
        self
    }
}

/// Whether a send failed because the idempotent producer can no longer produce: fenced
/// (after its messages timed out and it moved to a new epoch, some brokers refuse it),
/// its sequence lost, or librdkafka's fatal error. Only a new producer helps.
pub fn is_fenced(e: &KafkaError) -> bool {
    matches!(
        e.rdkafka_error_code(),
        Some(
            RDKafkaErrorCode::ProducerFenced
                | RDKafkaErrorCode::InvalidProducerEpoch
                | RDKafkaErrorCode::UnknownProducerId
                | RDKafkaErrorCode::OutOfOrderSequenceNumber
                | RDKafkaErrorCode::Fatal
        )
    )
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

/// The header that marks a record of the `customers` topic as an erasure request
/// (`DELETE /v1/customers/{id}`) rather than a profile. Its value is the erasure time
/// (epoch milliseconds); the record's key is the customer id. Going through the input
/// log makes the processor that owns the customer the only writer of the erasure, in
/// order with the customer's other events, and a rebuild replays it.
pub const ERASURE_HEADER: &str = "custflow.erasure";

/// The headers of an erasure request made at `at_ms`.
pub fn erasure_headers(at_ms: i64) -> OwnedHeaders {
    OwnedHeaders::new().insert(Header {
        key: ERASURE_HEADER,
        value: Some(&at_ms.to_string()),
    })
}

/// The header of a score caused by events: when the earliest of those events was
/// produced (epoch milliseconds), so the sink can report event → row latency. Scores of
/// a rescoring pass or a clock sweep have none.
pub const EVENT_TIME_HEADER: &str = "custflow.event-ms";

/// `headers` (or new ones) with the [`EVENT_TIME_HEADER`] of an event produced at `at_ms`.
pub fn add_event_time(headers: Option<OwnedHeaders>, at_ms: i64) -> OwnedHeaders {
    headers.unwrap_or_default().insert(Header {
        key: EVENT_TIME_HEADER,
        value: Some(&at_ms.to_string()),
    })
}

/// The [`EVENT_TIME_HEADER`] of `msg`, when it has a readable one.
pub fn event_time<M: Message>(msg: &M) -> Option<i64> {
    let headers = msg.headers()?;
    let h = headers.iter().find(|h| h.key == EVENT_TIME_HEADER)?;
    std::str::from_utf8(h.value?).ok()?.parse().ok()
}

/// The erasure time of `msg` if it is an erasure request; an unreadable value counts as
/// the record's own timestamp (then as 1, never 0, so the request still erases).
pub fn erasure_at<M: Message>(msg: &M) -> Option<i64> {
    let headers = msg.headers()?;
    let h = headers.iter().find(|h| h.key == ERASURE_HEADER)?;
    let parsed = h
        .value
        .and_then(|v| std::str::from_utf8(v).ok())
        .and_then(|v| v.parse::<i64>().ok());
    Some(
        parsed
            .or_else(|| msg.timestamp().to_millis())
            .unwrap_or(1)
            .max(1),
    )
}

/// A consumer context that does not log the end of a partition as an error (librdkafka
/// reports it as a global error too).
struct EofQuiet;

impl ClientContext for EofQuiet {
    fn error(&self, error: KafkaError, reason: &str) {
        let eof = matches!(
            error,
            KafkaError::PartitionEOF(_) | KafkaError::Global(RDKafkaErrorCode::PartitionEOF)
        );
        if !eof {
            tracing::warn!(error = %error, reason, "kafka client error");
        }
    }
}

impl ConsumerContext for EofQuiet {}

/// How far before a position a consumer starts reading: more records than one producer
/// batch holds (librdkafka's `batch.num.messages` is at most 10,000 by default).
pub const BATCH_REWIND: i64 = 10_000;

/// A consumer group member's context that restarts every newly assigned partition a
/// little before its committed offset, and tells which messages come before it.
///
/// tansu 0.6 answers a fetch at an offset inside a producer's record batch with the
/// batches after it: a member resuming at a committed offset inside a batch would never
/// see the rest of that batch. Reading from [`BATCH_REWIND`] records earlier makes the
/// broker return that batch whole; [`Self::keep`] then drops what was already handled.
/// On a broker without the bug this costs one extra fetch per assignment.
///
/// The rebalance callback only notes the new partitions; the member calls
/// [`Self::settle`] after each poll, before handling any message. (Reading the
/// committed offsets inside the callback stalled tansu's next rebalance.)
///
/// As the members' context it also keeps the lag librdkafka's statistics report
/// ([`Self::lags`]).
#[derive(Default)]
pub struct Rewind {
    /// Per (topic, partition): the first offset to handle.
    floors: Mutex<HashMap<(String, i32), i64>>,
    /// Partitions assigned since the last [`Self::settle`].
    fresh: Mutex<Vec<(String, i32)>>,
    /// Per (topic, partition): the lag librdkafka's last statistics reported.
    lags: Mutex<HashMap<(String, i32), i64>>,
}

impl Rewind {
    /// Whether polled message `m` is to be handled: its partition is settled and not
    /// among the partitions `moved` by the last [`Self::settle`] (those messages come
    /// again), and its offset is at or after the partition's position (partitions
    /// without a recorded position keep everything).
    pub fn keep<M: Message>(&self, m: &M, moved: &[(String, i32)]) -> bool {
        let key = (m.topic().to_owned(), m.partition());
        if moved.contains(&key) {
            return false;
        }
        let fresh = self.fresh.lock().unwrap_or_else(|p| p.into_inner());
        if fresh.contains(&key) {
            return false;
        }
        drop(fresh);
        let floors = self.floors.lock().unwrap_or_else(|p| p.into_inner());
        floors.get(&key).is_none_or(|floor| m.offset() >= *floor)
    }

    /// Whether partitions were assigned since the last [`Self::settle`].
    pub fn unsettled(&self) -> bool {
        !self
            .fresh
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .is_empty()
    }

    /// Rewinds the partitions assigned since the last call: each with a committed
    /// offset is sought [`BATCH_REWIND`] records before it, with the committed offset as
    /// its floor. Returns the partitions moved: messages of theirs already polled must
    /// be dropped (they are read again). On an error the partitions stay unsettled and
    /// their polled messages must be dropped all the same. Blocking.
    pub fn settle<C: Consumer<Rewind>>(
        consumer: &C,
        timeout: Duration,
    ) -> Result<Vec<(String, i32)>, KafkaError> {
        let ctx = consumer.context();
        let fresh = std::mem::take(&mut *ctx.fresh.lock().unwrap_or_else(|p| p.into_inner()));
        if fresh.is_empty() {
            return Ok(fresh);
        }
        let settled = (|| {
            let mut tpl = TopicPartitionList::new();
            for (topic, partition) in &fresh {
                tpl.add_partition(topic, *partition);
            }
            let committed = consumer.committed_offsets(tpl, timeout)?;
            let mut moved = Vec::new();
            for e in committed.elements() {
                if let Offset::Offset(o) = e.offset() {
                    Self::seek(consumer, e.topic(), e.partition(), o, timeout)?;
                    moved.push((e.topic().to_owned(), e.partition()));
                }
            }
            Ok(moved)
        })();
        if settled.is_err() {
            let mut again = ctx.fresh.lock().unwrap_or_else(|p| p.into_inner());
            again.extend(fresh);
        }
        settled
    }

    /// Moves `partition` of `topic` to `offset`: the consumer is sought to
    /// [`BATCH_REWIND`] records before it and what comes before `offset` is dropped by
    /// [`Self::keep`]. Blocking.
    pub fn seek<C: Consumer<Rewind>>(
        consumer: &C,
        topic: &str,
        partition: i32,
        offset: i64,
        timeout: Duration,
    ) -> Result<(), KafkaError> {
        consumer.context().set_floor(topic, partition, offset);
        consumer.seek(
            topic,
            partition,
            Offset::Offset((offset - BATCH_REWIND).max(0)),
            timeout,
        )
    }

    /// The lag of each partition this member fetches, as of librdkafka's last
    /// statistics (`statistics.interval.ms`): its `consumer_lag`, the log end the fetch
    /// responses reported minus the committed offset (what Kafka's own tools call lag).
    /// Reading it sends the broker nothing. (tansu answers each ListOffsets by listing
    /// every batch the partition holds: polled every 2 s, that cost grew with the log.)
    pub fn lags(&self) -> HashMap<(String, i32), i64> {
        self.lags.lock().unwrap_or_else(|p| p.into_inner()).clone()
    }

    fn set_floor(&self, topic: &str, partition: i32, offset: i64) {
        let mut floors = self.floors.lock().unwrap_or_else(|p| p.into_inner());
        floors.insert((topic.to_owned(), partition), offset);
    }
}

impl ClientContext for Rewind {
    fn stats(&self, stats: Statistics) {
        let mut lags = self.lags.lock().unwrap_or_else(|p| p.into_inner());
        for (topic, t) in stats.topics {
            for (partition, p) in t.partitions {
                // Partition -1 is librdkafka's internal one; a lag below 0 is unknown.
                if partition >= 0 && p.consumer_lag >= 0 {
                    lags.insert((topic.clone(), partition), p.consumer_lag);
                }
            }
        }
    }
}

impl ConsumerContext for Rewind {
    fn post_rebalance(&self, _consumer: &BaseConsumer<Self>, rebalance: &Rebalance<'_>) {
        let (Rebalance::Assign(tpl) | Rebalance::Revoke(tpl)) = rebalance else {
            return;
        };
        let parts: Vec<(String, i32)> = tpl
            .elements()
            .iter()
            .map(|e| (e.topic().to_owned(), e.partition()))
            .collect();
        let mut floors = self.floors.lock().unwrap_or_else(|p| p.into_inner());
        let mut fresh = self.fresh.lock().unwrap_or_else(|p| p.into_inner());
        for p in &parts {
            floors.remove(p);
        }
        fresh.retain(|p| !parts.contains(p));
        if matches!(rebalance, Rebalance::Assign(_)) {
            fresh.extend(parts);
        }
    }
}

/// Reads partitions `(topic, partition, from)` to their ends, calling `f` on every
/// message. Blocking.
///
/// The end is where the broker's fetch responses say the partition ends (librdkafka's
/// partition-EOF event), not the high watermark from a ListOffsets request: tansu
/// answers the latter with a value that can trail the log by thousands of records.
pub fn read_to_end(
    brokers: &str,
    starts: &[(String, i32, i64)],
    timeout: Duration,
    mut f: impl FnMut(&BorrowedMessage<'_>),
) -> Result<(), String> {
    let mut topics: Vec<&str> = starts.iter().map(|(t, _, _)| t.as_str()).collect();
    topics.sort_unstable();
    topics.dedup();
    let deadline = Instant::now() + timeout;
    // One topic at a time: the EOF event names the partition, not the topic.
    for topic in topics {
        let consumer: BaseConsumer<EofQuiet> = client_config(brokers)
            .set("group.id", "custflow-log-reader")
            .set("enable.auto.commit", "false")
            .set("enable.partition.eof", "true")
            .set("auto.offset.reset", "earliest")
            // The end shows in a fetch response: do not let the broker hold an empty
            // fetch for the default 500 ms before answering.
            .tune("fetch.wait.max.ms", "10")
            .create_with_context(EofQuiet)
            .map_err(|e| e.to_string())?;
        let mut tpl = TopicPartitionList::new();
        let mut open: Vec<i32> = Vec::new();
        for (t, partition, from) in starts.iter().filter(|(t, _, _)| t == topic) {
            // Fails at once for a missing topic or partition (instead of waiting for an
            // end that never comes); the values themselves are not trusted.
            consumer
                .fetch_watermarks(t, *partition, timeout)
                .map_err(|e| format!("{t}/{partition}: {e}"))?;
            tpl.add_partition_offset(t, *partition, Offset::Offset((*from).max(0)))
                .map_err(|e| e.to_string())?;
            open.push(*partition);
        }
        consumer.assign(&tpl).map_err(|e| e.to_string())?;
        while !open.is_empty() {
            if Instant::now() > deadline {
                return Err(format!(
                    "timed out reading {topic} ({} partition(s) left)",
                    open.len()
                ));
            }
            match consumer.poll(Duration::from_millis(200)) {
                None => {}
                Some(Err(KafkaError::PartitionEOF(p))) => {
                    open.retain(|x| *x != p);
                }
                Some(Err(e)) => return Err(e.to_string()),
                Some(Ok(msg)) => f(&msg),
            }
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use rdkafka::producer::BaseProducer;

    /// A tuning setting the operator chose (`CUSTFLOW_KAFKA_LINGER_MS`, applied by
    /// `client_config`) stays; one they did not gets custflow's value.
    #[test]
    fn tuning_defaults_do_not_replace_the_operators_settings() {
        let mut c = ClientConfig::new();
        c.set("linger.ms", "200");
        c.tune("linger.ms", "5").tune("fetch.wait.max.ms", "20");
        assert_eq!(c.get("linger.ms"), Some("200"));
        assert_eq!(c.get("fetch.wait.max.ms"), Some("20"));
    }

    /// librdkafka is built with OpenSSL, so `CUSTFLOW_KAFKA_SECURITY_PROTOCOL=ssl` (or
    /// `sasl_ssl` with SCRAM) is accepted instead of failing with "OpenSSL not
    /// available at build time".
    #[test]
    fn tls_and_sasl_settings_are_accepted() {
        let p: Result<BaseProducer, _> = client_config("127.0.0.1:9093")
            .set("security.protocol", "sasl_ssl")
            .set("sasl.mechanism", "SCRAM-SHA-256")
            .set("sasl.username", "u")
            .set("sasl.password", "p")
            .set("ssl.endpoint.identification.algorithm", "https")
            .create();
        assert!(p.is_ok(), "{:?}", p.err());
    }

    /// The event time rides beside a trace header and reads back; a message without it
    /// (a rescored customer's score) or with garbage has none.
    #[test]
    fn event_time_header_round_trips() {
        let msg = |headers: Option<OwnedHeaders>| {
            rdkafka::message::OwnedMessage::new(
                None,
                None,
                "t".into(),
                rdkafka::Timestamp::NotAvailable,
                0,
                0,
                headers,
            )
        };
        let traced = OwnedHeaders::new().insert(Header {
            key: "traceparent",
            value: Some("x"),
        });
        assert_eq!(
            event_time(&msg(Some(add_event_time(Some(traced), 1_700_000_000_123)))),
            Some(1_700_000_000_123)
        );
        assert_eq!(event_time(&msg(Some(add_event_time(None, 5)))), Some(5));
        assert_eq!(event_time(&msg(None)), None);
        let garbage = OwnedHeaders::new().insert(Header {
            key: EVENT_TIME_HEADER,
            value: Some("soon"),
        });
        assert_eq!(event_time(&msg(Some(garbage))), None);
    }
}
