//! Whether a consumer group makes progress, seen from outside its consumers: every few
//! seconds the log end of each partition of its topics and the group's committed offset
//! are read from the broker. What lies between is the input that waits (the lag every
//! status line and `/readyz` report), and a group whose input waits while none of its
//! committed offsets moved for [`STALL_AFTER`] is stalled, with the reason.
//!
//! Watching from outside is the point: a consumer that holds no partitions, or whose loop
//! is stuck, reports a lag of 0 about itself while thousands of events wait.

use std::collections::BTreeMap;
use std::fmt;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use custflow_metrics::{Collector, DescriptorEncoder, Families};
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::{Offset, TopicPartitionList};
use tokio::sync::watch;

use crate::client::client_config;

/// How long input may wait with no committed offset moving before the group is stalled.
pub const STALL_AFTER: Duration = Duration::from_secs(15);

/// How often the watcher reads the log ends and committed offsets.
pub const CHECK_EVERY: Duration = Duration::from_secs(2);

/// What the watcher last saw of one consumer group.
#[derive(Debug)]
pub struct Progress {
    /// The consumer group (and the name in metrics and messages).
    pub group: String,
    state: Mutex<State>,
    /// Times the group became stalled.
    stalls: AtomicU64,
}

#[derive(Debug)]
struct State {
    /// Per (topic, partition): events between the committed offset and the log end.
    waiting: BTreeMap<(String, i32), i64>,
    committed: BTreeMap<(String, i32), i64>,
    /// When a committed offset last moved (or nothing waited).
    moved: Instant,
    /// Why the group is stalled, while it is.
    stalled: Option<String>,
    /// Partition numbers this process owns and the live members (from its membership).
    owned: Vec<i32>,
    members: usize,
    /// Whether the broker answered the last check.
    seen: bool,
    /// When the last reading was taken.
    read_at: Option<Instant>,
}

impl Progress {
    pub fn new(group: impl Into<String>) -> Self {
        Self {
            group: group.into(),
            state: Mutex::new(State {
                waiting: BTreeMap::new(),
                committed: BTreeMap::new(),
                moved: Instant::now(),
                stalled: None,
                owned: Vec::new(),
                members: 0,
                seen: false,
                read_at: None,
            }),
            stalls: AtomicU64::new(0),
        }
    }

