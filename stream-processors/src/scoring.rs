//! Scoring changed customers with the current model artefact: `CustomerScore` to
//! `customer-scores` for every change, `SegmentChange` to `segment-changes` when the
//! tier, RFM segment, cluster or at-risk flag changes.
//!
//! Records are produced (and acknowledged) before the states are saved, so a failure
//! anywhere retries the batch; a retried batch re-emits the same versions, which
//! consumers drop (versions only grow per customer).

use std::sync::Arc;
use std::time::Duration;

use custflow_feature_store::features::{compute, Features};
use custflow_feature_store::state::{CustomerState, SegmentMemo};
use custflow_kafka::{client as kafka, trace};
use custflow_models::artefact::ModelArtefact;
use custflow_schemas::avro;
use custflow_schemas::topics::{self, Topics};
use custflow_schemas::{CustomerScore, SegmentChange, SegmentDimension};
use rdkafka::message::OwnedHeaders;
use rdkafka::producer::{FutureProducer, FutureRecord};

use crate::error::{Error, Result};
use crate::metrics::Metrics;
use crate::runtime::{BatchHook, BoxFuture, Changed, CounterDeltas, Rescore, Scored};

pub use custflow_feature_store::model::ModelHandle;

/// Builds the score record of one customer.
pub fn score_record(
    customer: &str,
    f: &Features,
    m: &ModelArtefact,
    version: i64,
) -> CustomerScore {
    let s = m.score(&f.churn_input());
    CustomerScore {
        customer_id: customer.to_owned(),
        version,
        as_of: f.as_of_ms,
        model_version: m.version.clone(),
        frequency: f64::from(f.frequency),
        recency: f.recency,
        age: f.age,
        monetary_value: f.monetary_value,
        p_alive: s.p_alive,
        churn_probability: s.churn_probability,
        expected_orders_90d: s.expected_orders_90d,
        expected_aov: s.expected_aov,
        clv_12m: s.clv_12m,
        value_tier: s.value_tier.to_owned(),
        r_score: i32::from(s.r_score),
        f_score: i32::from(s.f_score),
        m_score: i32::from(s.m_score),
        rfm_segment: s.rfm_segment.to_owned(),
        cluster: s.cluster,
        at_risk: f.at_risk,
        retention_target: s.retention_target,
        expected_retention_profit: s.expected_retention_profit,
    }
}

/// The changes between two segment memos.
pub fn segment_changes(
    prev: Option<&SegmentMemo>,
    next: &SegmentMemo,
) -> Vec<(SegmentDimension, Option<String>, String)> {
    let mut out = Vec::new();
    let p = prev.cloned().unwrap_or_default();
    let first = prev.is_none();
    if first || p.value_tier != next.value_tier {
        out.push((
            SegmentDimension::ValueTier,
            (!first).then(|| p.value_tier.clone()),
            next.value_tier.clone(),
        ));
    }
    if first || p.rfm_segment != next.rfm_segment {
        out.push((
            SegmentDimension::RfmSegment,
            (!first).then(|| p.rfm_segment.clone()),
            next.rfm_segment.clone(),
        ));
    }
    if p.cluster != next.cluster {
        if let Some(c) = &next.cluster {
            out.push((SegmentDimension::Cluster, p.cluster.clone(), c.clone()));
        }
    }
    if (first && next.at_risk) || (!first && p.at_risk != next.at_risk) {
        out.push((
            SegmentDimension::AtRisk,
            (!first).then(|| p.at_risk.to_string()),
            next.at_risk.to_string(),
        ));
    }
    out
}

/// Whether a rescore moved enough to be emitted: any segment dimension changed, P(alive)
/// moved by more than 0.02, or CLV by more than 2%.
pub fn moved(prev: Option<&SegmentMemo>, next: &SegmentMemo) -> bool {
    let Some(p) = prev else { return true };
    p.value_tier != next.value_tier
        || p.rfm_segment != next.rfm_segment
        || p.cluster != next.cluster
        || p.at_risk != next.at_risk
        || (p.p_alive - next.p_alive).abs() > 0.02
        || (p.clv_12m - next.clv_12m).abs() > 0.02 * p.clv_12m.abs().max(1.0)
}

