//! OpenTelemetry end to end: with `--otlp-endpoint`, one event posted with a caller's
//! `traceparent` gives one trace whose spans follow it through REST ingest, the broker,
//! the processor, the score topic and the SQL sink, exported over OTLP/HTTP to a
//! collector (here a local HTTP server that keeps what it receives).

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{TcpListener, TcpStream};
use std::process::Command;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use serde_json::{json, Value};

use crate::{eventually, get, ScoredRun};

/// A stand-in OTLP/HTTP collector: answers every request 200 and keeps its JSON body.
struct Collector {
    addr: String,
    bodies: Arc<Mutex<Vec<Value>>>,
}

impl Collector {
    fn start() -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = listener.local_addr().unwrap().to_string();
        let bodies = Arc::new(Mutex::new(Vec::new()));
        let kept = bodies.clone();
        std::thread::spawn(move || {
            for stream in listener.incoming().flatten() {
                if let Some(body) = Self::one_request(stream) {
                    kept.lock().unwrap().push(body);
                }
            }
        });
        Self { addr, bodies }
    }

    /// Reads one request on `stream` and answers it; its body when it is JSON on
    /// `/v1/traces`.
    fn one_request(stream: TcpStream) -> Option<Value> {
        stream
            .set_read_timeout(Some(Duration::from_secs(10)))
            .ok()?;
        let mut reader = BufReader::new(stream.try_clone().ok()?);
        let mut line = String::new();
        reader.read_line(&mut line).ok()?;
        let path_ok = line.starts_with("POST /v1/traces ");
        let mut length = 0;
        loop {
            let mut h = String::new();
            reader.read_line(&mut h).ok()?;
            if h.trim().is_empty() {
                break;
            }
            if let Some((k, v)) = h.split_once(':') {
                if k.eq_ignore_ascii_case("content-length") {
                    length = v.trim().parse().ok()?;
                }
            }
        }
        let mut body = vec![0; length];
        reader.read_exact(&mut body).ok()?;
        let mut out = stream;
        let answer = if path_ok { "200 OK" } else { "404 Not Found" };
        write!(
            out,
            "HTTP/1.1 {answer}\r\nContent-Type: application/json\r\nContent-Length: 2\r\nConnection: close\r\n\r\n{{}}"
        )
        .ok()?;
        path_ok
            .then(|| serde_json::from_slice(&body).ok())
            .flatten()
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

/// `POST /v1/events` with a `traceparent` header: the status.
fn post_traced(addr: &str, body: &str, traceparent: &str) -> u16 {
    let mut s = TcpStream::connect(addr).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(30))).unwrap();
    write!(
        s,
        "POST /v1/events HTTP/1.0\r\nHost: {addr}\r\nContent-Type: application/json\r\n\
         traceparent: {traceparent}\r\nContent-Length: {}\r\n\r\n{body}",
        body.len()
    )
    .unwrap();
    let mut answer = String::new();
    s.read_to_string(&mut answer).unwrap();
    answer
        .split_whitespace()
        .nth(1)
        .and_then(|c| c.parse().ok())
        .unwrap_or(0)
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
    let status = post_traced(
        &addr,
        &event.to_string(),
        &format!("00-{trace_id}-{caller_span}-01"),
    );
    assert_eq!(status, 200);

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
