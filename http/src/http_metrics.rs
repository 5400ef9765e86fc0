//! Prometheus metrics per HTTP route: requests by method, route template and status, and
//! their latency (to the response head; an event stream counts until it opens).

use std::collections::BTreeMap;
use std::fmt;
use std::sync::{Arc, Mutex};
use std::time::Instant;

use axum::extract::{MatchedPath, Request, State};
use axum::middleware::Next;
use axum::response::Response;

use custflow_metrics::{Collector, DescriptorEncoder, Families, Histogram};

/// One route's counts.
#[derive(Debug, Default)]
struct RouteStats {
    statuses: BTreeMap<u16, u64>,
    latency: Histogram,
}

/// Counts and latencies of every route served.
#[derive(Debug, Default)]
pub struct HttpMetrics {
    /// By (method, route template); requests that matched no route count as `unmatched`.
    routes: Mutex<BTreeMap<(String, String), RouteStats>>,
}

impl HttpMetrics {
    pub fn observe(&self, method: &str, route: &str, status: u16, seconds: f64) {
        let Ok(mut routes) = self.routes.lock() else {
            return;
        };
        let stats = routes
            .entry((method.to_owned(), route.to_owned()))
            .or_default();
        *stats.statuses.entry(status).or_default() += 1;
        stats.latency.observe(seconds);
    }

    /// Requests so far of one route with one status.
    pub fn requests(&self, method: &str, route: &str, status: u16) -> u64 {
        self.routes
            .lock()
            .ok()
            .and_then(|r| {
                r.get(&(method.to_owned(), route.to_owned()))
                    .and_then(|s| s.statuses.get(&status).copied())
            })
            .unwrap_or(0)
    }
}

impl Collector for HttpMetrics {
    fn encode(&self, e: DescriptorEncoder) -> fmt::Result {
        let Ok(routes) = self.routes.lock() else {
            return Ok(());
        };
        let mut f = Families::from(e);
        f.counters(
            "custflow_http_requests_total",
            "HTTP requests by method, route and status",
            routes.iter().flat_map(|((method, route), s)| {
                s.statuses.iter().map(move |(status, n)| {
                    (
                        (
                            [("method", method.as_str()), ("route", route.as_str())],
                            [("status", *status)],
                        ),
                        *n,
                    )
                })
            }),
        )?;
        f.histograms(
            "custflow_http_request_seconds",
            "Time to the response head, by method and route",
            routes.iter().map(|((method, route), s)| {
                (
                    [("method", method.as_str()), ("route", route.as_str())],
                    &s.latency,
                )
            }),
        )
    }
}

/// Axum middleware recording every request under its route template (so
/// `/v1/customers/{id}/features` is one series, whatever the id).
pub async fn track(State(m): State<Arc<HttpMetrics>>, req: Request, next: Next) -> Response {
    let route = req
        .extensions()
        .get::<MatchedPath>()
        .map_or_else(|| "unmatched".to_owned(), |p| p.as_str().to_owned());
    let method = req.method().as_str().to_owned();
    let start = Instant::now();
    let resp = next.run(req).await;
    m.observe(
        &method,
        &route,
        resp.status().as_u16(),
        start.elapsed().as_secs_f64(),
    );
    resp
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn routes_render_as_labelled_series() {
        let m = Arc::new(HttpMetrics::default());
        m.observe("GET", "/v1/customers/{id}/features", 200, 0.0004);
        m.observe("GET", "/v1/customers/{id}/features", 200, 0.002);
        m.observe("GET", "/v1/customers/{id}/features", 404, 0.0003);
        assert_eq!(m.requests("GET", "/v1/customers/{id}/features", 200), 2);
        let text = custflow_metrics::Registry::of(m.clone()).render();
        assert!(text.contains(
            "custflow_http_requests_total{method=\"GET\",route=\"/v1/customers/{id}/features\",status=\"404\"} 1"
        ));
        assert!(text.contains(
            "custflow_http_request_seconds_bucket{method=\"GET\",route=\"/v1/customers/{id}/features\",le=\"0.0005\"} 2"
        ));
        assert!(text.contains(
            "custflow_http_request_seconds_count{method=\"GET\",route=\"/v1/customers/{id}/features\"} 3"
        ));
        assert_eq!(text.matches("# TYPE").count(), 2);
    }
}
