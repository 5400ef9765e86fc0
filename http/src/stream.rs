//! Topic subscriptions over server-sent events: `GET /v1/stream/{topic}` bridges
//! `customer-scores` or `segment-changes` to browsers and services, with filters
//! (`customer_id`, `segment`). One consumer per topic feeds a bounded broadcast; a slow
//! subscriber gets a `lagged` event with the number of updates it missed instead of
//! slowing the others. Every event's id is a broker position (the next offset of every
//! partition), so a client that reconnects with `Last-Event-ID` resumes exactly after
//! the last event it saw, from a consumer of its own.

use std::collections::HashMap;
use std::convert::Infallible;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use crate::error::ApiError;
use axum::extract::{Path, Query, State};
use axum::http::HeaderMap;
use axum::response::sse::{Event, KeepAlive, Sse};
use custflow_kafka::client::{client_config, Tune};
use custflow_schemas::topics::{self, Topics};
use custflow_schemas::{avro, FieldError};
use futures::{Stream, StreamExt};
use rdkafka::consumer::{Consumer, StreamConsumer};
use rdkafka::{Message, Offset, TopicPartitionList};
use serde::Deserialize;
use tokio::sync::{broadcast, mpsc, watch};
use tokio_stream::wrappers::errors::BroadcastStreamRecvError;
use tokio_stream::wrappers::{BroadcastStream, ReceiverStream};

use crate::auth::Scope;
use crate::routes::Routes;

/// Updates buffered per subscriber before it is told it lagged.
pub const BUFFER: usize = 4096;
/// How long a new subscriber waits for the topic's consumer to find its position.
const READY_TIMEOUT: Duration = Duration::from_secs(10);
/// Broker metadata and watermark requests.
const METADATA_TIMEOUT: Duration = Duration::from_secs(5);
/// Most partitions a cursor names.
const MAX_PARTITIONS: usize = 1024;
/// How far back a resumed stream starts reading: more than one producer batch holds
/// (librdkafka's `batch.num.messages` is at most 10,000 by default).
const RESUME_REWIND: i64 = 10_000;

/// A position on a topic: the next offset to read on every partition. It is the id of
/// every event, written as the offsets joined by dots (`12.0.7`: partition 0 at 12,
/// partition 1 at 0, partition 2 at 7).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Cursor(Vec<i64>);

impl Cursor {
    /// Parses an event id; `None` for anything this server did not send.
    pub fn parse(s: &str) -> Option<Self> {
        let offsets = s
            .split('.')
            .map(|p| p.parse::<i64>().ok().filter(|o| *o >= 0))
            .collect::<Option<Vec<_>>>()?;
        (offsets.len() <= MAX_PARTITIONS).then_some(Self(offsets))
    }

    /// Moves past the record at `offset` of `partition`.
    fn advance(&mut self, partition: i32, offset: i64) {
        let Some(p) = usize::try_from(partition)
            .ok()
            .filter(|p| *p < MAX_PARTITIONS)
        else {
            return;
        };
        if self.0.len() <= p {
            self.0.resize(p + 1, 0);
        }
        self.0[p] = offset + 1;
    }

    /// The next offset of `partition` (0 where the cursor does not name it).
    fn next_of(&self, partition: i32) -> i64 {
        usize::try_from(partition)
            .ok()
            .and_then(|p| self.0.get(p))
            .copied()
            .unwrap_or(0)
    }

    /// This position moved back by `records` on every partition (not below 0).
    fn rewound(&self, records: i64) -> Self {
        Self(self.0.iter().map(|o| (o - records).max(0)).collect())
    }

    /// An assignment of the topic's `partitions` at this position; partitions the cursor
    /// does not name (added since) are read from their beginning.
    fn assignment(
        &self,
        topic: &str,
        partitions: usize,
    ) -> Result<TopicPartitionList, rdkafka::error::KafkaError> {
        let mut tpl = TopicPartitionList::new();
        for p in 0..partitions.min(MAX_PARTITIONS) {
            let offset = self
                .0
                .get(p)
                .map_or(Offset::Beginning, |o| Offset::Offset(*o));
            tpl.add_partition_offset(topic, p as i32, offset)?;
        }
        Ok(tpl)
    }
}

