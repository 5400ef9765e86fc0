//! `FluvioSource`: records of a Fluvio topic become validated events on the connector's
//! Kafka topic.
//!
//! Each Fluvio partition is a source partition (`{"fluvio.topic", "partition"}`) whose
//! offset is the next Fluvio offset to read; the worker commits it only after the broker
//! acknowledged the records before it, and a record's id (`<partition>:<offset>`) lets a
//! restart after a crash skip what already reached the topic. When the cluster goes away
//! the task reconnects with backoff and its status says so; nothing is read twice or
//! skipped, because reading always resumes from the offsets of the records produced.
//!
//! Fluvio 0.50's consumer can skip the record cut off at the end of a fetch (a response
//! truncated at `max_bytes`; `fluvio consume` loses it too). Offsets within a Fluvio
//! partition have no holes, so a record past the next expected offset is a skip: the
//! task re-opens its streams at the expected offsets and reads the gap again. A large
//! fetch size (`fluvio.fetch.max.bytes`, 16 MiB) makes that rare.

use std::collections::{BTreeMap, VecDeque};
use std::pin::Pin;
use std::time::{Duration, Instant};

use custflow_schemas::{avro, json, Event, EventKind};
use fluvio::consumer::{ConsumerConfig, Record};
use fluvio::dataplane::record::Batch as FluvioBatch;
use fluvio::metadata::topic::TopicSpec;
use fluvio::{Fluvio, Offset};
use futures::stream::{select_all, SelectAll};
use futures::{Stream, StreamExt};
use serde_json::{json, Value};

use crate::connect::task::{SourceTask, TaskContext, TaskFuture};
use crate::connect::{partition_key, Batch, ConnectorConfig, Error, PartitionKey, Tolerance};
use crate::fluvio_sink::connect_cluster;

/// How the Fluvio records' values are written (`fluvio.value.format`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Format {
    Json,
    /// Confluent-framed Avro of the contract's records (what custflow itself produces).
    Avro,
}

#[derive(Debug, Clone)]
struct Settings {
    endpoint: String,
    topic: String,
    /// Partitions to read; `None` is all of the topic's.
    partitions: Option<Vec<u32>>,
    format: Format,
    /// The kind of every record; `None` with `event.type=tagged` (JSON records name
    /// their kind in `type`, and each kind goes to its own topic).
    kind: Option<EventKind>,
    start_at_end: bool,
    poll_interval: Duration,
    max_bytes: i32,
}

impl Settings {
    fn parse(c: &ConnectorConfig) -> Result<Self, Error> {
        let endpoint = c.required("fluvio.endpoint")?.to_owned();
        if !endpoint.contains(':') {
            return Err(Error::invalid(
                "config.fluvio.endpoint",
                "must be HOST:PORT of the Fluvio SC",
            ));
        }
        let partitions = match c.get("fluvio.partitions").unwrap_or("all") {
            "all" => None,
            list => Some(
                list.split(',')
                    .map(|p| p.trim().parse::<u32>())
                    .collect::<Result<Vec<_>, _>>()
                    .map_err(|_| {
                        Error::invalid(
                            "config.fluvio.partitions",
                            format!("{list:?} is not `all` or a comma-separated list of partition numbers"),
                        )
                    })?,
            ),
        };
        let format = match c.get("fluvio.value.format").unwrap_or("json") {
            "json" => Format::Json,
            "avro" => Format::Avro,
            other => {
                return Err(Error::invalid(
                    "config.fluvio.value.format",
                    format!("{other:?} is not json or avro"),
                ))
            }
        };
        let kind = match c.get("event.type").unwrap_or("order") {
            "tagged" => None,
            name => Some(EventKind::parse(name).ok_or_else(|| {
                Error::invalid(
                    "config.event.type",
                    format!("{name:?} is not customer, order, activity or tagged"),
                )
            })?),
        };
        if kind.is_none() && format == Format::Avro {
            return Err(Error::invalid(
                "config.event.type",
                "tagged needs fluvio.value.format=json (an Avro record does not name its kind)",
            ));
        }
        let start_at_end = match c.get("fluvio.offset.start").unwrap_or("beginning") {
            "beginning" => false,
            "end" => true,
            other => {
                return Err(Error::invalid(
                    "config.fluvio.offset.start",
                    format!("{other:?} is not beginning or end"),
                ))
            }
        };
        Ok(Self {
            endpoint,
            topic: c.required("fluvio.topic")?.to_owned(),
            partitions,
            format,
            kind,
            start_at_end,
            poll_interval: Duration::from_millis(c.number("poll.interval.ms", 100)?),
            max_bytes: c.number("fluvio.fetch.max.bytes", 16 << 20)?,
        })
    }
}

