//! Every route of the API × every kind of caller, against a live `custflow serve` with API
//! keys: the routes come from `/openapi.json` (which a unit test holds equal to the
//! routers), the expected scope from the table docs/api.md documents. No key or an
//! unknown key gets 401 on every protected route, a key without the route's scope gets
//! 403, a key with it (or `admin`) is let through.

use std::io::{Read, Write};
use std::net::TcpStream;
use std::time::Duration;

use serde_json::Value;

use crate::{free_port, get, Server};

const KEYS: [(&str, &str); 4] = [
    ("events:write", "writer-key-0123456789"),
    ("features:read", "reader-key-0123456789"),
    ("sales:read", "analyst-key-0123456789"),
    ("admin", "admin-key-0123456789"),
];

/// The scope docs/api.md gives a route; `None` for the open ones.
fn documented_scope(method: &str, path: &str) -> Option<&'static str> {
    match (method, path) {
        (_, "/healthz" | "/readyz" | "/openapi.json") => None,
        ("POST", "/v1/events") => Some("events:write"),
        ("DELETE", "/v1/customers/{id}") | (_, "/metrics") => Some("admin"),
        ("POST", p) if p.starts_with("/subjects") => Some("admin"),
        (_, p) if p.starts_with("/v1/sales/") => Some("sales:read"),
        _ => Some("features:read"),
    }
}

/// The status of a request, read from the status line only (an event stream never ends).
fn status(addr: &str, method: &str, path: &str, key: Option<&str>) -> u16 {
    let mut s = TcpStream::connect(addr).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(30))).unwrap();
    let auth = key
        .map(|k| format!("Authorization: Bearer {k}\r\n"))
        .unwrap_or_default();
    let body = if method == "GET" || method == "DELETE" {
        ""
    } else {
        "{}"
    };
    write!(
        s,
        "{method} {path} HTTP/1.0\r\nHost: {addr}\r\n{auth}Content-Type: application/json\r\n\
         Content-Length: {}\r\n\r\n{body}",
        body.len()
    )
    .unwrap();
    let mut head = Vec::new();
    let mut byte = [0u8; 1];
    while !head.ends_with(b"\r\n") && s.read(&mut byte).unwrap() == 1 {
        head.push(byte[0]);
    }
    String::from_utf8_lossy(&head)
        .split_whitespace()
        .nth(1)
        .and_then(|c| c.parse().ok())
        .unwrap_or(0)
}

#[test]
fn every_route_refuses_every_caller_without_its_scope() {
    custflow_tests::ensure_stack();
    let prefix = custflow_tests::unique("scopes-");
    let addr = format!("127.0.0.1:{}", free_port());
    let keys = KEYS
        .iter()
        .map(|(scope, key)| format!("{key}={scope}"))
        .collect::<Vec<_>>()
        .join(";");
    let _server = Server::start(
        &["serve", "--topic-prefix", &prefix, "--api-keys", &keys],
        &addr,
        "/healthz",
    );
    let (code, doc) = get(&addr, "/openapi.json");
    assert_eq!(code, 200);
    let doc: Value = serde_json::from_str(&doc).unwrap();
    let mut walked = 0;
    for (template, ops) in doc["paths"].as_object().unwrap() {
        let path = template
            .replace("{id}", "c1")
            .replace("{topic}", "customer-scores")
            .replace("{subject}", "orders-value")
            .replace("{version}", "1");
        assert!(
            !path.contains('{'),
            "a path parameter not filled in: {path}"
        );
        for method in ops.as_object().unwrap().keys() {
            let method = method.to_ascii_uppercase();
            let needed = documented_scope(&method, template);
            let anonymous = status(&addr, &method, &path, None);
            let stranger = status(&addr, &method, &path, Some("unknown-key-0123456789"));
            if needed.is_none() {
                assert!(
                    anonymous != 401 && anonymous != 403,
                    "{method} {template} is open, got {anonymous}"
                );
                continue;
            }
            assert_eq!(anonymous, 401, "{method} {template} without a key");
            assert_eq!(stranger, 401, "{method} {template} with an unknown key");
            for (scope, key) in KEYS {
                let got = status(&addr, &method, &path, Some(key));
                let allowed = Some(scope) == needed || scope == "admin";
                if allowed {
                    assert!(
                        got != 401 && got != 403,
                        "{method} {template} with {scope}: {got}"
                    );
                } else {
                    assert_eq!(got, 403, "{method} {template} with {scope}");
                }
                walked += 1;
            }
        }
    }
    // 21 operations at the time of writing; fewer means the walk lost its way.
    assert!(
        walked >= 4 * 18,
        "only {walked} route × key pairs were walked"
    );
}
