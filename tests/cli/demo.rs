//! `custflow demo` end to end for a bounded time: scores reach the sink table, the API
//! returns features for a customer the generator created, the stream delivers, and the
//! sales analytics answer and reach their table.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpStream;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use crate::{free_port, get};

#[test]
fn demo_runs_end_to_end() {
    custflow_tests::ensure_stack();
    let prefix = format!("demo-{}.", std::process::id());
    let dir = std::env::temp_dir().join(format!("custflow-demo-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let port = free_port();
    let addr = format!("127.0.0.1:{port}");
    let mut child = Command::new(env!("CARGO_BIN_EXE_custflow"))
        .args([
            "demo",
            "--json",
            "--customers",
            "400",
            "--days",
            "120",
            "--rate",
            "40",
            "--duration-secs",
            "25",
            "--model-every-secs",
            "5",
        ])
        .args(["--topic-prefix", &prefix, "--http", &addr])
        .arg("--sink")
        .arg(format!("sqlite://{}/demo.db", dir.display()))
        .current_dir(&dir)
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
        .unwrap();
    // The demo prints copy-paste commands once the backfill is processed.
    let mut stdout = BufReader::new(child.stdout.take().unwrap());
    let mut lookup = None;
    let deadline = Instant::now() + Duration::from_secs(240);
    let mut line = String::new();
    while lookup.is_none() {
        assert!(
            Instant::now() < deadline,
            "the demo printed no lookup command"
        );
        line.clear();
        assert!(
            stdout.read_line(&mut line).unwrap() > 0,
            "the demo ended before printing its commands"
        );
        if let Some(url) = line
            .split_whitespace()
            .find(|w| w.contains("/v1/customers/"))
        {
            lookup = Some(url.trim_start_matches(&format!("http://{addr}")).to_owned());
        }
    }
    let lookup = lookup.unwrap();

    // The printed lookup works: a customer the generator created, with scores.
    let (status, body) = get(&addr, &lookup);
    assert_eq!(status, 200, "{body}");
    let v: serde_json::Value = serde_json::from_str(&body).unwrap();
    assert!(v["features"]["orders_total"].as_u64().unwrap() >= 1, "{v}");
    assert!(v["scores"]["clv_12m"].as_f64().is_some(), "{v}");

    // The stream delivers score updates while live events flow.
    let mut sse = TcpStream::connect(&addr).unwrap();
    sse.set_read_timeout(Some(Duration::from_secs(30))).unwrap();
    write!(sse, "GET /v1/stream/customer-scores HTTP/1.1\r\nHost: {addr}\r\nAccept: text/event-stream\r\n\r\n").unwrap();
    let mut reader = BufReader::new(sse);
    let mut got_event = false;
    let until = Instant::now() + Duration::from_secs(30);
    while Instant::now() < until {
        line.clear();
        if reader.read_line(&mut line).unwrap_or(0) == 0 {
            break;
        }
        if line.starts_with("data: {") && line.contains("\"clv_12m\"") {
            got_event = true;
            break;
        }
    }
    assert!(got_event, "no score update arrived on the stream");

    // The segments endpoint counts scored customers. Scores are published before the
    // counters are saved with the states, so a score seen on the stream may precede its
    // count by a moment: poll until counted.
    let until = Instant::now() + Duration::from_secs(30);
    let seg = loop {
        let (status, body) = get(&addr, "/v1/segments");
        assert_eq!(status, 200);
        let seg: serde_json::Value = serde_json::from_str(&body).unwrap();
        if seg["customers_scored"].as_i64().unwrap() > 0 || Instant::now() > until {
            break seg;
        }
        std::thread::sleep(Duration::from_millis(100));
    };
    assert!(seg["customers_scored"].as_i64().unwrap() > 0, "{seg}");

    // Sales analytics over the last 30 days of the backfill: orders, and locations ranked.
    let (status, body) = get(&addr, "/v1/sales/trends?grain=week");
    assert_eq!(status, 200, "{body}");
    let trend: serde_json::Value = serde_json::from_str(&body).unwrap();
    let orders: i64 = trend["rows"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r["orders"].as_i64().unwrap())
        .sum();
    assert!(orders > 0, "{trend}");
    let (status, body) = get(&addr, "/v1/sales/top-locations?by=orders&limit=3");
    assert_eq!(status, 200, "{body}");
    let top: serde_json::Value = serde_json::from_str(&body).unwrap();
    assert!(top["locations"][0]["rank"] == 1, "{top}");

    // It stops by itself after --duration-secs and reports rows in the sink.
    let mut rest = String::new();
    stdout.read_to_string(&mut rest).unwrap();
    assert!(child.wait().unwrap().success());
    let summary: serde_json::Value = serde_json::from_str(rest.lines().last().unwrap()).unwrap();
    assert!(summary["sink_rows"].as_i64().unwrap() > 0, "{summary}");
    assert!(summary["models"].as_i64().unwrap() >= 1, "{summary}");
    // Refits every 5 s over 25 s of live events; each one decided, the first promoted.
    let (promoted, kept) = (
        summary["promotions"].as_u64().unwrap(),
        summary["refits_kept"].as_u64().unwrap(),
    );
    assert!(promoted >= 1 && promoted + kept >= 2, "{summary}");
    assert!(summary["sales_rows"].as_i64().unwrap() > 0, "{summary}");
    assert_eq!(summary["applied"], summary["events"], "{summary}");
    std::fs::remove_dir_all(dir).ok();
}
