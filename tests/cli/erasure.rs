//! Customer erasure as an operator does it: `DELETE /v1/customers/{id}` against `custflow
//! run` takes the customer's features, scores and score history away and leaves a
//! tombstone on the score topic; a later order starts the customer afresh; a rebuild
//! from the topics does not bring the erased customer back; denied attributes never
//! reach a topic.

use std::process::Command;

use serde_json::{json, Value};

use crate::{eventually, free_port, get, request, ScoredRun, Server};

/// `custflow ARGS --topic-prefix PREFIX --sink SINK --json`: (success, last stdout line).
fn custflow(args: &[&str], prefix: &str, sink: &str) -> (bool, Value) {
    let out = Command::new(env!("CARGO_BIN_EXE_custflow"))
        .args(args)
        .args(["--topic-prefix", prefix, "--sink", sink, "--json"])
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    let last = stdout.lines().last().unwrap_or_default();
    (
        out.status.success(),
        serde_json::from_str(last).unwrap_or(Value::Null),
    )
}

fn metric(addr: &str, name: &str) -> f64 {
    let (_, body) = get(addr, "/metrics");
    body.lines()
        .find_map(|l| l.strip_prefix(name)?.trim().parse().ok())
        .unwrap_or(0.0)
}

fn order(id: &str, customer: &str, total: f64) -> Value {
    json!({"type": "order", "event_id": id, "order_id": format!("o-{id}"),
           "customer_id": customer,
           "occurred_at": custflow_schemas::time::format_rfc3339(custflow_schemas::time::now_ms() - 60_000),
           "status": "placed", "currency": "EUR", "total": total})
}

#[test]
fn an_erased_customer_is_gone_everywhere_and_stays_gone_after_a_rebuild() {
    let run = ScoredRun::start("erase-", &["--deny-attributes", "email"]);
    let (prefix, sink, addr) = (run.prefix.clone(), run.sink.clone(), run.addr.clone());

    // A customer with a profile (its email denied), orders and a score in the sink.
    let victim = "erase-me";
    let profile = json!({"type": "customer", "event_id": "p1", "customer_id": victim,
        "occurred_at": custflow_schemas::time::format_rfc3339(custflow_schemas::time::now_ms() - 120_000),
        "loyalty_member": true, "attributes": {"email": "x@example.com", "tier": "gold"}});
    let events = json!([
        profile,
        order("v1", victim, 40.0),
        order("v2", victim, 25.0),
        order("k1", "keep-me", 10.0)
    ]);
    let (status, body) = request(&addr, "POST", "/v1/events", &events.to_string());
    assert_eq!(status, 200, "{body}");
    let scored = eventually(120, "the victim's score in the sink", || {
        let (ok, v) = custflow(&["scores", victim], &prefix, &sink);
        (ok && v["version"].as_i64() > Some(0)).then_some(v)
    });
    assert_eq!(scored["customer_id"], victim, "{scored}");
    let (status, features) = get(&addr, &format!("/v1/customers/{victim}/features"));
    assert_eq!(status, 200, "{features}");
    let tombstones_before = metric(&addr, "custflow_score_tombstones_total");

    // The erasure request: accepted once the broker has it.
    let (status, body) = request(&addr, "DELETE", &format!("/v1/customers/{victim}"), "");
    assert_eq!(status, 202, "{body}");
    let answer: Value = serde_json::from_str(&body).unwrap();
    assert_eq!(answer["customer_id"], victim, "{answer}");

    eventually(60, "the lookup to answer 404", || {
        (get(&addr, &format!("/v1/customers/{victim}/features")).0 == 404).then_some(())
    });
    eventually(60, "the sink rows to go", || {
        let (ok, _) = custflow(&["scores", victim], &prefix, &sink);
        (!ok).then_some(())
    });
    let (ok, at) = custflow(
        &[
            "scores",
            victim,
            "--as-of",
            &scored["valid_from"].to_string(),
        ],
        &prefix,
        &sink,
    );
    assert!(!ok, "the score history is gone too: {at}");
    assert!(metric(&addr, "custflow_score_tombstones_total") > tombstones_before);
    let scores_topic = format!("{prefix}customer-scores");
    let on_topic = custflow_tests::read_topic(&scores_topic, 1);
    let last = on_topic
        .iter()
        .rev()
        .find(|(_, k, _)| k.as_deref() == Some(victim))
        .unwrap();
    assert!(
        last.2.is_empty(),
        "the victim's last score record is a tombstone"
    );
    // Another customer is untouched.
    assert_eq!(get(&addr, "/v1/customers/keep-me/features").0, 200);

    // A new order after the erasure starts the customer afresh.
    let (status, body) = request(
        &addr,
        "POST",
        "/v1/events",
        &order("v3", victim, 7.5).to_string(),
    );
    assert_eq!(status, 200, "{body}");
    let fresh = eventually(60, "the customer's new life", || {
        let (status, body) = get(&addr, &format!("/v1/customers/{victim}/features"));
        let v: Value = serde_json::from_str(&body).ok()?;
        (status == 200).then_some(v)
    });
    assert_eq!(fresh["features"]["orders_total"], 1, "{fresh}");
    assert_eq!(fresh["features"]["loyalty_member"], false, "{fresh}");
    run.server.stop();

    // The denied attribute never reached the customers topic; the others did.
    let customers = custflow_tests::read_topic(&format!("{prefix}customers"), 1);
    let profile = customers
        .iter()
        .find(|(h, k, _)| k.as_deref() == Some(victim) && h.is_empty())
        .map(|(_, _, p)| String::from_utf8_lossy(p).into_owned())
        .unwrap();
    assert!(profile.contains("gold"), "{profile:?}");
    assert!(!profile.contains("example.com"), "{profile:?}");
    assert!(customers
        .iter()
        .any(|(h, k, _)| k.as_deref() == Some(victim) && h.contains_key("custflow.erasure")));

    // Rebuild Redis from the topics: the erasure is replayed with the rest.
    let paddr = format!("127.0.0.1:{}", free_port());
    let rebuild = Server::start(
        &["process", "--rebuild", "--topic-prefix", &prefix],
        &paddr,
        "/healthz",
    );
    eventually(
        120,
        "the rebuild to replay the erasure and the new order",
        || {
            let erased = metric(&paddr, "custflow_customers_erased_total") >= 1.0;
            let (ok, v) = custflow(&["features", victim], &prefix, &sink);
            eprintln!("rebuild: erased {erased}, lookup {ok} {v}");
            (erased && ok && v["features"]["orders_total"] == 1).then_some(())
        },
    );
    // How many of the victim's earlier events the replay skips (rather than applies and
    // then erases) depends on the order the three topics are read in; the end state
    // above is what must hold.
    drop(rebuild);
    let _ = std::fs::remove_dir_all(&run.dir);
}
