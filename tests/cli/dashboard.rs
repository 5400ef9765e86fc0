//! The dashboard in headless Chromium (through ChromeDriver's WebDriver API): the page
//! loads from `custflow run`, connects to the stream, and its numbers change when
//! events are produced.

use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use std::io::{Read, Write};

use serde_json::{json, Value};

use crate::{free_port, json_summary, Server};

/// ChromeDriver, stopped when the test ends.
struct Driver {
    child: std::process::Child,
    addr: String,
}

impl Driver {
    fn start() -> Self {
        let bin = ["/usr/bin/chromedriver", "/usr/lib/chromium/chromedriver"]
            .into_iter()
            .find(|p| std::path::Path::new(p).exists())
            .unwrap_or_else(|| {
                panic!("chromedriver is missing: scripts/test.sh installs chromium-driver")
            });
        let port = free_port();
        let child = Command::new(bin)
            .arg(format!("--port={port}"))
            .stdout(Stdio::null())
            .spawn()
            .unwrap();
        let addr = format!("127.0.0.1:{port}");
        let driver = Self { child, addr };
        let deadline = Instant::now() + Duration::from_secs(30);
        while std::net::TcpStream::connect(&driver.addr).is_err()
            || driver.call("GET", "/status", None)["value"]["ready"] != json!(true)
        {
            assert!(Instant::now() < deadline, "chromedriver did not start");
            std::thread::sleep(Duration::from_millis(100));
        }
        driver
    }

    /// A WebDriver command (HTTP/1.1: ChromeDriver refuses 1.0); its JSON answer.
    fn call(&self, method: &str, path: &str, body: Option<Value>) -> Value {
        let body = body.map(|b| b.to_string()).unwrap_or_default();
        let mut s = std::net::TcpStream::connect(&self.addr).unwrap();
        s.set_read_timeout(Some(Duration::from_secs(60))).unwrap();
        write!(
            s,
            "{method} {path} HTTP/1.1\r\nHost: {}\r\nConnection: close\r\n\
             Content-Type: application/json\r\nContent-Length: {}\r\n\r\n{body}",
            self.addr,
            body.len()
        )
        .unwrap();
        // Read until the response is complete (the server may keep the connection).
        let (mut raw, mut buf) = (Vec::new(), [0u8; 8192]);
        let (status, body) = loop {
            let n = s.read(&mut buf).unwrap();
            raw.extend_from_slice(&buf[..n]);
            let text = String::from_utf8_lossy(&raw).into_owned();
            if let Some((head, rest)) = text.split_once("\r\n\r\n") {
                let lower = head.to_ascii_lowercase();
                let length = lower
                    .lines()
                    .find_map(|l| l.strip_prefix("content-length:"))
                    .and_then(|v| v.trim().parse::<usize>().ok());
                let body = match length {
                    Some(len) if rest.len() >= len => Some(rest[..len].to_owned()),
                    None if lower.contains("transfer-encoding: chunked")
                        && rest.ends_with("0\r\n\r\n") =>
                    {
                        Some(dechunk(rest))
                    }
                    None if n == 0 => Some(rest.to_owned()),
                    _ => None,
                };
                if let Some(body) = body {
                    let status: u16 = head
                        .split_whitespace()
                        .nth(1)
                        .and_then(|c| c.parse().ok())
                        .unwrap_or(0);
                    break (status, body);
                }
            }
            assert!(n > 0, "WebDriver {method} {path}: connection closed early");
        };
        assert!(status == 200, "WebDriver {method} {path}: {status} {body}");
        serde_json::from_str(&body).unwrap()
    }
}

/// The body of a chunked response.
fn dechunk(mut rest: &str) -> String {
    let mut out = String::new();
    while let Some((size, tail)) = rest.split_once("\r\n") {
        let n = usize::from_str_radix(size.trim(), 16).unwrap_or(0);
        if n == 0 || tail.len() < n {
            break;
        }
        out.push_str(&tail[..n]);
        rest = tail[n..].trim_start_matches("\r\n");
    }
    out
}

