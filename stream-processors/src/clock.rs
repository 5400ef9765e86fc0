//! The processors' clock: wall time, or the event-time watermark (DESIGN §4).

use std::sync::atomic::{AtomicI64, Ordering};

/// Which clock time-dependent features and sweeps follow.
#[derive(Debug)]
pub enum Clock {
    /// Real time.
    Wall,
    /// Max event time seen minus the allowed lateness (replays, backfills, tests).
    Event {
        max_seen: AtomicI64,
        lateness_ms: i64,
    },
}

impl Clock {
    pub fn event(lateness_ms: i64) -> Self {
        Clock::Event {
            max_seen: AtomicI64::new(i64::MIN),
            lateness_ms,
        }
    }

    /// Parses `wall` or `event`.
    pub fn parse(s: &str, lateness_ms: i64) -> Option<Self> {
        match s {
            "wall" => Some(Clock::Wall),
            "event" => Some(Self::event(lateness_ms)),
            _ => None,
        }
    }

    /// Tells the clock an event time was seen.
    pub fn observe(&self, event_ms: i64) {
        if let Clock::Event { max_seen, .. } = self {
            max_seen.fetch_max(event_ms, Ordering::Relaxed);
        }
    }

    /// The current instant; `None` before an event-time clock saw any event.
    pub fn now(&self) -> Option<i64> {
        match self {
            Clock::Wall => Some(custflow_schemas::time::now_ms()),
            Clock::Event {
                max_seen,
                lateness_ms,
            } => {
                let m = max_seen.load(Ordering::Relaxed);
                (m != i64::MIN).then(|| m - lateness_ms)
            }
        }
    }
}
