//! Alerts: a sink connector from `segment-changes` to an HTTP webhook, for the changes
//! that match a rule (by default a top20 customer turning at-risk) — the live version of
//! a churn e-mail alert.
//!
//! Delivery: each matching change is POSTed as JSON with an `Idempotency-Key` of
//! `customer:version:dimension`, retried with exponential backoff on transport errors,
//! 429 and 5xx; after the last attempt (or a 4xx refusal) it goes to `custflow-dlq` with
//! the reason. Offsets are committed only after one of the two happened, so a restart
//! resends rather than loses (receivers deduplicate by the key).

use std::fmt;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use custflow_feature_store::members::Member;
use custflow_kafka::assignment::{member_consumer, Assignment};
use custflow_kafka::client::{client_config, dead_letter_headers, Rewind};
use custflow_kafka::progress::Progress;
use custflow_metrics::{Collector, DescriptorEncoder, Families};
use custflow_schemas::{avro, SegmentChange};
use rdkafka::consumer::{CommitMode, Consumer, StreamConsumer};
use rdkafka::message::BorrowedMessage;
use rdkafka::producer::{FutureProducer, FutureRecord};
use rdkafka::Message;
use tokio::sync::watch;

/// Why alerting could not start or go on.
#[derive(Debug, thiserror::Error)]
pub enum AlertError {
    #[error("alert rule {rule:?}: {reason}")]
    Rule { rule: String, reason: String },
    #[error("Kafka: {0}")]
    Kafka(#[from] rdkafka::error::KafkaError),
    #[error("HTTP client: {0}")]
    Http(#[from] reqwest::Error),
    #[error(transparent)]
    Membership(#[from] custflow_feature_store::members::Error),
}

/// One condition set; a change matches when every condition holds.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct AlertRule {
    conditions: Vec<(Field, String)>,
    text: String,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Field {
    Dimension,
    Previous,
    Current,
    ValueTier,
}

/// The rule used when only a webhook URL is given.
pub const DEFAULT_RULE: &str = "dimension=at_risk,current=true,value_tier=top20";

impl AlertRule {
    /// Parses `field=value,field=value` with fields `dimension` (value_tier, rfm_segment,
    /// cluster, at_risk), `previous`, `current` and `value_tier`.
    pub fn parse(text: &str) -> Result<Self, AlertError> {
        let bad = |reason: String| AlertError::Rule {
            rule: text.to_owned(),
            reason,
        };
        let mut conditions = Vec::new();
        for part in text.split(',').map(str::trim).filter(|p| !p.is_empty()) {
            let (k, v) = part
                .split_once('=')
                .ok_or_else(|| bad(format!("{part:?} is not field=value")))?;
            let field = match k.trim() {
                "dimension" => Field::Dimension,
                "previous" => Field::Previous,
                "current" => Field::Current,
                "value_tier" => Field::ValueTier,
                other => {
                    return Err(bad(format!(
                        "unknown field {other:?}: use dimension, previous, current or value_tier"
                    )))
                }
            };
            let v = v.trim();
            if field == Field::Dimension
                && !["value_tier", "rfm_segment", "cluster", "at_risk"].contains(&v)
            {
                return Err(bad(format!(
                    "dimension {v:?}: use value_tier, rfm_segment, cluster or at_risk"
                )));
            }
            conditions.push((field, v.to_owned()));
        }
        if conditions.is_empty() {
            return Err(bad("no conditions".into()));
        }
        Ok(Self {
            conditions,
            text: text.to_owned(),
        })
    }

    /// Parses `rule;rule;…` (any rule matching sends the alert).
    pub fn parse_all(text: &str) -> Result<Vec<Self>, AlertError> {
        text.split(';')
            .filter(|r| !r.trim().is_empty())
            .map(Self::parse)
            .collect()
    }

    pub fn matches(&self, ch: &SegmentChange) -> bool {
        self.conditions.iter().all(|(field, want)| {
            let have = match field {
                Field::Dimension => Some(dimension_name(ch)),
                Field::Previous => ch.previous.as_deref(),
                Field::Current => Some(ch.current.as_str()),
                Field::ValueTier => ch.value_tier.as_deref(),
            };
            have == Some(want.as_str())
        })
    }

    pub fn as_str(&self) -> &str {
        &self.text
    }
}

fn dimension_name(ch: &SegmentChange) -> &'static str {
    match ch.dimension {
        custflow_schemas::SegmentDimension::ValueTier => "value_tier",
        custflow_schemas::SegmentDimension::RfmSegment => "rfm_segment",
        custflow_schemas::SegmentDimension::Cluster => "cluster",
        custflow_schemas::SegmentDimension::AtRisk => "at_risk",
    }
}

/// Where alerts come from and go.
#[derive(Debug, Clone)]
pub struct AlertConfig {
    pub brokers: String,
    /// The `segment-changes` topic (with the deployment prefix).
    pub topic: String,
    /// The dead-letter topic (with the deployment prefix).
    pub dlq_topic: String,
    pub group_id: String,
    /// This process's membership among the deployment's alerters.
    pub member: Member,
    /// The group's progress, as its watcher sees it.
    pub progress: Arc<Progress>,
    pub url: String,
    pub rules: Vec<AlertRule>,
    /// Attempts per alert before it is dead-lettered.
    pub max_attempts: u32,
    /// First retry delay; doubles per attempt, at most 30 s.
    pub backoff: Duration,
}

/// Counters of the alerter.
#[derive(Debug, Default)]
pub struct AlertMetrics {
    pub sent: AtomicU64,
    pub retries: AtomicU64,
    pub dead_lettered: AtomicU64,
    pub not_matching: AtomicU64,
}

impl Collector for AlertMetrics {
    fn encode(&self, e: DescriptorEncoder) -> fmt::Result {
        let g = |c: &AtomicU64| c.load(Ordering::Relaxed);
        let mut f = Families::from(e);
        f.counters(
            "custflow_alerts_total",
            "Segment changes the alerter read, by what became of them",
            [
                ([("result", "sent")], g(&self.sent)),
                ([("result", "dead_lettered")], g(&self.dead_lettered)),
                ([("result", "not_matching")], g(&self.not_matching)),
            ],
        )?;
        f.counter(
            "custflow_alert_retries_total",
            "Webhook deliveries retried",
            g(&self.retries),
        )
    }
}

/// Runs until `shutdown` turns true.
pub async fn run(
    cfg: AlertConfig,
    metrics: Arc<AlertMetrics>,
    mut shutdown: watch::Receiver<bool>,
) -> Result<(), AlertError> {
    let consumer: Arc<StreamConsumer<Rewind>> =
        Arc::new(member_consumer(&cfg.brokers, &cfg.group_id)?);
    let mut assignment = Assignment::start(
        cfg.member.clone(),
        &cfg.brokers,
        std::slice::from_ref(&cfg.topic),
        cfg.progress.clone(),
        shutdown.clone(),
    )
    .await?;
    let producer: FutureProducer = client_config(&cfg.brokers)
        .set("enable.idempotence", "true")
        .set("acks", "all")
        .create()?;
    let http = reqwest::Client::builder()
        .timeout(Duration::from_secs(10))
        .build()?;
    loop {
        if let Some(e) = assignment.failed().await {
            return Err(AlertError::Membership(e));
        }
        if let Err(e) = assignment.apply(&consumer).await {
            tracing::warn!(error = %e, "taking the alerter's partitions; retrying");
        }
        let msg = tokio::select! {
            m = consumer.recv() => m?,
            _ = shutdown.changed() => break,
            () = assignment.changed() => continue,
        };
        let owned = consumer.assignment()?;
        if owned.find_partition(msg.topic(), msg.partition()).is_none()
            || !consumer.context().keep(&msg)
        {
            continue;
        }
        let outcome = match decode(&msg) {
            Err(reason) => Some(("undecodable", reason.to_string())),
            Ok(ch) => match cfg.rules.iter().find(|r| r.matches(&ch)) {
                None => {
                    metrics.not_matching.fetch_add(1, Ordering::Relaxed);
                    None
                }
                Some(rule) => deliver(&http, &cfg, &metrics, &ch, rule, &mut shutdown).await,
            },
        };
        if *shutdown.borrow() {
            break; // not delivered and not dead-lettered: the next run resends it
        }
        if let Some((reason, message)) = outcome {
            let headers =
                dead_letter_headers(msg.topic(), msg.partition(), msg.offset(), reason, &message);
            let mut rec = FutureRecord::to(&cfg.dlq_topic)
                .payload(msg.payload().unwrap_or_default())
                .headers(headers);
            if let Some(k) = msg.key() {
                rec = rec.key(k);
            }
            producer
                .send(rec, Duration::from_secs(30))
                .await
                .map_err(|(e, _)| e)?;
            metrics.dead_lettered.fetch_add(1, Ordering::Relaxed);
            tracing::warn!(%message, "alert dead-lettered");
        }
        consumer.commit_message(&msg, CommitMode::Async)?;
    }
    assignment.finish().await;
    Ok(())
}

/// Why a segment-change record cannot be read: its dead-letter reason.
#[derive(Debug, thiserror::Error)]
enum DecodeError {
    #[error("empty payload")]
    Empty,
    #[error(transparent)]
    Avro(#[from] custflow_schemas::Error),
}

fn decode(msg: &BorrowedMessage<'_>) -> Result<SegmentChange, DecodeError> {
    let bytes = msg.payload().ok_or(DecodeError::Empty)?;
    let (_, datum) = avro::unframe(bytes)?;
    Ok(avro::decode_change(datum)?)
}

/// POSTs one alert with retries; `Some((reason, message))` when it must be dead-lettered.
async fn deliver(
    http: &reqwest::Client,
    cfg: &AlertConfig,
    metrics: &AlertMetrics,
    ch: &SegmentChange,
    rule: &AlertRule,
    shutdown: &mut watch::Receiver<bool>,
) -> Option<(&'static str, String)> {
    let key = format!("{}:{}:{}", ch.customer_id, ch.version, dimension_name(ch));
    let body = serde_json::json!({"alert": rule.as_str(), "change": ch});
    let mut delay = cfg.backoff;
    let mut last = String::new();
    for attempt in 1..=cfg.max_attempts.max(1) {
        if attempt > 1 {
            metrics.retries.fetch_add(1, Ordering::Relaxed);
            tokio::select! {
                () = tokio::time::sleep(delay) => {}
                _ = shutdown.changed() => return None,
            }
            delay = (delay * 2).min(Duration::from_secs(30));
        }
        let resp = http
            .post(&cfg.url)
            .header("idempotency-key", &key)
            .json(&body)
            .send()
            .await;
        match resp {
            Ok(r) if r.status().is_success() => {
                metrics.sent.fetch_add(1, Ordering::Relaxed);
                return None;
            }
            Ok(r) => {
                let status = r.status();
                last = format!("webhook answered {status} after {attempt} attempt(s)");
                // A refusal other than throttling will not change on retry.
                if status.is_client_error() && status != reqwest::StatusCode::TOO_MANY_REQUESTS {
                    return Some(("webhook_refused", last));
                }
            }
            Err(e) => last = format!("webhook unreachable after {attempt} attempt(s): {e}"),
        }
    }
    Some(("webhook_failed", last))
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;
    use custflow_schemas::SegmentDimension;

    fn change(dimension: SegmentDimension, current: &str, tier: &str) -> SegmentChange {
        SegmentChange {
            customer_id: "c1".into(),
            version: 7,
            as_of: 0,
            model_version: "m".into(),
            dimension,
            previous: None,
            current: current.into(),
            value_tier: Some(tier.into()),
        }
    }

    #[test]
    fn the_default_rule_matches_a_top20_customer_turning_at_risk_only() {
        let r = AlertRule::parse(DEFAULT_RULE).unwrap();
        assert!(r.matches(&change(SegmentDimension::AtRisk, "true", "top20")));
        assert!(!r.matches(&change(SegmentDimension::AtRisk, "true", "mid60")));
        assert!(!r.matches(&change(SegmentDimension::AtRisk, "false", "top20")));
        assert!(!r.matches(&change(SegmentDimension::ValueTier, "true", "top20")));
    }

    #[test]
    fn rules_explain_mistakes() {
        let e = AlertRule::parse("tier=top20").unwrap_err().to_string();
        assert!(e.contains("unknown field \"tier\""), "{e}");
        let e = AlertRule::parse("dimension=churn").unwrap_err().to_string();
        assert!(e.contains("dimension \"churn\""), "{e}");
        assert!(AlertRule::parse("current").is_err());
        assert_eq!(
            AlertRule::parse_all("current=at_risk;dimension=cluster")
                .unwrap()
                .len(),
            2
        );
    }
}