/// One partition's record batches, each with its partition number.
type Batches = Pin<
    Box<dyn Stream<Item = (u32, Result<FluvioBatch, fluvio::dataplane::link::ErrorCode>)> + Send>,
>;

/// A connection and the merged streams of this task's partitions.
struct Open {
    /// Kept so the streams' connection lives as long as they do.
    _fluvio: Fluvio,
    streams: SelectAll<Batches>,
    /// Records of the last batch received that did not fit in the last poll.
    pending: VecDeque<Record>,
}

/// A Fluvio source task: the partitions `p` with `p mod tasks.max == task`.
pub struct FluvioTask {
    ctx: TaskContext,
    s: Settings,
    /// Per partition: its key and the next offset to read (`None`: not read yet).
    parts: BTreeMap<u32, (PartitionKey, Option<i64>)>,
    open: Option<Open>,
    /// While disconnected: why, how many attempts so far, and when to try again.
    down: Option<(String, u32, Instant)>,
    records: u64,
    /// Skips by the Fluvio consumer read again (see the module doc).
    gaps: u64,
}

/// What became of one Fluvio record.
enum Taken {
    /// Added to the batch (an event or a dead letter), or already taken before.
    Done,
    /// Past the next expected offset of its partition: the consumer skipped records.
    Gap {
        partition: u32,
        expected: i64,
        got: i64,
    },
}

impl FluvioTask {
    pub fn validate(c: &ConnectorConfig) -> Result<(), Error> {
        Settings::parse(c).map(|_| ())
    }

    pub async fn start(c: &ConnectorConfig, ctx: TaskContext) -> Result<Self, Error> {
        let s = Settings::parse(c)?;
        let mut task = Self {
            ctx,
            s,
            parts: BTreeMap::new(),
            open: None,
            down: None,
            records: 0,
            gaps: 0,
        };
        // A wrong endpoint or topic fails the start with the reason; later outages retry.
        task.connect().await?;
        Ok(task)
    }

    fn fluvio_error(what: &str, e: impl std::fmt::Display) -> Error {
        Error::Source(format!("fluvio: {what}: {e}"))
    }

