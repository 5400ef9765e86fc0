//! Kafka client settings shared by every custflow producer and consumer.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use rdkafka::consumer::{BaseConsumer, Consumer, ConsumerContext};
use rdkafka::error::KafkaError;
use rdkafka::message::{BorrowedMessage, Header, Headers, OwnedHeaders, ToBytes};
use rdkafka::producer::{DeliveryFuture, FutureProducer, FutureRecord};
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

/// How long a long-lived consumer's fetch may wait for records (`fetch.wait.max.ms`).
/// tansu (0.6) answers a fetch by querying every partition of it and then sleeping the
/// wait (half of it from 250 ms on) before it answers, records or not: the wait is both
/// what each hop adds to an event's way and the period of an idle consumer's queries. On
/// the SQLite engine, which serves one request at a time, a query costs about 1 ms per
/// partition: at 20 ms an idle `custflow run` kept the broker so busy that other
/// clients' requests waited seconds (a restarted process timed out reading the schema
/// registry); at 200 ms an idle processor of 24 partitions costs it about a tenth of a
/// core. Override with `CUSTFLOW_KAFKA_FETCH_WAIT_MAX_MS`.
pub const FETCH_WAIT_MS: &str = "200";

/// How long a long-lived consumer's partitions wait to fetch again once its local queue
/// reached `queued.min.messages` (100,000) (`fetch.queue.backoff.ms`). librdkafka's
/// default, 1 s, is how long a processor applying 100,000 events/s takes to empty that
/// queue: behind a backlog the queue ran dry about once a second and the processor
/// waited for the next fetch (and tansu's `fetch.wait.max.ms`), 97k events/s at a
/// million customers against 116–128k without the waits (BENCHMARKS.md, "Processing").
/// Override with `CUSTFLOW_KAFKA_FETCH_QUEUE_BACKOFF_MS`.
pub const FETCH_QUEUE_BACKOFF_MS: &str = "100";

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

/// Queues every record at once and waits for each acknowledgement, in order
/// ([`send_all`], then [`delivered`]).
pub async fn produce_all<'a, K, P>(
    producer: &FutureProducer,
    records: Vec<FutureRecord<'a, K, P>>,
    queue_timeout: Duration,
) -> Result<(), KafkaError>
where
    K: ToBytes + ?Sized + 'a,
    P: ToBytes + ?Sized + 'a,
{
    delivered(send_all(producer, records, queue_timeout).await?).await
}

/// Queues every record at once and returns their acknowledgements to wait for
/// ([`delivered`]): one oneshot per record, where a `join_all` of
/// [`FutureProducer::send`] futures polled each of them in a set on every wake-up (a
/// rescoring slice produces 5,000). A full local queue waits for room, as `send` does,
/// for up to `queue_timeout` per record; a queueing error is returned at once. The
/// records come collected: an iterator's closures held across the waits would tie the
/// future to their lifetimes and keep it from being sent to another task.
pub async fn send_all<'a, K, P>(
    producer: &FutureProducer,
    records: Vec<FutureRecord<'a, K, P>>,
    queue_timeout: Duration,
) -> Result<Vec<DeliveryFuture>, KafkaError>
where
    K: ToBytes + ?Sized + 'a,
    P: ToBytes + ?Sized + 'a,
{
    let mut acks = Vec::with_capacity(records.len());
    for mut record in records {
        let deadline = Instant::now() + queue_timeout;
        loop {
            match producer.send_result(record) {
                Ok(ack) => {
                    acks.push(ack);
                    break;
                }
                Err((KafkaError::MessageProduction(RDKafkaErrorCode::QueueFull), r))
                    if Instant::now() < deadline =>
                {
                    record = r;
                    tokio::time::sleep(Duration::from_millis(5)).await;
                }
                Err((e, _)) => return Err(e),
            }
        }
    }
    Ok(acks)
}

