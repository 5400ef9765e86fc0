//! Per-connector, per-task counters of the worker, and their Prometheus families.

use std::collections::BTreeMap;
use std::fmt;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use custflow_metrics::{Collector, DescriptorEncoder, Families};

/// Counters of one task.
#[derive(Debug, Default)]
pub struct TaskCounters {
    /// Records acknowledged by the broker (data and dead letters).
    pub records: AtomicU64,
    /// Of those, dead letters.
    pub dead_letters: AtomicU64,
    /// Records skipped on a restart because they had reached the topic before the crash.
    pub recovered: AtomicU64,
    /// Source bytes read (files).
    pub bytes: AtomicU64,
    /// Source partitions finished (files done).
    pub partitions_done: AtomicU64,
    /// Offset commits.
    pub commits: AtomicU64,
}

impl TaskCounters {
    pub fn add(counter: &AtomicU64, n: u64) {
        counter.fetch_add(n, Ordering::Relaxed);
    }

    pub fn get(counter: &AtomicU64) -> u64 {
        counter.load(Ordering::Relaxed)
    }
}

/// Picks one counter of a task.
type Counter = fn(&TaskCounters) -> &AtomicU64;

/// Counters of every task the worker ran since it started.
#[derive(Debug, Default)]
pub struct ConnectMetrics {
    tasks: Mutex<BTreeMap<(String, usize), Arc<TaskCounters>>>,
}

impl ConnectMetrics {
    /// The counters of a task (kept across restarts of the task).
    pub fn task(&self, connector: &str, task: usize) -> Arc<TaskCounters> {
        let mut m = self.tasks.lock().unwrap_or_else(|e| e.into_inner());
        m.entry((connector.to_owned(), task)).or_default().clone()
    }

    /// Forgets a deleted connector.
    pub fn remove(&self, connector: &str) {
        let mut m = self.tasks.lock().unwrap_or_else(|e| e.into_inner());
        m.retain(|(c, _), _| c != connector);
    }

    /// Sum of one counter over every task of every connector.
    pub fn total(&self, f: impl Fn(&TaskCounters) -> &AtomicU64) -> u64 {
        let m = self.tasks.lock().unwrap_or_else(|e| e.into_inner());
        m.values().map(|t| TaskCounters::get(f(t))).sum()
    }
}

impl Collector for ConnectMetrics {
    fn encode(&self, e: DescriptorEncoder) -> fmt::Result {
        let m = self.tasks.lock().unwrap_or_else(|e| e.into_inner());
        let mut f = Families::from(e);
        let series: [(&str, &str, Counter); 6] = [
            (
                "custflow_connect_records_total",
                "Records the broker acknowledged (data and dead letters).",
                |t| &t.records,
            ),
            (
                "custflow_connect_dead_letters_total",
                "Records sent to the dead-letter topic.",
                |t| &t.dead_letters,
            ),
            (
                "custflow_connect_recovered_total",
                "Records found on the topic after a crash and not produced again.",
                |t| &t.recovered,
            ),
            (
                "custflow_connect_source_bytes_total",
                "Source bytes read.",
                |t| &t.bytes,
            ),
            (
                "custflow_connect_partitions_done_total",
                "Source partitions (files) finished.",
                |t| &t.partitions_done,
            ),
            (
                "custflow_connect_offset_commits_total",
                "Offset commits.",
                |t| &t.commits,
            ),
        ];
        for (name, help, get) in series {
            f.counters(
                name,
                help,
                m.iter().map(|((connector, task), t)| {
                    (
                        ([("connector", connector.as_str())], [("task", *task)]),
                        TaskCounters::get(get(t)),
                    )
                }),
            )?;
        }
        Ok(())
    }
}