    /// Connects, learns the topic's partitions (first time) and opens one stream per
    /// partition at its next offset.
    async fn connect(&mut self) -> Result<(), Error> {
        let fluvio = connect_cluster(&self.s.endpoint)
            .await
            .map_err(|e| Error::Source(format!("fluvio: {e}")))?;
        if self.parts.is_empty() {
            let topics = fluvio
                .admin()
                .await
                .list::<TopicSpec, _>(vec![self.s.topic.clone()])
                .await
                .map_err(|e| Self::fluvio_error("listing topics", e))?;
            let count = topics
                .iter()
                .find(|t| t.name == self.s.topic)
                .map(|t| t.spec.partitions())
                .ok_or_else(|| {
                    Error::invalid(
                        "config.fluvio.topic",
                        format!("the Fluvio cluster has no topic {:?}", self.s.topic),
                    )
                })?;
            let wanted: Vec<u32> = match &self.s.partitions {
                None => (0..count).collect(),
                Some(list) => {
                    if let Some(p) = list.iter().find(|p| **p >= count) {
                        return Err(Error::invalid(
                            "config.fluvio.partitions",
                            format!("topic {:?} has {count} partitions, not {p}", self.s.topic),
                        ));
                    }
                    list.clone()
                }
            };
            let tasks = self.ctx.common.tasks_max.max(1);
            for p in wanted
                .into_iter()
                .filter(|p| *p as usize % tasks == self.ctx.task)
            {
                let key = partition_key(
                    &self.ctx.common.name,
                    &json!({"fluvio.topic": self.s.topic, "partition": p}),
                );
                let next = self
                    .ctx
                    .offsets
                    .get(&*key)
                    .and_then(|o| o.get("offset")?.as_i64());
                self.parts.insert(p, (key, next));
            }
        }
        let mut streams = Vec::with_capacity(self.parts.len());
        for (p, (_, next)) in &self.parts {
            let start = match next {
                Some(n) => Offset::absolute(*n).map_err(|e| Self::fluvio_error("offset", e))?,
                None if self.s.start_at_end => Offset::end(),
                None => Offset::beginning(),
            };
            let config = ConsumerConfig::builder()
                .max_bytes(self.s.max_bytes)
                .build()
                .map_err(|e| Self::fluvio_error("consumer config", e))?;
            // Batches of one partition, not `consumer_with_config`'s records: that stream
            // wraps every record in a retry future with a 100 ms timer of its own (the
            // source read 13% faster without it, BENCHMARKS.md), and this task does its
            // own reconnecting from the offsets of the records it produced anyway.
            #[allow(deprecated)]
            let consumer = fluvio
                .partition_consumer(self.s.topic.clone(), *p)
                .await
                .map_err(|e| Self::fluvio_error(&format!("consuming partition {p}"), e))?;
            let stream = consumer
                .stream_batches_with_config(start, config)
                .await
                .map_err(|e| Self::fluvio_error(&format!("consuming partition {p}"), e))?;
            let p = *p;
            streams.push(Box::pin(stream.map(move |b| (p, b))) as Batches);
        }
        self.open = Some(Open {
            _fluvio: fluvio,
            streams: select_all(streams),
            pending: VecDeque::new(),
        });
        self.down = None;
        Ok(())
    }

    /// Drops the connection; the next poll reconnects after a backoff (1 s doubling to 30 s).
    fn lost(&mut self, why: String) {
        let attempts = self.down.as_ref().map_or(0, |(_, a, _)| *a) + 1;
        let wait = Duration::from_secs(1 << (attempts - 1).min(5)).min(Duration::from_secs(30));
        if attempts == 1 {
            tracing::warn!(connector = %self.ctx.common.name, reason = %why, "Fluvio connection lost; reconnecting");
        }
        self.open = None;
        self.down = Some((why, attempts, Instant::now() + wait));
    }

    fn convert(&self, value: &[u8]) -> custflow_schemas::Result<Event> {
        Ok(match self.s.format {
            Format::Json => json::read_slice(self.s.kind, value)?,
            Format::Avro => {
                let (_, datum) = avro::unframe(value)?;
                avro::decode_datum(self.s.kind.unwrap_or(EventKind::Order), datum)?
            }
        })
    }

    /// Adds one Fluvio record to the batch: an event record, or a dead letter / the end
    /// of the task (`errors.tolerance`).
    fn push(&mut self, batch: &mut Batch, r: &Record) -> Taken {
        let p = r.partition();
        let Some((key, next)) = self.parts.get(&p).map(|(k, n)| (k.clone(), *n)) else {
            return Taken::Done;
        };
        match next {
            // A stream re-opened at an offset may repeat what was already taken.
            Some(n) if r.offset() < n => return Taken::Done,
            Some(n) if r.offset() > n => {
                return Taken::Gap {
                    partition: p,
                    expected: n,
                    got: r.offset(),
                }
            }
            _ => {}
        }
        let id = || format!("{p}:{}", r.offset());
        let record = self
            .convert(r.value())
            .map_err(|e| e.to_string())
            .and_then(|event| self.ctx.event_record(&event, &key, id()));
        match record {
            Ok(rec) => batch.records.push(rec),
            Err(reason) => {
                let location = format!("{}/{p}@{}", self.s.topic, r.offset());
                match self.ctx.common.tolerance {
                    Tolerance::None => {
                        batch.fatal = Some(format!("{location}: {reason}"));
                        return Taken::Done;
                    }
                    Tolerance::All => batch.records.push(self.ctx.policy.dead_letter(
                        r.value(),
                        r.key().and_then(|k| std::str::from_utf8(k).ok()),
                        &reason,
                        &location,
                        (key.clone(), id()),
                    )),
                }
            }
        }
        batch.bytes += r.value().len() as u64;
        self.records += 1;
        let after = r.offset() + 1;
        if let Some(entry) = self.parts.get_mut(&p) {
            entry.1 = Some(after);
        }
        Taken::Done
    }

