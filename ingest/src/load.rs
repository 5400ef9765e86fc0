//! HTTP load generation against `POST /v1/events`: generated events go out as NDJSON
//! requests of a fixed batch size over a fixed number of concurrent connections, and
//! every answer is counted (accepted, rejected, failed) with its latency.
//!
//! Latency is measured from the moment a request was due (handed to the senders) to the
//! end of its response, so a saturated endpoint shows up as queueing, not as a
//! mysteriously low request rate (no coordinated omission).

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use custflow_schemas::{json, Event};
use serde::Serialize;
use tokio::sync::{mpsc, Mutex};
use tokio::task::JoinHandle;

/// Why the load run could not go on.
#[derive(Debug, thiserror::Error)]
pub enum LoadError {
    #[error("invalid target {url:?}: {reason}")]
    Target { url: String, reason: String },
    #[error("HTTP client: {0}")]
    Client(#[from] reqwest::Error),
    #[error("the request senders stopped early")]
    SendersGone,
}

/// Where and how to send.
#[derive(Debug, Clone)]
pub struct LoadConfig {
    /// Base URL of the custflow API (`http://127.0.0.1:8080`) or the full events URL.
    pub target: String,
    /// Requests in flight at once.
    pub concurrency: usize,
    /// Events per request (1 = a single JSON object per POST).
    pub batch: usize,
    /// Sent as `Authorization: Bearer <key>` when set.
    pub api_key: Option<String>,
}

/// What a load run saw.
#[derive(Debug, Clone, Default, Serialize)]
pub struct LoadReport {
    pub requests: u64,
    pub events_accepted: u64,
    pub events_rejected: u64,
    /// Events of requests that failed (transport error, 429, 5xx).
    pub events_failed: u64,
    /// Answers by HTTP status (`"error"` for transport failures).
    pub statuses: BTreeMap<String, u64>,
    pub latency_p50_ms: f64,
    pub latency_p95_ms: f64,
    pub latency_p99_ms: f64,
    pub latency_max_ms: f64,
    /// The first failure's message, to say why without a log.
    pub first_error: Option<String>,
}

struct Job {
    body: Bytes,
    events: u64,
    due: Instant,
}

#[derive(Default)]
struct WorkerStats {
    latencies_us: Vec<u64>,
    report: LoadReport,
}

/// A running load: feed events with [`HttpLoad::send`], then [`HttpLoad::finish`].
pub struct HttpLoad {
    tx: Option<mpsc::Sender<Job>>,
    workers: Vec<JoinHandle<WorkerStats>>,
    batch: usize,
    body: Vec<u8>,
    events_in_body: u64,
}

impl HttpLoad {
    /// Starts `concurrency` senders against the target.
    pub fn start(cfg: &LoadConfig) -> Result<Self, LoadError> {
        let url = events_url(&cfg.target)?;
        let client = reqwest::Client::builder()
            .pool_max_idle_per_host(cfg.concurrency.max(1))
            .timeout(Duration::from_secs(30))
            .tcp_nodelay(true)
            .build()?;
        let concurrency = cfg.concurrency.max(1);
        let (tx, rx) = mpsc::channel::<Job>(concurrency);
        let rx = Arc::new(Mutex::new(rx));
        let content_type = if cfg.batch <= 1 {
            "application/json"
        } else {
            "application/x-ndjson"
        };
        let workers = (0..concurrency)
            .map(|_| {
                let (client, rx, url) = (client.clone(), rx.clone(), url.clone());
                let auth = cfg.api_key.as_ref().map(|k| format!("Bearer {k}"));
                tokio::spawn(async move {
                    let mut stats = WorkerStats::default();
                    loop {
                        let job = { rx.lock().await.recv().await };
                        let Some(job) = job else { break };
                        let mut req = client
                            .post(&url)
                            .header(reqwest::header::CONTENT_TYPE, content_type)
                            .body(job.body);
                        if let Some(a) = &auth {
                            req = req.header(reqwest::header::AUTHORIZATION, a);
                        }
                        let outcome = match req.send().await {
                            Ok(resp) => {
                                let status = resp.status();
                                let body = resp.bytes().await.unwrap_or_default();
                                Ok((status, body))
                            }
                            Err(e) => Err(e),
                        };
                        stats
                            .latencies_us
                            .push(job.due.elapsed().as_micros() as u64);
                        stats.record(outcome, job.events);
                    }
                    stats
                })
            })
            .collect();
        Ok(Self {
            tx: Some(tx),
            workers,
            batch: cfg.batch.max(1),
            body: Vec::new(),
            events_in_body: 0,
        })
    }

    /// Adds an event to the current request; sends it when the batch is full (waiting
    /// while every sender is busy). Returns the bytes the event added.
    pub async fn send(&mut self, e: &Event) -> Result<usize, LoadError> {
        let before = self.body.len();
        // serde_json::to_writer on a Vec cannot fail for a Value.
        let _ = serde_json::to_writer(&mut self.body, &json::encode_tagged(e));
        self.body.push(b'\n');
        self.events_in_body += 1;
        let added = self.body.len() - before;
        if self.events_in_body as usize >= self.batch {
            self.flush().await?;
        }
        Ok(added)
    }