impl Drop for Driver {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// What the page shows: status, customers scored, CLV scores seen, rows of the latest
/// scores table, tier bars, the model in use, its rollout and the last decision.
fn read_page(driver: &Driver, session: &str) -> Value {
    let script = "const t = (id) => document.getElementById(id).textContent;
        return {status: t('status'), customers: t('k-customers'), clv_n: t('clv-n'),
                score_rows: document.getElementById('scores').rows.length,
                tiers: document.getElementById('tiers').children.length,
                model: t('m-version'), rollout: t('m-rollout'), decision: t('m-decision'),
                reason: t('m-reason')};";
    driver.call(
        "POST",
        &format!("/session/{session}/execute/sync"),
        Some(json!({"script": script, "args": []})),
    )["value"]
        .clone()
}

fn number(v: &Value) -> u64 {
    v.as_str().and_then(|s| s.parse().ok()).unwrap_or(0)
}

#[test]
fn dashboard_numbers_change_in_chromium_when_events_arrive() {
    let _turn = crate::HEAVY.blocking_lock();
    custflow_tests::ensure_stack();
    let prefix = custflow_tests::unique("dash-");
    let dir = std::env::temp_dir().join(&prefix);
    std::fs::create_dir_all(&dir).unwrap();
    let addr = format!("127.0.0.1:{}", free_port());
    let sink = format!("sqlite://{}/sink.db", dir.display());
    let _server = Server::start(
        &[
            "run",
            "--model-every-secs",
            "3",
            "--topic-prefix",
            &prefix,
            "--sink",
            &sink,
        ],
        &addr,
        "/readyz",
    );

    let driver = Driver::start();
    let caps = json!({"capabilities": {"alwaysMatch": {"browserName": "chrome",
        "goog:chromeOptions": {"binary": "/usr/bin/chromium",
            "args": ["--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage"]}}}});
    let session = driver.call("POST", "/session", Some(caps))["value"]["sessionId"]
        .as_str()
        .unwrap()
        .to_owned();
    driver.call(
        "POST",
        &format!("/session/{session}/url"),
        Some(json!({"url": format!("http://{addr}/dashboard")})),
    );

    // Loaded and live, with nothing scored yet.
    let deadline = Instant::now() + Duration::from_secs(30);
    let before = loop {
        let page = read_page(&driver, &session);
        if page["status"] == "live" && page["customers"] != "–" {
            break page;
        }
        assert!(
            Instant::now() < deadline,
            "the page never went live: {page}"
        );
        std::thread::sleep(Duration::from_millis(200));
    };
    assert_eq!(number(&before["customers"]), 0, "{before}");
    assert_eq!(number(&before["clv_n"]), 0, "{before}");
    assert_eq!(before["score_rows"], 0, "{before}");

    let summary = json_summary(
        Command::new(env!("CARGO_BIN_EXE_custflow"))
            .args(["synth", "--customers", "300", "--days", "120", "--json"])
            .args(["--topic-prefix", &prefix]),
    );
    assert!(summary["events"].as_u64().unwrap() > 300, "{summary}");

    // The page's own polling and stream bring the numbers in.
    let deadline = Instant::now() + Duration::from_secs(120);
    let after = loop {
        let page = read_page(&driver, &session);
        if number(&page["customers"]) > 0
            && number(&page["clv_n"]) > 0
            && page["score_rows"].as_u64() > Some(0)
            && page["tiers"].as_u64() > Some(0)
            && page["model"].as_str().is_some_and(|m| m.starts_with('m'))
            && page["decision"]
                .as_str()
                .is_some_and(|d| d.starts_with('m'))
        {
            break page;
        }
        assert!(
            Instant::now() < deadline,
            "the dashboard did not change: {page}"
        );
        std::thread::sleep(Duration::from_millis(500));
    };
    assert!(number(&after["customers"]) <= 300, "{after}");
    // The model panel: the version in use, its rollout, and the newest decision with
    // its reason (refits run every 3 s here: the first is promoted, later ones are
    // usually kept out).
    let model = after["model"].as_str().unwrap();
    let decision = after["decision"].as_str().unwrap();
    let reason = after["reason"].as_str().unwrap();
    if decision.contains(" promoted at ") {
        assert!(
            decision.starts_with(&format!("{model} promoted")),
            "{after}"
        );
    } else {
        assert!(decision.contains(" kept out at "), "{after}");
    }
    assert!(!reason.is_empty(), "{after}");
    assert!(after["rollout"] != "–", "{after}");
    driver.call("DELETE", &format!("/session/{session}"), None);
    let _ = std::fs::remove_dir_all(&dir);
}