    pub async fn poll(&mut self, max: usize) -> Result<Batch, Error> {
        let mut batch = Batch::default();
        if self.open.is_none() {
            if let Some((_, _, at)) = &self.down {
                if Instant::now() < *at {
                    return Ok(batch);
                }
            }
            if let Err(e) = self.connect().await {
                self.lost(e.to_string());
                return Ok(batch);
            }
        }
        let mut failure = None;
        let before: Vec<Option<i64>> = self.parts.values().map(|(_, n)| *n).collect();
        let mut waited = false;
        while let Some(open) = self.open.as_mut() {
            let Some(r) = open.pending.pop_front() else {
                // Wait briefly for the first batch, then take what is already there.
                let next = if waited || !batch.records.is_empty() {
                    match futures::FutureExt::now_or_never(open.streams.next()) {
                        Some(item) => item,
                        None => break,
                    }
                } else {
                    waited = true;
                    match tokio::time::timeout(self.s.poll_interval, open.streams.next()).await {
                        Err(_) => break,
                        Ok(item) => item,
                    }
                };
                match next {
                    Some((p, Ok(b))) => open.pending.extend(b.into_consumer_records_iter(p)),
                    Some((p, Err(code))) => {
                        failure = Some(format!("reading partition {p}: {code}"));
                        break;
                    }
                    None => {
                        failure = Some("the cluster closed the stream".to_owned());
                        break;
                    }
                }
                continue;
            };
            if let Taken::Gap {
                partition,
                expected,
                got,
            } = self.push(&mut batch, &r)
            {
                tracing::debug!(
                    partition,
                    expected,
                    got,
                    "Fluvio skipped records; reading them again"
                );
                self.gaps += 1;
                // Re-open at once (no backoff) at the expected offsets.
                self.open = None;
                break;
            }
            if batch.fatal.is_some() || batch.records.len() >= max {
                break;
            }
        }
        // The next offset of each partition read from, once per batch.
        for ((key, next), was) in self.parts.values().zip(before) {
            if let Some(n) = next.filter(|n| Some(*n) != was) {
                batch.offsets.push((key.clone(), json!({ "offset": n })));
            }
        }
        if let Some(why) = failure {
            self.lost(why);
        }
        Ok(batch)
    }

    pub fn progress(&self) -> Value {
        json!({
            "fluvio.topic": self.s.topic,
            "records": self.records,
            "partitions": self.parts.iter().map(|(p, (_, n))| json!({"partition": p, "next_offset": n})).collect::<Vec<_>>(),
            "connected": self.down.is_none(),
            "gaps_reread": self.gaps,
            "reconnecting": self.down.as_ref().map(|(why, attempts, _)| json!({"reason": why, "attempts": attempts})),
        })
    }
}

impl SourceTask for FluvioTask {
    fn poll(&mut self, max: usize) -> TaskFuture<'_, Batch> {
        Box::pin(FluvioTask::poll(self, max))
    }

    fn progress(&self) -> Value {
        FluvioTask::progress(self)
    }

    fn poll_interval(&self) -> Duration {
        // poll waits for records itself; after a disconnect, the backoff is in poll.
        Duration::from_millis(if self.down.is_some() { 200 } else { 0 })
    }
}
