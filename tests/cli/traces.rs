//! OpenTelemetry end to end: with `--otlp-endpoint`, one event posted with a caller's
//! `traceparent` gives one trace whose spans follow it through REST ingest, the broker,
//! the processor, the score topic and the SQL sink, exported over OTLP/HTTP to a
//! collector (here a local axum route that keeps what it receives).

use std::process::Command;
use std::sync::{Arc, Mutex};

use axum::routing::post;
use axum::{Json, Router};
use serde_json::{json, Value};

use crate::{eventually, get, request_with, ScoredRun};

/// A stand-in OTLP/HTTP collector: keeps every JSON body posted to `/v1/traces`.
struct Collector {
    addr: String,
    bodies: Arc<Mutex<Vec<Value>>>,
}

impl Collector {
    fn start() -> Self {
        let bodies: Arc<Mutex<Vec<Value>>> = Arc::default();
        let kept = bodies.clone();
        let app = Router::new().route(
            "/v1/traces",
            post(move |Json(body): Json<Value>| async move {
                kept.lock().unwrap().push(body);
                Json(json!({}))
            }),
        );
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        listener.set_nonblocking(true).unwrap();
        let addr = listener.local_addr().unwrap().to_string();
        std::thread::spawn(move || {
            let rt = tokio::runtime::Runtime::new().unwrap();
            rt.block_on(async move {
                let listener = tokio::net::TcpListener::from_std(listener).unwrap();
                axum::serve(listener, app).await.unwrap();
            });
        });
        Self { addr, bodies }
    }

    /// Every span received so far: (name, traceId, spanId, parentSpanId).
    fn spans(&self) -> Vec<(String, String, String, String)> {
        let text = |v: &Value| v.as_str().unwrap_or_default().to_owned();
        let bodies = self.bodies.lock().unwrap();
        bodies
            .iter()
            .flat_map(|b| b["resourceSpans"].as_array().cloned().unwrap_or_default())
            .flat_map(|r| r["scopeSpans"].as_array().cloned().unwrap_or_default())
            .flat_map(|s| s["spans"].as_array().cloned().unwrap_or_default())
            .map(|s| {
                (
                    text(&s["name"]),
                    text(&s["traceId"]),
                    text(&s["spanId"]),
                    text(&s["parentSpanId"]),
                )
            })
            .collect()
    }
}

#[test]
fn one_event_is_one_trace_from_rest_ingest_to_the_sql_sink() {
    let collector = Collector::start();
    let endpoint = format!("http://{}", collector.addr);
    let run = ScoredRun::start("trace-", &["--otlp-endpoint", &endpoint]);
    let (prefix, sink, addr) = (run.prefix.clone(), run.sink.clone(), run.addr.clone());
    eventually(120, "a model in use", || {
        (get(&addr, "/v1/models/current").0 == 200).then_some(())
    });
    // Synthetic events carry no trace context: nothing was traced so far.
    assert!(collector.spans().is_empty(), "{:?}", collector.spans());

    let trace_id = format!("{:032x}", ulid::Ulid::new().0);
    let caller_span = "00f067aa0ba902b7";
    let event = json!({"type": "order", "event_id": "traced-1", "order_id": "o-traced-1",
        "customer_id": "traced-customer",
        "occurred_at": custflow_schemas::time::format_rfc3339(custflow_schemas::time::now_ms() - 60_000),
        "status": "placed", "currency": "EUR", "total": 42.0});
    let traceparent = format!("00-{trace_id}-{caller_span}-01");
    let (status, body) = request_with(
        &addr,
        "POST",
        "/v1/events",
        &event.to_string(),
        &[("traceparent", &traceparent)],
    );
    assert_eq!(status, 200, "{body}");

    // The batch exporter sends every few seconds.
    let find = |spans: &[(String, String, String, String)], name: &str| {
        spans
            .iter()
            .find(|s| s.0 == name && s.1 == trace_id)
            .cloned()
    };
    let spans = eventually(60, "the ingest, process and sink spans", || {
        let spans = collector.spans();
        ["custflow.ingest", "custflow.process", "custflow.sink"]
            .iter()
            .all(|n| find(&spans, n).is_some())
            .then_some(spans)
    });
    let ingest = find(&spans, "custflow.ingest").unwrap();
    let process = find(&spans, "custflow.process").unwrap();
    let sink_span = find(&spans, "custflow.sink").unwrap();
    // One chain: caller → ingest → process → sink.
    assert_eq!(ingest.3, caller_span, "{ingest:?}");
    assert_eq!(process.3, ingest.2, "{process:?} under {ingest:?}");
    assert_eq!(sink_span.3, process.2, "{sink_span:?} under {process:?}");
    // Only the posted event was traced: every span is of its trace.
    assert!(
        spans.iter().all(|s| s.1 == trace_id),
        "spans of other traces: {spans:?}"
    );
    // The sink span ends after the row was committed: the score is there.
    let out = Command::new(env!("CARGO_BIN_EXE_custflow"))
        .args(["scores", "traced-customer", "--topic-prefix", &prefix])
        .args(["--sink", &sink, "--json"])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    run.server.stop();
    let _ = std::fs::remove_dir_all(&run.dir);
}