/// Waits for every acknowledgement of [`send_all`]'s records, in order; the first
/// delivery error is returned.
pub async fn delivered(acks: Vec<DeliveryFuture>) -> Result<(), KafkaError> {
    for ack in acks {
        match ack.await {
            Ok(Ok(_)) => {}
            Ok(Err((e, _))) => return Err(e),
            Err(_) => return Err(KafkaError::Canceled),
        }
    }
    Ok(())
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

/// The context of a consumer that assigns its partitions itself (`Rewind::reassign`):
/// every partition it takes restarts a little before its committed offset, and it tells
/// which messages come before that offset.
///
/// tansu 0.6 answers a fetch at an offset inside a producer's record batch with the
/// batches after it: a consumer resuming at a committed offset inside a batch would
/// never see the rest of that batch. Reading from [`BATCH_REWIND`] records earlier makes
/// the broker return that batch whole; [`Self::keep`] then drops what was already
/// handled. On a broker without the bug this costs one extra fetch per assignment.
#[derive(Default)]
pub struct Rewind {
    /// Per (topic, partition): the first offset to handle.
    floors: Mutex<HashMap<(String, i32), i64>>,
}

impl Rewind {
    /// Whether polled message `m` is to be handled: its offset is at or after its
    /// partition's floor (partitions without one keep everything).
    pub fn keep<M: Message>(&self, m: &M) -> bool {
        let floors = self.floors.lock().unwrap_or_else(|p| p.into_inner());
        floors
            .get(&(m.topic().to_owned(), m.partition()))
            .is_none_or(|floor| m.offset() >= *floor)
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

    /// Makes `wanted` the consumer's assignment (a consumer that assigns its partitions
    /// itself instead of joining a group, `members`' split). Partitions it gains start
    /// [`BATCH_REWIND`] records before their committed offsets, which become their
    /// floors (at the start of the log when nothing is committed); partitions it loses
    /// are dropped with their floors. Returns the partitions gained and lost. Blocking.
    #[allow(clippy::type_complexity)]
    pub fn reassign<C: Consumer<Rewind>>(
        consumer: &C,
        wanted: &[(String, i32)],
        timeout: Duration,
    ) -> Result<(Vec<(String, i32)>, Vec<(String, i32)>), KafkaError> {
        let current: Vec<(String, i32)> = consumer
            .assignment()?
            .elements()
            .iter()
            .map(|e| (e.topic().to_owned(), e.partition()))
            .collect();
        let gained: Vec<(String, i32)> = wanted
            .iter()
            .filter(|w| !current.contains(w))
            .cloned()
            .collect();
        let lost: Vec<(String, i32)> = current
            .iter()
            .filter(|c| !wanted.contains(c))
            .cloned()
            .collect();
        let ctx = consumer.context();
        if !lost.is_empty() {
            let mut tpl = TopicPartitionList::new();
            for (t, p) in &lost {
                tpl.add_partition(t, *p);
            }
            consumer.incremental_unassign(&tpl)?;
            let mut floors = ctx.floors.lock().unwrap_or_else(|p| p.into_inner());
            for k in &lost {
                floors.remove(k);
            }
        }
        if !gained.is_empty() {
            let mut ask = TopicPartitionList::new();
            for (t, p) in &gained {
                ask.add_partition(t, *p);
            }
            let committed = consumer.committed_offsets(ask, timeout)?;
            let mut tpl = TopicPartitionList::new();
            for e in committed.elements() {
                let start = match e.offset() {
                    Offset::Offset(o) => {
                        ctx.set_floor(e.topic(), e.partition(), o);
                        Offset::Offset((o - BATCH_REWIND).max(0))
                    }
                    _ => Offset::Beginning,
                };
                tpl.add_partition_offset(e.topic(), e.partition(), start)?;
            }
            consumer.incremental_assign(&tpl)?;
        }
        Ok((gained, lost))
    }

    fn set_floor(&self, topic: &str, partition: i32, offset: i64) {
        let mut floors = self.floors.lock().unwrap_or_else(|p| p.into_inner());
        floors.insert((topic.to_owned(), partition), offset);
    }
}

impl ClientContext for Rewind {}

impl ConsumerContext for Rewind {}

/// The partition count of each of `topics` that exists, from the metadata of those
/// topics only: the metadata of all of a broker's topics is a heavy request on tansu's
/// SQLite engine once many deployments share it (an idle processor that asked for it
/// every 2 s kept that broker busy). Blocking.
pub fn partition_counts<C: ConsumerContext, K: Consumer<C>>(
    consumer: &K,
    topics: &[String],
    timeout: Duration,
) -> Result<Vec<(String, i32)>, KafkaError> {
    let mut out = Vec::new();
    for name in topics {
        let md = consumer.fetch_metadata(Some(name), timeout)?;
        for t in md.topics().iter().filter(|t| t.name() == name) {
            if t.error().is_none() && !t.partitions().is_empty() {
                out.push((name.clone(), t.partitions().len() as i32));
            }
        }
    }
    Ok(out)
}

/// Every partition of `topics` that exists ([`partition_counts`]). Blocking.
pub fn partitions_of<C: ConsumerContext, K: Consumer<C>>(
    consumer: &K,
    topics: &[String],
    timeout: Duration,
) -> Result<Vec<(String, i32)>, KafkaError> {
    Ok(partition_counts(consumer, topics, timeout)?
        .into_iter()
        .flat_map(|(t, n)| (0..n).map(move |p| (t.clone(), p)))
        .collect())
}

/// The first (`latest` false) or next (`latest` true) offset of each of `parts`, asked in
/// one ListOffsets request per broker (`fetch_watermarks` asks two per partition; on
/// tansu's SQLite engine, which serves one request at a time, that was a good part of a
/// busy broker's work). Blocking.
pub fn log_ends<C: ConsumerContext, K: Consumer<C>>(
    consumer: &K,
    parts: &[(String, i32)],
    latest: bool,
    timeout: Duration,
) -> Result<HashMap<(String, i32), i64>, KafkaError> {
    let mut tpl = TopicPartitionList::new();
    for (t, p) in parts {
        // As ListOffsets "timestamps", End (-1) and Beginning (-2) ask for the log's end
        // and start.
        tpl.add_partition_offset(
            t,
            *p,
            if latest {
                Offset::End
            } else {
                Offset::Beginning
            },
        )?;
    }
    if tpl.count() == 0 {
        return Ok(HashMap::new());
    }
    let answered = consumer.offsets_for_times(tpl, timeout)?;
    let mut out = HashMap::new();
    for e in answered.elements() {
        e.error()?;
        let at = match e.offset() {
            Offset::Offset(o) if o >= 0 => o,
            Offset::Beginning | Offset::Offset(_) | Offset::End => 0,
            other => {
                return Err(KafkaError::OffsetFetch(RDKafkaErrorCode::InvalidArgument))
                    .inspect_err(|_| tracing::debug!(?other, "unexpected log end"))
            }
        };
        out.insert((e.topic().to_owned(), e.partition()), at);
    }
    Ok(out)
}

/// The consumer group whose committed offsets say where a deployment's log begins
/// (`demo --fresh` moves them to the ends of the topics, so everything before is history
/// nobody replays); without them a log begins at its first offset. A topic is never
/// deleted to start over: tansu 0.6's durable engines delete every topic of the broker
/// when asked to delete one.
pub fn log_start_group(prefix: &str) -> String {
    format!("{prefix}custflow-log-start")
}

/// Where each of `parts` (topic, partition) begins for the deployment `prefix`: its first
/// offset, or the start recorded for it ([`log_start_group`]) when that is later.
/// Blocking.
pub fn log_starts(
    brokers: &str,
    prefix: &str,
    parts: &[(String, i32)],
    timeout: Duration,
) -> Result<HashMap<(String, i32), i64>, KafkaError> {
    let consumer: BaseConsumer = client_config(brokers)
        .set("group.id", log_start_group(prefix))
        .set("enable.auto.commit", "false")
        .create()?;
    let mut tpl = TopicPartitionList::new();
    for (t, p) in parts {
        tpl.add_partition(t, *p);
    }
    let recorded = consumer.committed_offsets(tpl, timeout)?;
    let lows = log_ends(&consumer, parts, false, timeout)?;
    let mut out = HashMap::new();
    for (t, p) in parts {
        let low = lows.get(&(t.clone(), *p)).copied().unwrap_or(0);
        let start = match recorded.find_partition(t, *p).map(|e| e.offset()) {
            Some(Offset::Offset(o)) => o.max(low),
            _ => low,
        };
        out.insert((t.clone(), *p), start);
    }
    Ok(out)
}

/// Moves the beginning of the deployment's log ([`log_start_group`]) and the committed
/// offsets of `groups` to the current end of every partition of `topics`: what was
/// appended before is no longer read or replayed. Returns the partitions moved. Blocking.
pub fn start_over(
    brokers: &str,
    prefix: &str,
    topics: &[String],
    groups: &[String],
    timeout: Duration,
) -> Result<usize, KafkaError> {
    let probe: BaseConsumer = client_config(brokers).create()?;
    let parts = partitions_of(&probe, topics, timeout)?;
    let mut ends = TopicPartitionList::new();
    for ((t, p), high) in log_ends(&probe, &parts, true, timeout)? {
        ends.add_partition_offset(&t, p, Offset::Offset(high))?;
    }
    if ends.count() == 0 {
        return Ok(0);
    }
    for group in std::iter::once(log_start_group(prefix)).chain(groups.iter().cloned()) {
        let c: BaseConsumer = client_config(brokers)
            .set("group.id", &group)
            .set("enable.auto.commit", "false")
            .create()?;
        c.commit(&ends, rdkafka::consumer::CommitMode::Sync)?;
    }
    Ok(ends.count())
}

/// Why reading partitions to their ends failed.
#[derive(Debug, thiserror::Error)]
pub enum ReadError {
    /// The broker refused or failed (on the topic or partition named).
    #[error("{0}: {1}")]
    Kafka(String, #[source] KafkaError),
    /// The ends were not reached in time.
    #[error("timed out reading {0} ({1} partition(s) left)")]
    Timeout(String, usize),
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
) -> Result<(), ReadError> {
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
            .map_err(|e| ReadError::Kafka(topic.to_owned(), e))?;
        let mut tpl = TopicPartitionList::new();
        let mut open: Vec<i32> = Vec::new();
        for (t, partition, from) in starts.iter().filter(|(t, _, _)| t == topic) {
            // Fails at once for a missing topic or partition (instead of waiting for an
            // end that never comes); the values themselves are not trusted.
            consumer
                .fetch_watermarks(t, *partition, timeout)
                .map_err(|e| ReadError::Kafka(format!("{t}/{partition}"), e))?;
            tpl.add_partition_offset(t, *partition, Offset::Offset((*from).max(0)))
                .map_err(|e| ReadError::Kafka(format!("{t}/{partition}"), e))?;
            open.push(*partition);
        }
        consumer
            .assign(&tpl)
            .map_err(|e| ReadError::Kafka(topic.to_owned(), e))?;
        while !open.is_empty() {
            if Instant::now() > deadline {
                return Err(ReadError::Timeout(topic.to_owned(), open.len()));
            }
            match consumer.poll(Duration::from_millis(200)) {
                None => {}
                Some(Err(KafkaError::PartitionEOF(p))) => {
                    open.retain(|x| *x != p);
                }
                Some(Err(e)) => return Err(ReadError::Kafka(topic.to_owned(), e)),
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