/// Counter changes (`tier:…`, `segment:…`, `cluster:…`, `at_risk:…`) from one memo to
/// the next (`None` for a customer not counted: not scored yet, or erased).
pub fn count_deltas(prev: Option<&SegmentMemo>, next: Option<&SegmentMemo>) -> Vec<(String, i64)> {
    let fields = |m: &SegmentMemo| {
        let mut v = vec![
            format!("tier:{}", m.value_tier),
            format!("segment:{}", m.rfm_segment),
            format!("at_risk:{}", m.at_risk),
        ];
        if let Some(c) = &m.cluster {
            v.push(format!("cluster:{c}"));
        }
        v
    };
    let new = next.map(fields).unwrap_or_default();
    let old = prev.map(fields).unwrap_or_default();
    let mut out: Vec<(String, i64)> = old
        .iter()
        .filter(|f| !new.contains(f))
        .map(|f| (f.clone(), -1))
        .collect();
    out.extend(
        new.iter()
            .filter(|f| !old.contains(f))
            .map(|f| (f.clone(), 1)),
    );
    out
}

/// Scores each batch's changed customers and produces the records.
pub struct Scorer {
    producer: FutureProducer,
    topics: Topics,
    model: ModelHandle,
    metrics: Arc<Metrics>,
    at_risk_days: f64,
    score_id: u32,
    change_id: u32,
}

impl Scorer {
    pub fn new(
        producer: FutureProducer,
        topics: Topics,
        model: ModelHandle,
        metrics: Arc<Metrics>,
        at_risk_days: f64,
        (score_id, change_id): (u32, u32),
    ) -> Self {
        Self {
            producer,
            topics,
            model,
            metrics,
            at_risk_days,
            score_id,
            change_id,
        }
    }

    pub fn model(&self) -> &ModelHandle {
        &self.model
    }

