//! A latency histogram with fixed buckets and quantiles, shared by the processors, the
//! sink and the HTTP API.

use std::fmt;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use prometheus_client::encoding::{MetricEncoder, NoLabelSet};

/// Upper bounds (seconds) of the latency buckets.
const BOUNDS: [f64; 14] = [
    0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0,
];

/// One bucket per bound and one for everything above the last.
const BUCKETS: usize = BOUNDS.len() + 1;

/// A latency histogram with fixed buckets.
#[derive(Debug, Default)]
pub struct Histogram {
    buckets: [AtomicU64; BUCKETS],
    sum_us: AtomicU64,
    count: AtomicU64,
}

impl Histogram {
    /// Records one observation, in seconds.
    pub fn observe(&self, seconds: f64) {
        let i = BOUNDS
            .iter()
            .position(|b| seconds <= *b)
            .unwrap_or(BOUNDS.len());
        self.buckets[i].fetch_add(1, Ordering::Relaxed);
        self.sum_us
            .fetch_add((seconds.max(0.0) * 1e6) as u64, Ordering::Relaxed);
        self.count.fetch_add(1, Ordering::Relaxed);
    }

    /// Observations so far.
    pub fn count(&self) -> u64 {
        self.count.load(Ordering::Relaxed)
    }

    /// The bucket bound below which a fraction `q` of observations fall.
    pub fn quantile(&self, q: f64) -> Option<f64> {
        self.counts().quantile_since(&Counts::default(), q)
    }

    /// Each bucket's count so far: two of them give the quantiles of what was observed
    /// in between ([`Counts::quantile_since`]), as a status line printed every few
    /// seconds wants, where the quantile since the start keeps showing a backlog long
    /// worked off.
    pub fn counts(&self) -> Counts {
        Counts(std::array::from_fn(|i| {
            self.buckets[i].load(Ordering::Relaxed)
        }))
    }

    /// Writes the buckets (each bucket's own count; the encoder accumulates), sum and count.
    pub(crate) fn encode(&self, e: &mut MetricEncoder) -> fmt::Result {
        let buckets: Vec<(f64, u64)> = self
            .buckets
            .iter()
            .enumerate()
            .map(|(i, b)| {
                let bound = BOUNDS.get(i).copied().unwrap_or(f64::INFINITY);
                (bound, b.load(Ordering::Relaxed))
            })
            .collect();
        let sum = self.sum_us.load(Ordering::Relaxed) as f64 / 1e6;
        e.encode_histogram::<NoLabelSet>(sum, self.count(), &buckets, None)
    }
}

/// The bucket counts of a [`Histogram`] at one moment.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Counts([u64; BUCKETS]);

impl Counts {
    /// The bucket bound below which a fraction `q` of the observations made between
    /// `earlier` and these counts fall; None when there were none.
    pub fn quantile_since(&self, earlier: &Counts, q: f64) -> Option<f64> {
        let delta: [u64; BUCKETS] = std::array::from_fn(|i| self.0[i].saturating_sub(earlier.0[i]));
        let n: u64 = delta.iter().sum();
        if n == 0 {
            return None;
        }
        let target = (q * n as f64).ceil() as u64;
        let mut seen = 0;
        for (i, c) in delta.iter().enumerate() {
            seen += c;
            if seen >= target {
                return Some(BOUNDS.get(i).copied().unwrap_or(f64::INFINITY));
            }
        }
        Some(f64::INFINITY)
    }
}

/// The quantiles of a [`Histogram`]'s recent observations for a status that is polled
/// now and then (the dashboard's `/v1/stats`), not of everything since the start: those
/// since a mark between one and two `span`s old, moved forward as polls come (the first
/// poll's window is everything before it).
#[derive(Debug, Default)]
pub struct Recent {
    /// The window's start and the next one, with the counts at each.
    marks: Mutex<Option<[(Instant, Counts); 2]>>,
}

impl Recent {
    /// The bucket bound below which a fraction `q` of `h`'s recent observations fall;
    /// None when there were none.
    pub fn quantile(&self, h: &Histogram, q: f64, span: Duration) -> Option<f64> {
        self.quantile_at(h, q, span, Instant::now())
    }

    fn quantile_at(&self, h: &Histogram, q: f64, span: Duration, at: Instant) -> Option<f64> {
        let now = (at, h.counts());
        let Ok(mut marks) = self.marks.lock() else {
            return h.quantile(q);
        };
        // The first poll's window is everything so far: it has no earlier mark.
        let [start, next] = marks.get_or_insert([(at, Counts::default()), now]);
        if now.0.duration_since(next.0) >= span {
            *start = *next;
            *next = now;
        }
        now.1.quantile_since(&start.1, q)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn quantiles_since_earlier_counts_leave_out_what_came_before() {
        let h = Histogram::default();
        assert_eq!(h.quantile(0.99), None);
        // A backlog worked off slowly, then fresh events.
        for _ in 0..1000 {
            h.observe(2.0);
        }
        let then = h.counts();
        assert_eq!(h.counts().quantile_since(&then, 0.99), None);
        for _ in 0..10 {
            h.observe(0.08);
        }
        assert_eq!(h.counts().quantile_since(&then, 0.99), Some(0.1));
        assert_eq!(h.quantile(0.99), Some(2.5));
        assert_eq!(h.quantile(0.001), Some(0.1));
        h.observe(60.0);
        assert_eq!(h.counts().quantile_since(&then, 1.0), Some(f64::INFINITY));
    }

    #[test]
    fn recent_quantiles_move_on_with_the_polls() {
        let h = Histogram::default();
        let recent = Recent::default();
        let span = Duration::from_secs(10);
        let t0 = Instant::now();
        let at = |secs: u64| t0 + Duration::from_secs(secs);
        for _ in 0..100 {
            h.observe(4.0); // a backlog, before the first poll
        }
        // The first poll has no earlier mark: everything so far.
        assert_eq!(recent.quantile_at(&h, 0.99, span, at(0)), Some(5.0));
        h.observe(0.2);
        assert_eq!(recent.quantile_at(&h, 0.99, span, at(0)), Some(5.0));
        // Polled on: after a span the window starts at the first poll, after two at the
        // poll one span later, and what came before it leaves the window.
        assert_eq!(recent.quantile_at(&h, 0.99, span, at(10)), Some(0.25));
        h.observe(3.0);
        assert_eq!(recent.quantile_at(&h, 0.99, span, at(10)), Some(5.0));
        h.observe(0.04);
        assert_eq!(recent.quantile_at(&h, 0.99, span, at(20)), Some(5.0));
        assert_eq!(recent.quantile_at(&h, 0.01, span, at(20)), Some(0.05));
        assert_eq!(recent.quantile_at(&h, 0.99, span, at(30)), None);
    }
}