    async fn flush(&mut self) -> Result<(), LoadError> {
        if self.events_in_body == 0 {
            return Ok(());
        }
        let job = Job {
            body: Bytes::from(std::mem::take(&mut self.body)),
            events: std::mem::take(&mut self.events_in_body),
            due: Instant::now(),
        };
        let tx = self.tx.as_ref().ok_or(LoadError::SendersGone)?;
        tx.send(job).await.map_err(|_| LoadError::SendersGone)
    }

    /// Sends what is left, waits for every answer and reports.
    pub async fn finish(mut self) -> Result<LoadReport, LoadError> {
        self.flush().await?;
        drop(self.tx.take());
        let mut latencies = Vec::new();
        let mut report = LoadReport::default();
        for w in self.workers.drain(..) {
            let s = w.await.map_err(|_| LoadError::SendersGone)?;
            latencies.extend(s.latencies_us);
            report.merge(s.report);
        }
        latencies.sort_unstable();
        report.latency_p50_ms = percentile_ms(&latencies, 0.50);
        report.latency_p95_ms = percentile_ms(&latencies, 0.95);
        report.latency_p99_ms = percentile_ms(&latencies, 0.99);
        report.latency_max_ms = percentile_ms(&latencies, 1.0);
        Ok(report)
    }
}

/// The nearest-rank `q` quantile of sorted latencies in microseconds, in milliseconds
/// (0 without latencies).
pub fn percentile_ms(sorted_us: &[u64], q: f64) -> f64 {
    if sorted_us.is_empty() {
        return 0.0;
    }
    let i = ((sorted_us.len() as f64 * q).ceil() as usize).clamp(1, sorted_us.len()) - 1;
    sorted_us[i] as f64 / 1000.0
}

impl WorkerStats {
    fn record(&mut self, outcome: Result<(reqwest::StatusCode, Bytes), reqwest::Error>, n: u64) {
        let r = &mut self.report;
        r.requests += 1;
        match outcome {
            Err(e) => {
                *r.statuses.entry("error".into()).or_default() += 1;
                r.events_failed += n;
                r.first_error.get_or_insert_with(|| e.to_string());
            }
            Ok((status, body)) => {
                *r.statuses.entry(status.as_u16().to_string()).or_default() += 1;
                let v: serde_json::Value = serde_json::from_slice(&body).unwrap_or_default();
                if status.is_success() {
                    let accepted = v["accepted"].as_u64().unwrap_or(n);
                    r.events_accepted += accepted;
                    r.events_rejected += n.saturating_sub(accepted);
                } else if status.as_u16() == 400 || status.as_u16() == 413 {
                    // Every event of the request was refused as invalid.
                    r.events_rejected += n;
                    r.first_error.get_or_insert_with(|| describe(status, &v));
                } else {
                    r.events_failed += n;
                    r.first_error.get_or_insert_with(|| describe(status, &v));
                }
            }
        }
    }
}

impl LoadReport {
    fn merge(&mut self, o: LoadReport) {
        self.requests += o.requests;
        self.events_accepted += o.events_accepted;
        self.events_rejected += o.events_rejected;
        self.events_failed += o.events_failed;
        for (k, v) in o.statuses {
            *self.statuses.entry(k).or_default() += v;
        }
        if self.first_error.is_none() {
            self.first_error = o.first_error;
        }
    }
}

fn describe(status: reqwest::StatusCode, v: &serde_json::Value) -> String {
    let msg = v["error"]["message"]
        .as_str()
        .or_else(|| v["message"].as_str())
        .unwrap_or("");
    format!("HTTP {status}: {msg}")
}

/// `http://host:port` → `http://host:port/v1/events`; a URL with a path is used as is.
fn events_url(target: &str) -> Result<String, LoadError> {
    let bad = |reason: &str| LoadError::Target {
        url: target.to_owned(),
        reason: reason.to_owned(),
    };
    let rest = target
        .strip_prefix("http://")
        .ok_or_else(|| bad("only http:// targets are supported"))?;
    match rest.find('/') {
        None => Ok(format!("{target}/v1/events")),
        Some(i) if rest[i..] == *"/" => Ok(format!("{}v1/events", target)),
        Some(_) => Ok(target.to_owned()),
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    #[test]
    fn events_url_completes_a_base_url() {
        assert_eq!(
            events_url("http://127.0.0.1:8080").unwrap(),
            "http://127.0.0.1:8080/v1/events"
        );
        assert_eq!(events_url("http://h:1/").unwrap(), "http://h:1/v1/events");
        assert_eq!(
            events_url("http://h:1/custom/path").unwrap(),
            "http://h:1/custom/path"
        );
        assert!(events_url("https://h").is_err());
        assert!(events_url("h:1").is_err());
    }
}