    async fn score(&self, changed: &mut [Changed<'_>], as_of: i64) -> Result<Scored> {
        let Some(model) = self.model.current() else {
            return Ok(Scored::counts(Vec::new()));
        };
        let mut counts: CounterDeltas = Vec::new();
        // (customer, record, trace headers of the event that caused it)
        let mut scores: Vec<(String, Vec<u8>, Option<OwnedHeaders>)> = Vec::new();
        let mut changes: Vec<(String, Vec<u8>, Option<OwnedHeaders>)> = Vec::new();
        let mut tombstones: Vec<String> = Vec::new();
        for c in changed.iter_mut() {
            let state: &mut CustomerState = c.state;
            let f = compute(state, as_of, self.at_risk_days);
            if f.orders_total == 0 && f.frequency == 0 && f.last_order_at.is_none() {
                // No purchase yet: nothing to score. An erased customer that was scored
                // leaves the counts, and the score topic gets its tombstone.
                if state.is_blank() {
                    if let Some(memo) = state.segments.take() {
                        let deltas = count_deltas(Some(&memo), None);
                        counts.extend(deltas.into_iter().map(|(k, d)| (c.partition, k, d)));
                        tombstones.push(c.customer.to_owned());
                    }
                }
                continue;
            }
            let rec = score_record(c.customer, &f, &model, state.score_version + 1);
            let memo = SegmentMemo {
                value_tier: rec.value_tier.clone(),
                rfm_segment: rec.rfm_segment.clone(),
                cluster: rec.cluster.clone(),
                at_risk: rec.at_risk,
                p_alive: rec.p_alive,
                clv_12m: rec.clv_12m,
            };
            // The clock sweep re-emits only real moves: a segment change, or P(alive) or
            // CLV drifting noticeably since the last score.
            if c.cause == Rescore::Clock && !moved(state.segments.as_ref(), &memo) {
                continue;
            }
            state.score_version += 1;
            let mut headers = c
                .trace
                .as_ref()
                .map(|cx| trace::add_header(OwnedHeaders::new(), cx));
            if let Some(at) = c.event_ms {
                headers = Some(kafka::add_event_time(headers, at));
            }
            for (dimension, previous, current) in segment_changes(state.segments.as_ref(), &memo) {
                let ch = SegmentChange {
                    customer_id: c.customer.to_owned(),
                    version: rec.version,
                    as_of,
                    model_version: model.version.clone(),
                    dimension,
                    previous,
                    current,
                    value_tier: Some(memo.value_tier.clone()),
                };
                let bytes = avro::encode_change(&ch);
                changes.push((
                    c.customer.to_owned(),
                    avro::frame(self.change_id, &bytes),
                    headers.clone(),
                ));
            }
            let deltas = count_deltas(state.segments.as_ref(), Some(&memo));
            counts.extend(deltas.into_iter().map(|(k, d)| (c.partition, k, d)));
            state.segments = Some(memo);
            let bytes = avro::encode_score(&rec);
            scores.push((
                c.customer.to_owned(),
                avro::frame(self.score_id, &bytes),
                headers,
            ));
        }
        let score_topic = self.topics.name(topics::CUSTOMER_SCORES);
        let change_topic = self.topics.name(topics::SEGMENT_CHANGES);
        let record = |topic, k, v, h: &Option<OwnedHeaders>| {
            let r = FutureRecord::to(topic).key(k).payload(v);
            match h {
                Some(h) => r.headers(h.clone()),
                None => r,
            }
        };
        let records: Vec<FutureRecord<'_, String, Vec<u8>>> = scores
            .iter()
            .map(|(k, v, h)| record(&score_topic, k, v, h))
            .chain(
                changes
                    .iter()
                    .map(|(k, v, h)| record(&change_topic, k, v, h)),
            )
            .chain(
                tombstones
                    .iter()
                    .map(|k| FutureRecord::<String, Vec<u8>>::to(&score_topic).key(k)),
            )
            .collect();
        let acks = kafka::send_all(&self.producer, records, Duration::from_secs(30))
            .await
            .map_err(Error::Kafka)?;
        let metrics = self.metrics.clone();
        let sent = [scores.len(), changes.len(), tombstones.len()].map(|n| n as u64);
        Ok(Scored {
            counts,
            delivered: Box::pin(async move {
                kafka::delivered(acks).await.map_err(Error::Kafka)?;
                Metrics::add(&metrics.scores_emitted, sent[0]);
                Metrics::add(&metrics.segment_changes, sent[1]);
                Metrics::add(&metrics.tombstones, sent[2]);
                Ok(())
            }),
        })
    }
}

impl BatchHook for Scorer {
    fn on_batch<'a>(
        &'a self,
        changed: &'a mut [Changed<'a>],
        as_of: i64,
    ) -> BoxFuture<'a, Result<Scored>> {
        Box::pin(self.score(changed, as_of))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn memo(tier: &str, seg: &str, at_risk: bool) -> SegmentMemo {
        SegmentMemo {
            value_tier: tier.into(),
            rfm_segment: seg.into(),
            cluster: None,
            at_risk,
            p_alive: 0.8,
            clv_12m: 100.0,
        }
    }

    #[test]
    fn sweeps_emit_only_real_moves() {
        let a = memo("top20", "champions", false);
        assert!(moved(None, &a));
        assert!(!moved(
            Some(&a),
            &SegmentMemo {
                p_alive: 0.79,
                clv_12m: 101.0,
                ..a.clone()
            }
        ));
        assert!(moved(
            Some(&a),
            &SegmentMemo {
                p_alive: 0.75,
                ..a.clone()
            }
        ));
        assert!(moved(
            Some(&a),
            &SegmentMemo {
                clv_12m: 97.0,
                ..a.clone()
            }
        ));
        assert!(moved(Some(&a), &memo("mid60", "champions", false)));
    }

    #[test]
    fn counters_move_with_the_memo() {
        let a = memo("top20", "champions", false);
        let mut first = count_deltas(None, Some(&a));
        first.sort();
        assert_eq!(
            first,
            vec![
                ("at_risk:false".into(), 1),
                ("segment:champions".into(), 1),
                ("tier:top20".into(), 1)
            ]
        );
        assert!(count_deltas(Some(&a), Some(&a)).is_empty());
        let b = memo("top20", "at_risk", true);
        let mut d = count_deltas(Some(&a), Some(&b));
        d.sort();
        assert_eq!(
            d,
            vec![
                ("at_risk:false".into(), -1),
                ("at_risk:true".into(), 1),
                ("segment:at_risk".into(), 1),
                ("segment:champions".into(), -1),
            ]
        );
        // An erased customer leaves every count it was in.
        let mut gone = count_deltas(Some(&b), None);
        gone.sort();
        assert_eq!(
            gone,
            vec![
                ("at_risk:true".into(), -1),
                ("segment:at_risk".into(), -1),
                ("tier:top20".into(), -1),
            ]
        );
    }

    #[test]
    fn only_changed_dimensions_are_reported() {
        let a = memo("top20", "champions", false);
        let first = segment_changes(None, &a);
        assert_eq!(first.len(), 2, "first score: tier and segment become known");
        assert!(segment_changes(Some(&a), &a).is_empty());
        let b = memo("top20", "at_risk", true);
        let ch = segment_changes(Some(&a), &b);
        assert_eq!(
            ch,
            vec![
                (
                    SegmentDimension::RfmSegment,
                    Some("champions".into()),
                    "at_risk".into()
                ),
                (
                    SegmentDimension::AtRisk,
                    Some("false".into()),
                    "true".into()
                ),
            ]
        );
    }
}
