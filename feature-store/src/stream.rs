//! Topic subscriptions over server-sent events: `GET /v1/stream/{topic}` bridges
//! `customer-scores` or `segment-changes` to browsers and services, with filters
//! (`customer_id`, `segment`). One consumer per topic feeds a bounded broadcast; a slow
//! subscriber gets a `lagged` event with the number of updates it missed instead of
//! slowing the others.

use std::collections::HashMap;
use std::convert::Infallible;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::extract::{Path, Query, State};
use axum::response::sse::{Event, KeepAlive, Sse};
use axum::routing::get;
use axum::Router;
use custflow_schemas::api::ApiError;
use custflow_schemas::kafka::client_config;
use custflow_schemas::topics::{self, Topics};
use custflow_schemas::{avro, CustomerScore, SegmentChange};
use futures::{Stream, StreamExt};
use rdkafka::consumer::{Consumer, StreamConsumer};
use rdkafka::Message;
use serde::Deserialize;
use tokio::sync::broadcast;
use tokio_stream::wrappers::errors::BroadcastStreamRecvError;
use tokio_stream::wrappers::BroadcastStream;

/// Updates buffered per subscriber before it is told it lagged.
pub const BUFFER: usize = 4096;

/// One update on a stream.
#[derive(Debug, Clone)]
pub struct Update {
    /// `<partition>-<offset>` on the topic.
    pub id: String,
    pub customer_id: String,
    /// Segment values the `segment` filter matches (tier, RFM segment, cluster, or the new
    /// value of a change).
    pub segments: Vec<String>,
    pub json: String,
}

/// Bridges output topics to subscribers.
pub struct StreamHub {
    brokers: String,
    topics: Topics,
    channels: Mutex<HashMap<&'static str, broadcast::Sender<Arc<Update>>>>,
}

impl StreamHub {
    pub fn new(brokers: &str, topics: Topics) -> Arc<Self> {
        Arc::new(Self {
            brokers: brokers.to_owned(),
            topics,
            channels: Mutex::new(HashMap::new()),
        })
    }

    /// A receiver of `base`'s updates, starting its consumer on first use.
    pub fn subscribe(self: &Arc<Self>, base: &str) -> Option<broadcast::Receiver<Arc<Update>>> {
        let base: &'static str = [topics::CUSTOMER_SCORES, topics::SEGMENT_CHANGES]
            .into_iter()
            .find(|t| *t == base)?;
        let mut channels = self.channels.lock().ok()?;
        if let Some(tx) = channels.get(base) {
            return Some(tx.subscribe());
        }
        let (tx, rx) = broadcast::channel(BUFFER);
        channels.insert(base, tx.clone());
        let hub = self.clone();
        tokio::spawn(async move {
            loop {
                if let Err(e) = hub.pump(base, &tx).await {
                    tracing::warn!(topic = base, error = %e, "stream consumer failed; restarting in 1 s");
                }
                tokio::time::sleep(Duration::from_secs(1)).await;
            }
        });
        Some(rx)
    }

    async fn pump(
        &self,
        base: &'static str,
        tx: &broadcast::Sender<Arc<Update>>,
    ) -> Result<(), rdkafka::error::KafkaError> {
        let topic = self.topics.name(base);
        let consumer: StreamConsumer = client_config(&self.brokers)
            .set("group.id", format!("custflow-sse-{}", ulid::Ulid::new()))
            .set("enable.auto.commit", "false")
            .set("auto.offset.reset", "latest")
            .set("fetch.wait.max.ms", "20")
            .create()?;
        consumer.subscribe(&[&topic])?;
        loop {
            let msg = consumer.recv().await?;
            let Some(payload) = msg.payload() else {
                continue;
            };
            let Ok((_, datum)) = avro::unframe(payload) else {
                continue;
            };
            let update = if base == topics::CUSTOMER_SCORES {
                avro::decode_record::<CustomerScore>("CustomerScore", datum)
                    .ok()
                    .map(|s| {
                        let mut segments = vec![s.value_tier.clone(), s.rfm_segment.clone()];
                        segments.extend(s.cluster.clone());
                        (
                            s.customer_id.clone(),
                            segments,
                            serde_json::to_string(&s).unwrap_or_default(),
                        )
                    })
            } else {
                avro::decode_record::<SegmentChange>("SegmentChange", datum)
                    .ok()
                    .map(|c| {
                        (
                            c.customer_id.clone(),
                            vec![c.current.clone()],
                            serde_json::to_string(&c).unwrap_or_default(),
                        )
                    })
            };
            if let Some((customer_id, segments, json)) = update {
                let id = format!("{}-{}", msg.partition(), msg.offset());
                let _ = tx.send(Arc::new(Update {
                    id,
                    customer_id,
                    segments,
                    json,
                }));
            }
        }
    }
}

#[derive(Debug, Deserialize)]
struct Filter {
    customer_id: Option<String>,
    segment: Option<String>,
}

/// The stream route.
pub fn routes(hub: Arc<StreamHub>) -> Router {
    Router::new()
        .route("/v1/stream/{topic}", get(stream))
        .with_state(hub)
}

async fn stream(
    State(hub): State<Arc<StreamHub>>,
    Path(topic): Path<String>,
    q: Result<Query<Filter>, axum::extract::rejection::QueryRejection>,
) -> Result<Sse<impl Stream<Item = Result<Event, Infallible>>>, ApiError> {
    let Query(filter) = q?;
    let rx = hub.subscribe(&topic).ok_or_else(|| {
        ApiError::not_found(format!(
            "no stream {topic:?}; subscribe to customer-scores or segment-changes"
        ))
    })?;
    let events = BroadcastStream::new(rx).filter_map(move |item| {
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
                        .event(topic.clone())
                        .data(u.json.clone())
                })
            }
            Err(BroadcastStreamRecvError::Lagged(n)) => Some(
                Event::default()
                    .event("lagged")
                    .data(format!("{{\"missed\":{n}}}")),
            ),
        };
        futures::future::ready(out.map(Ok))
    });
    Ok(Sse::new(events).keep_alive(KeepAlive::new().interval(Duration::from_secs(10))))
}