    fn state(&self) -> std::sync::MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Notes which partitions this process owns among how many live members (for the
    /// reason a stall gives).
    pub fn set_share(&self, owned: &[i32], members: usize) {
        let mut s = self.state();
        s.owned = owned.to_vec();
        s.members = members;
    }

    /// Events waiting per (topic, partition), as of the last check.
    pub fn lags(&self) -> BTreeMap<(String, i32), i64> {
        self.state().waiting.clone()
    }

    /// Events waiting in all partitions, as of the last check.
    pub fn waiting(&self) -> i64 {
        self.state().waiting.values().sum()
    }

    /// Whether a reading taken after `t` found nothing waiting: everything produced
    /// before `t` was consumed and committed.
    pub fn caught_up_after(&self, t: Instant) -> bool {
        let s = self.state();
        s.read_at.is_some_and(|r| r > t) && s.waiting.values().sum::<i64>() == 0
    }

    /// Why the group is stalled, while it is.
    pub fn stalled(&self) -> Option<String> {
        self.state().stalled.clone()
    }

    /// Times the group became stalled since the start.
    pub fn stalls(&self) -> u64 {
        self.stalls.load(Ordering::Relaxed)
    }

    /// Takes in one reading: `waiting` and `committed` per (topic, partition).
    pub fn observe(
        &self,
        waiting: BTreeMap<(String, i32), i64>,
        committed: BTreeMap<(String, i32), i64>,
        now: Instant,
    ) {
        let mut s = self.state();
        let total: i64 = waiting.values().sum();
        if total == 0 || committed != s.committed || !s.seen {
            s.moved = now;
        }
        s.seen = true;
        s.read_at = Some(now);
        s.committed = committed;
        s.waiting = waiting;
        let idle = now.duration_since(s.moved);
        if total > 0 && idle >= STALL_AFTER {
            let reason = stall_reason(&s, total, idle);
            if s.stalled.is_none() {
                self.stalls.fetch_add(1, Ordering::Relaxed);
                tracing::warn!(group = self.group, %reason, "consumer group stalled");
            }
            s.stalled = Some(reason);
        } else if s.stalled.take().is_some() {
            tracing::info!(group = self.group, "consumer group makes progress again");
        }
    }
}

/// The consumer groups a process runs, as one set of Prometheus families: events
/// waiting, whether stalled, and how often each group was.
#[derive(Debug, Default)]
pub struct Groups(pub Vec<Arc<Progress>>);

impl Collector for Groups {
    fn encode(&self, e: DescriptorEncoder) -> fmt::Result {
        let mut f = Families::from(e);
        let label = |g: &Arc<Progress>| [("group", g.group.clone())];
        // Nothing is known before a group's first reading: no line rather than a false 0.
        f.gauges(
            "custflow_group_waiting",
            "Events between the committed offsets of a consumer group and the log ends (all partitions)",
            self.0
                .iter()
                .filter(|g| g.state().seen)
                .map(|g| (label(g), g.waiting())),
        )?;
        f.gauges(
            "custflow_group_stalled",
            "1 while input waits and no committed offset of the group moved for 15 s",
            self.0
                .iter()
                .map(|g| (label(g), i64::from(g.stalled().is_some()))),
        )?;
        f.counters(
            "custflow_group_stalls_total",
            "Times the consumer group became stalled",
            self.0.iter().map(|g| (label(g), g.stalls())),
        )
    }
}

/// Says what waits where, and whose partitions they are.
fn stall_reason(s: &State, total: i64, idle: Duration) -> String {
    let mut parts: Vec<i32> = s
        .waiting
        .iter()
        .filter(|(_, w)| **w > 0)
        .map(|((_, p), _)| *p)
        .collect();
    parts.sort_unstable();
    parts.dedup();
    let whose = if s.owned.is_empty() {
        format!(
            "this instance holds no partitions ({} live member(s) share them)",
            s.members
        )
    } else {
        let mine: Vec<i32> = parts
            .iter()
            .copied()
            .filter(|p| s.owned.contains(p))
            .collect();
        if mine.is_empty() {
            format!(
                "other instances own them ({} live member(s)); this one owns {:?}",
                s.members, s.owned
            )
        } else {
            format!("this instance owns {mine:?} of them")
        }
    };
    format!(
        "{total} events wait on partitions {parts:?} and no offset moved for {} s; {whose}",
        idle.as_secs()
    )
}

/// Reads the log ends and `group`'s committed offsets of every partition of `topics` into
/// `progress` every [`CHECK_EVERY`] until `stop` turns true. A broker that does not answer
/// leaves the last reading in place (its outage is reported elsewhere).
pub async fn watch(
    brokers: String,
    topics: Vec<String>,
    progress: std::sync::Arc<Progress>,
    mut stop: watch::Receiver<bool>,
) {
    let consumer: BaseConsumer = match client_config(&brokers)
        .set("group.id", &progress.group)
        .set("enable.auto.commit", "false")
        .create()
    {
        Ok(c) => c,
        Err(e) => {
            tracing::warn!(error = %e, group = progress.group, "the progress watcher could not start");
            return;
        }
    };
    let consumer = std::sync::Arc::new(consumer);
    loop {
        if *stop.borrow() {
            return;
        }
        let (c, t) = (consumer.clone(), topics.clone());
        // A reading counts from when it began: what was produced before is in it.
        let began = Instant::now();
        match tokio::task::spawn_blocking(move || read_positions(&c, &t)).await {
            Ok(Ok((waiting, committed))) => progress.observe(waiting, committed, began),
            Ok(Err(e)) => {
                tracing::debug!(error = %e, group = progress.group, "reading the group's positions")
            }
            Err(e) => tracing::debug!(error = %e, "progress watcher"),
        }
        tokio::select! {
            () = tokio::time::sleep(CHECK_EVERY) => {}
            _ = stop.changed() => {}
        }
    }
}

/// Per partition of `topics`: events waiting (log end minus committed offset, or minus the
/// log start where nothing is committed) and the committed offset. Blocking.
#[allow(clippy::type_complexity)]
fn read_positions(
    consumer: &BaseConsumer,
    topics: &[String],
) -> Result<(BTreeMap<(String, i32), i64>, BTreeMap<(String, i32), i64>), rdkafka::error::KafkaError>
{
    let timeout = Duration::from_secs(5);
    let mut tpl = TopicPartitionList::new();
    for (t, p) in crate::client::partitions_of(consumer, topics, timeout)? {
        tpl.add_partition(&t, p);
    }
    let committed = consumer.committed_offsets(tpl.clone(), timeout)?;
    let parts: Vec<(String, i32)> = tpl
        .elements()
        .iter()
        .map(|e| (e.topic().to_owned(), e.partition()))
        .collect();
    let highs = crate::client::log_ends(consumer, &parts, true, timeout)?;
    let lows = crate::client::log_ends(consumer, &parts, false, timeout)?;
    let (mut waiting, mut positions) = (BTreeMap::new(), BTreeMap::new());
    for e in tpl.elements() {
        let key = (e.topic().to_owned(), e.partition());
        let (low, high) = (
            lows.get(&key).copied().unwrap_or(0),
            highs.get(&key).copied().unwrap_or(0),
        );
        let at = match committed
            .find_partition(e.topic(), e.partition())
            .map(|c| c.offset())
        {
            Some(Offset::Offset(o)) => {
                positions.insert(key.clone(), o);
                o.max(low)
            }
            _ => low,
        };
        waiting.insert(key, (high - at).max(0));
    }
    Ok((waiting, positions))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn one(p: i32, v: i64) -> BTreeMap<(String, i32), i64> {
        BTreeMap::from([(("orders".to_owned(), p), v)])
    }

    #[test]
    fn input_waiting_with_no_offset_moving_for_15_s_is_a_stall_with_its_reason() {
        let pr = Progress::new("g");
        pr.set_share(&[], 2);
        let t0 = Instant::now();
        pr.observe(one(3, 100), one(3, 10), t0);
        pr.observe(one(3, 120), one(3, 10), t0 + Duration::from_secs(10));
        assert_eq!(pr.stalled(), None, "not yet 15 s");
        pr.observe(one(3, 130), one(3, 10), t0 + Duration::from_secs(16));
        let why = pr.stalled().expect("stalled");
        assert!(why.contains("130 events wait on partitions [3]"), "{why}");
        assert!(
            why.contains("holds no partitions (2 live member(s)"),
            "{why}"
        );
        assert_eq!(pr.stalls(), 1);
        assert_eq!(pr.waiting(), 130);
        // An offset moves: no longer stalled, and counted once.
        pr.observe(one(3, 100), one(3, 40), t0 + Duration::from_secs(18));
        assert_eq!(pr.stalled(), None);
        pr.observe(one(3, 100), one(3, 40), t0 + Duration::from_secs(19));
        assert_eq!(pr.stalls(), 1);
    }

    fn render(pr: &Arc<Progress>) -> String {
        custflow_metrics::Registry::of(Groups(vec![pr.clone()])).render()
    }

    #[test]
    fn one_family_for_every_group() {
        let (a, b) = (Arc::new(Progress::new("a")), Arc::new(Progress::new("b")));
        let text = custflow_metrics::Registry::of(Groups(vec![a, b])).render();
        assert_eq!(
            text.matches("# TYPE custflow_group_stalled gauge").count(),
            1,
            "{text}"
        );
        assert!(
            text.contains("custflow_group_stalled{group=\"b\"} 0"),
            "{text}"
        );
    }

    #[test]
    fn nothing_waiting_is_never_a_stall() {
        let pr = Arc::new(Progress::new("g"));
        // Before the first reading nothing is known: no waiting line, not a false 0.
        let text = render(&pr);
        assert!(!text.contains("custflow_group_waiting{"), "{text}");
        let t0 = Instant::now();
        pr.observe(one(0, 0), one(0, 5), t0);
        let text = render(&pr);
        assert!(
            text.contains("custflow_group_waiting{group=\"g\"} 0"),
            "{text}"
        );
        pr.observe(one(0, 0), one(0, 5), t0 + Duration::from_secs(60));
        assert_eq!(pr.stalled(), None);
    }

    #[test]
    fn the_reason_names_the_owner() {
        let pr = Arc::new(Progress::new("g"));
        pr.set_share(&[1, 3], 2);
        let t0 = Instant::now();
        pr.observe(one(3, 7), one(3, 1), t0);
        pr.observe(one(3, 7), one(3, 1), t0 + Duration::from_secs(20));
        assert!(pr
            .stalled()
            .unwrap_or_default()
            .contains("this instance owns [3]"));
        let text = render(&pr);
        assert!(
            text.contains("custflow_group_stalled{group=\"g\"} 1"),
            "{text}"
        );
        assert!(
            text.contains("custflow_group_waiting{group=\"g\"} 7"),
            "{text}"
        );
    }
}