impl std::fmt::Display for Cursor {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        for (i, o) in self.0.iter().enumerate() {
            if i > 0 {
                f.write_str(".")?;
            }
            write!(f, "{o}")?;
        }
        Ok(())
    }
}

/// One update on a stream.
#[derive(Debug, Clone)]
pub struct Update {
    /// The position after this update (see [`Cursor`]).
    pub id: String,
    pub customer_id: String,
    /// Segment values the `segment` filter matches (tier, RFM segment, cluster, or the new
    /// value of a change).
    pub segments: Vec<String>,
    pub json: String,
}

/// The shared consumer of one topic and what its subscribers need.
struct Feed {
    tx: broadcast::Sender<Arc<Update>>,
    /// The position after the last update broadcast; `None` until the consumer is
    /// assigned. Updated under the lock together with the broadcast, so a new subscriber
    /// gets a position and exactly the updates after it.
    cursor: Mutex<Option<Cursor>>,
    ready: watch::Sender<bool>,
}

/// Bridges output topics to subscribers.
pub struct StreamHub {
    brokers: String,
    topics: Topics,
    feeds: Mutex<HashMap<&'static str, Arc<Feed>>>,
}

/// Why a feed's consumer could not open or stopped.
#[derive(Debug, thiserror::Error)]
enum FeedError {
    #[error(transparent)]
    Kafka(#[from] rdkafka::error::KafkaError),
    #[error("topic {0} has no partitions")]
    NoPartitions(String),
    #[error("the feed's position lock is poisoned")]
    Poisoned,
    #[error("the consumer's set-up task ended: {0}")]
    Join(#[from] tokio::task::JoinError),
}

impl<T> From<std::sync::PoisonError<T>> for FeedError {
    fn from(_: std::sync::PoisonError<T>) -> Self {
        Self::Poisoned
    }
}

fn unavailable(e: impl std::fmt::Display) -> ApiError {
    tracing::warn!(error = %e, "stream consumer unavailable");
    ApiError::unavailable("the broker does not answer; retry shortly", 2)
}

impl StreamHub {
    pub fn new(brokers: &str, topics: Topics) -> Arc<Self> {
        Arc::new(Self {
            brokers: brokers.to_owned(),
            topics,
            feeds: Mutex::new(HashMap::new()),
        })
    }

    /// The stream named `base`, if there is one.
    fn base(topic: &str) -> Option<&'static str> {
        [topics::CUSTOMER_SCORES, topics::SEGMENT_CHANGES]
            .into_iter()
            .find(|t| *t == topic)
    }

    /// A receiver of `base`'s live updates and the position it starts after, starting
    /// the topic's consumer on first use.
    async fn subscribe(
        self: &Arc<Self>,
        base: &'static str,
    ) -> Result<(broadcast::Receiver<Arc<Update>>, Cursor), ApiError> {
        let feed = {
            let mut feeds = self.feeds.lock().map_err(unavailable)?;
            feeds
                .entry(base)
                .or_insert_with(|| {
                    let feed = Arc::new(Feed {
                        tx: broadcast::channel(BUFFER).0,
                        cursor: Mutex::new(None),
                        ready: watch::channel(false).0,
                    });
                    let (hub, f) = (self.clone(), feed.clone());
                    tokio::spawn(async move {
                        loop {
                            if let Err(e) = hub.pump(base, &f).await {
                                tracing::warn!(topic = base, error = %e, "stream consumer failed; restarting in 1 s");
                            }
                            tokio::time::sleep(Duration::from_secs(1)).await;
                        }
                    });
                    feed
                })
                .clone()
        };
        let mut ready = feed.ready.subscribe();
        tokio::time::timeout(READY_TIMEOUT, ready.wait_for(|r| *r))
            .await
            .map_err(|_| unavailable("no position within 10 s"))?
            .map_err(unavailable)?;
        let cursor = feed.cursor.lock().map_err(unavailable)?;
        let position = cursor.clone().ok_or_else(|| unavailable("no position"))?;
        Ok((feed.tx.subscribe(), position))
    }

    /// A consumer of `base` assigned at `from`, or at the topic's current end on every
    /// partition; and the position it starts at.
    async fn open(
        &self,
        base: &str,
        from: Option<Cursor>,
    ) -> Result<(StreamConsumer, Cursor), FeedError> {
        let topic = self.topics.name(base);
        let consumer: StreamConsumer = client_config(&self.brokers)
            .set("group.id", format!("custflow-sse-{}", ulid::Ulid::new()))
            .set("enable.auto.commit", "false")
            // A position the log no longer holds (past retention) resumes from the
            // oldest update kept, not from the end: nothing still kept is skipped.
            .set("auto.offset.reset", "earliest")
            .tune("fetch.wait.max.ms", custflow_kafka::client::FETCH_WAIT_MS)
            .create()?;
        tokio::task::spawn_blocking(move || {
            let md = consumer.fetch_metadata(Some(&topic), METADATA_TIMEOUT)?;
            let partitions = md
                .topics()
                .first()
                .map_or(0, |t| t.partitions().len())
                .min(MAX_PARTITIONS);
            if partitions == 0 {
                return Err(FeedError::NoPartitions(topic));
            }
            let start = match from {
                Some(c) => c,
                None => Cursor(
                    (0..partitions as i32)
                        .map(|p| {
                            consumer
                                .fetch_watermarks(&topic, p, METADATA_TIMEOUT)
                                .map(|(_, high)| high)
                        })
                        .collect::<Result<Vec<_>, _>>()?,
                ),
            };
            let assignment = start.assignment(&topic, partitions)?;
            consumer.assign(&assignment)?;
            Ok((consumer, start))
        })
        .await?
    }

    /// Reads `base` from where the feed stopped (or the topic's end) into the broadcast.
    async fn pump(&self, base: &'static str, feed: &Feed) -> Result<(), FeedError> {
        // Only this task writes the feed's position, so it cannot change meanwhile.
        let known = feed.cursor.lock()?.clone();
        let (consumer, start) = self.open(base, known).await?;
        feed.cursor.lock()?.get_or_insert(start);
        feed.ready.send_replace(true);
        loop {
            let msg = consumer.recv().await?;
            let mut cursor = feed.cursor.lock()?;
            let Some(c) = cursor.as_mut() else { continue };
            c.advance(msg.partition(), msg.offset());
            if let Some(u) = decode(base, msg.payload(), c) {
                let _ = feed.tx.send(Arc::new(u));
            }
        }
    }

    /// A subscriber's own consumer of `base` from `from`: replays what it missed, then
    /// follows the topic. A full buffer pauses this consumer only.
    async fn resume(
        &self,
        base: &'static str,
        from: Cursor,
    ) -> Result<mpsc::Receiver<Arc<Update>>, ApiError> {
        // tansu 0.6 answers a fetch from inside a record batch with the batches after
        // it, skipping the rest of that batch: read from further back and drop what
        // comes before the position.
        let (consumer, _) = self
            .open(base, Some(from.rewound(RESUME_REWIND)))
            .await
            .map_err(unavailable)?;
        let mut cursor = from.clone();
        let (tx, rx) = mpsc::channel(BUFFER);
        tokio::spawn(async move {
            loop {
                let msg = tokio::select! {
                    _ = tx.closed() => return,
                    m = consumer.recv() => m,
                };
                let msg = match msg {
                    Ok(m) => m,
                    Err(e) => {
                        tracing::warn!(topic = base, error = %e, "resumed stream failed; the client reconnects");
                        return;
                    }
                };
                if msg.offset() < from.next_of(msg.partition()) {
                    continue;
                }
                cursor.advance(msg.partition(), msg.offset());
                if let Some(u) = decode(base, msg.payload(), &cursor) {
                    if tx.send(Arc::new(u)).await.is_err() {
                        return;
                    }
                }
            }
        });
        Ok(rx)
    }
}

/// The update a record of `base` carries, with the position after it.
fn decode(base: &str, payload: Option<&[u8]>, cursor: &Cursor) -> Option<Update> {
    let (_, datum) = avro::unframe(payload?).ok()?;
    let (customer_id, segments, json) = if base == topics::CUSTOMER_SCORES {
        let s = avro::decode_score(datum).ok()?;
        let mut segments = vec![s.value_tier.clone(), s.rfm_segment.clone()];
        segments.extend(s.cluster.clone());
        let json = serde_json::to_string(&s).ok()?;
        (s.customer_id, segments, json)
    } else {
        let c = avro::decode_change(datum).ok()?;
        let json = serde_json::to_string(&c).ok()?;
        (c.customer_id, vec![c.current], json)
    };
    Some(Update {
        id: cursor.to_string(),
        customer_id,
        segments,
        json,
    })
}

#[derive(Debug, Deserialize)]
struct Filter {
    customer_id: Option<String>,
    segment: Option<String>,
}

/// The stream route.
pub fn routes() -> Routes<Arc<StreamHub>> {
    Routes::new().get("/v1/stream/{topic}", Some(Scope::FeaturesRead), stream)
}

/// A live update, or how many a slow subscriber missed.
type Item = Result<Arc<Update>, u64>;

async fn stream(
    State(hub): State<Arc<StreamHub>>,
    Path(topic): Path<String>,
    headers: HeaderMap,
    q: Result<Query<Filter>, axum::extract::rejection::QueryRejection>,
) -> Result<Sse<impl Stream<Item = Result<Event, Infallible>>>, ApiError> {
    let Query(filter) = q?;
    let base = StreamHub::base(&topic).ok_or_else(|| {
        ApiError::not_found(format!(
            "no stream {topic:?}; subscribe to customer-scores or segment-changes"
        ))
    })?;
    let last = headers
        .get("last-event-id")
        .map(|v| {
            v.to_str().ok().and_then(Cursor::parse).ok_or_else(|| {
                ApiError::bad_request(
                    "Last-Event-ID is not an id this stream sent",
                    &[FieldError::new(
                        "headers.Last-Event-ID",
                        "format",
                        "expected an event id: broker offsets joined by dots",
                    )],
                )
            })
        })
        .transpose()?;
    let (updates, start) = match last {
        None => {
            let (rx, start) = hub.subscribe(base).await?;
            let live = BroadcastStream::new(rx)
                .map(|r| r.map_err(|BroadcastStreamRecvError::Lagged(n)| n));
            (live.boxed(), start)
        }
        Some(from) => {
            let rx = hub.resume(base, from.clone()).await?;
            (ReceiverStream::new(rx).map(Ok).boxed(), from)
        }
    };
    let ready = Event::default()
        .id(start.to_string())
        .event("ready")
        .data(serde_json::json!({"topic": base}).to_string());
    let events = updates.filter_map(move |item: Item| {
        let out = match item {
            Ok(u) => {
                let keep = filter
                    .customer_id
                    .as_ref()
                    .is_none_or(|c| *c == u.customer_id)
                    && filter
                        .segment
                        .as_ref()
                        .is_none_or(|s| u.segments.contains(s));
                keep.then(|| {
                    Event::default()
                        .id(u.id.clone())
                        .event(base)
                        .data(u.json.clone())
                })
            }
            // No id: the client's Last-Event-ID stays at the last update it got, so
            // reconnecting with it replays what was missed.
            Err(n) => Some(
                Event::default()
                    .event("lagged")
                    .data(format!("{{\"missed\":{n}}}")),
            ),
        };
        futures::future::ready(out.map(Ok))
    });
    let events = futures::stream::once(futures::future::ready(Ok(ready))).chain(events);
    Ok(Sse::new(events).keep_alive(KeepAlive::new().interval(Duration::from_secs(10))))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cursors_round_trip_and_advance() {
        let mut c = Cursor::parse("12.0.7").unwrap();
        assert_eq!(c.to_string(), "12.0.7");
        c.advance(1, 41);
        c.advance(4, 3);
        assert_eq!(c.to_string(), "12.42.7.0.4");
        for bad in ["", "1..2", "-1", "a.b", "1.2 "] {
            assert_eq!(Cursor::parse(bad), None, "{bad:?}");
        }
        let too_many = vec!["0"; MAX_PARTITIONS + 1].join(".");
        assert_eq!(Cursor::parse(&too_many), None);
    }
}
