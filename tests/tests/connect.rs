//! The Connect-style worker against the real broker and PostgreSQL: the REST lifecycle in
//! Connect's shapes, an Online Retail file with its quirks (orders, refunds, dead letters
//! with reasons), a failing task's status, and the Postgres source's watermark rule
//! across an open transaction and a restart.

#![allow(clippy::unwrap_used)] // tests fail loudly on purpose

use std::collections::{BTreeMap, HashMap};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use custflow_connectors::connect::worker::{Worker, WorkerConfig};
use custflow_connectors::connect::{ConnectorConfig, SOURCE_HEADER};
use custflow_schemas::avro::AvroCodec;
use custflow_schemas::topics::Topics;
use custflow_schemas::{Event, EventKind, OrderStatus, ValidationContext};
use custflow_tests::{ensure_stack, http, read_topic, unique, wait_until, TopicMessage};
use serde_json::{json, Value};

async fn worker(prefix: &str) -> Worker {
    let brokers = ensure_stack();
    let names = Topics::new(prefix);
    Worker::start(WorkerConfig {
        brokers,
        topics: names.clone(),
        config_topic: names.name("custflow-connect-configs"),
        offset_topic: names.name("custflow-connect-offsets"),
        worker_id: "test".into(),
        codec: Arc::new(AvroCodec::builtin()),
        offset_flush: Duration::from_millis(200),
        batch_max: 500,
        deny: Default::default(),
    })
    .await
    .unwrap()
}

fn config(name: &str, pairs: &[(&str, &str)]) -> ConnectorConfig {
    let map: BTreeMap<String, String> = pairs
        .iter()
        .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
        .collect();
    ConnectorConfig::new(name, map).unwrap()
}

fn spool(tag: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(unique(tag));
    std::fs::create_dir_all(dir.join("in")).unwrap();
    dir
}

/// Writes a file elsewhere and moves it in, as a spool directory expects.
fn drop_file(dir: &Path, name: &str, text: &str) {
    let tmp = dir.join(format!(".{name}.tmp"));
    std::fs::write(&tmp, text).unwrap();
    std::fs::rename(&tmp, dir.join("in").join(name)).unwrap();
}

fn orders(msgs: &[TopicMessage]) -> Vec<custflow_schemas::Order> {
    let codec = AvroCodec::builtin();
    let ctx = ValidationContext::now();
    msgs.iter()
        .map(
            |(_, _, v)| match codec.decode(EventKind::Order, v, &ctx).unwrap() {
                Event::Order(o) => o,
                e => panic!("not an order: {e:?}"),
            },
        )
        .collect()
}

async fn wait_idle(w: &Worker) {
    // Idle twice in a row, as `custflow connect --exit-when-idle` does.
    let seen = Arc::new(std::sync::atomic::AtomicUsize::new(0));
    wait_until(Duration::from_secs(60), "the worker to be idle", || {
        let (w, seen) = (w.clone(), seen.clone());
        async move {
            use std::sync::atomic::Ordering;
            if w.all_idle().await {
                (seen.fetch_add(1, Ordering::SeqCst) >= 1).then_some(())
            } else {
                seen.store(0, Ordering::SeqCst);
                None
            }
        }
    })
    .await;
}

const RETAIL_OLD: &str =
    "InvoiceNo,StockCode,Description,Quantity,InvoiceDate,UnitPrice,CustomerID,Country\r
536365,85123A,WHITE HANGING HEART T-LIGHT HOLDER,6,12/1/2010 8:26,2.55,17850.0,United Kingdom\r
536365,71053,\"LANTERN, WHITE METAL\",6,12/1/2010 8:26,3.39,17850.0,United Kingdom\r
536366,22633,HAND WARMER UNION JACK,6,12/1/2010 8:28,1.85,17850,United Kingdom\r
536414,22139,,56,12/1/2010 11:52,0,,United Kingdom\r
C536379,D,Discount,-1,12/1/2010 9:41,27.50,14527.0,United Kingdom\r
536381,22719,GUMBALL MONOCHROME,two,12/1/2010 9:41,1.25,15311.0,United Kingdom\r
";

const RETAIL_NEW: &str =
    "Invoice,StockCode,Description,Quantity,InvoiceDate,Price,Customer ID,Country
489434,85048,15CM CHRISTMAS GLASS BALL 20 LIGHTS,12,2009-12-01 07:45:00,6.95,13085.0,United Kingdom
489434,79323P,PINK CHERRY LIGHTS,12,2009-12-01 07:45:00,6.75,13085.0,United Kingdom
";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn online_retail_files_become_orders_refunds_and_dead_letters() {
    let prefix = unique("conn-retail-");
    let w = worker(&prefix).await;
    let dir = spool("retail-");
    drop_file(&dir, "2010.csv", RETAIL_OLD);
    drop_file(&dir, "2009.csv", RETAIL_NEW);
    let input = dir.join("in");
    let topic = format!("{prefix}orders");
    let dlq = format!("{prefix}custflow-dlq");
    w.put(config(
        "retail",
        &[
            ("connector.class", "SpoolDirCsvSource"),
            ("csv.preset", "online-retail"),
            ("input.path", input.to_str().unwrap()),
            ("finished.path", dir.join("done").to_str().unwrap()),
            ("error.path", dir.join("error").to_str().unwrap()),
            ("topic", &topic),
            ("errors.tolerance", "all"),
            ("poll.interval.ms", "100"),
        ],
    ))
    .await
    .unwrap();
    wait_idle(&w).await;
    let status = w.status("retail").await.unwrap();
    assert_eq!(status["tasks"][0]["state"], "RUNNING", "{status}");
    assert_eq!(status["tasks"][0]["progress"]["files_done"], 2, "{status}");
    for f in ["2010.csv", "2009.csv"] {
        assert!(dir.join("done").join(f).is_file(), "{f} was not moved");
        assert!(!input.join(f).exists());
    }

    let mut got = orders(&read_topic(&topic, 4));
    got.sort_by(|a, b| a.order_id.cmp(&b.order_id));
    let ids: Vec<&str> = got.iter().map(|o| o.order_id.as_str()).collect();
    assert_eq!(ids, ["489434", "536365", "536366", "C536379"], "{got:?}");
    let by_id: HashMap<&str, &custflow_schemas::Order> =
        got.iter().map(|o| (o.order_id.as_str(), o)).collect();
    let first = by_id["536365"];
    assert_eq!(first.customer_id, "17850");
    assert_eq!(first.items.len(), 2);
    assert!((first.total - (6.0 * 2.55 + 6.0 * 3.39)).abs() < 1e-9);
    assert_eq!(first.currency, "GBP");
    assert_eq!(
        by_id["536366"].customer_id, "17850",
        "17850 and 17850.0 are one customer"
    );
    let refund = by_id["C536379"];
    assert_eq!(refund.status, OrderStatus::Refunded);
    assert_eq!(refund.items[0].quantity, 1);
    assert!((refund.total - 27.5).abs() < 1e-9);
    assert_eq!(by_id["489434"].items.len(), 2);
    assert_eq!(
        by_id["489434"].occurred_at,
        custflow_schemas::time::parse_rfc3339("2009-12-01T07:45:00Z").unwrap()
    );

    let dead = read_topic(&dlq, 2);
    assert_eq!(dead.len(), 2, "{dead:?}");
    let reasons: Vec<&str> = dead
        .iter()
        .map(|(h, _, _)| h["custflow.error.message"].as_str())
        .collect();
    assert!(
        reasons.iter().any(|r| r.contains("no Customer ID")),
        "{reasons:?}"
    );
    assert!(
        reasons.iter().any(|r| r.contains("Quantity \"two\"")),
        "{reasons:?}"
    );
    for (h, _, raw) in &dead {
        assert_eq!(h["__connect.errors.connector.name"], "retail");
        assert!(
            h["custflow.source.location"].starts_with("2010.csv:"),
            "{h:?}"
        );
        assert!(h.contains_key(SOURCE_HEADER));
        assert!(
            String::from_utf8_lossy(raw).contains("53641")
                || String::from_utf8_lossy(raw).contains("536381")
        );
    }
    let m = custflow_metrics::Registry::of(w.metrics()).render();
    assert!(
        m.contains("custflow_connect_dead_letters_total{connector=\"retail\",task=\"0\"} 2"),
        "{m}"
    );
    w.shutdown().await;
    std::fs::remove_dir_all(dir).ok();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rest_api_lifecycle_in_connects_shapes() {
    let prefix = unique("conn-rest-");
    let w = worker(&prefix).await;
    let app = custflow_tests::open(custflow_connectors::connect::rest::routes(w.clone()));
    let addr = custflow_tests::serve(app).await;
    let dir = spool("rest-");
    let input = dir.join("in");
    let topic = format!("{prefix}orders");
    let call = |method: &'static str, path: String, body: Value| {
        let addr = addr.clone();
        async move {
            tokio::task::spawn_blocking(move || {
                let bytes = if body.is_null() {
                    Vec::new()
                } else {
                    body.to_string().into_bytes()
                };
                let (status, _, text) = http(
                    &addr,
                    method,
                    &path,
                    &[("Content-Type", "application/json")],
                    &bytes,
                );
                (
                    status,
                    serde_json::from_str::<Value>(&text).unwrap_or(Value::Null),
                )
            })
            .await
            .unwrap()
        }
    };
    let cfg = json!({
        "connector.class": "SpoolDirCsvSource",
        "csv.preset": "cdnow",
        "input.path": input.to_str().unwrap(),
        "topic": topic,
        "tasks.max": 2,
        "poll.interval.ms": "100",
    });

    let (s, body) = call(
        "POST",
        "/connectors".into(),
        json!({"name": "cd", "config": cfg}),
    )
    .await;
    assert_eq!(s, 201, "{body}");
    assert_eq!(body["name"], "cd");
    assert_eq!(body["type"], "source");
    assert_eq!(
        body["tasks"],
        json!([{"connector": "cd", "task": 0}, {"connector": "cd", "task": 1}])
    );
    let (s, body) = call(
        "POST",
        "/connectors".into(),
        json!({"name": "cd", "config": cfg}),
    )
    .await;
    assert_eq!(s, 409, "{body}");
    assert_eq!(body["error_code"], 409);
    assert_eq!(
        call("GET", "/connectors".into(), Value::Null).await,
        (200, json!(["cd"]))
    );
    let (s, body) = call("GET", "/connectors/cd/config".into(), Value::Null).await;
    assert_eq!((s, body["tasks.max"].as_str()), (200, Some("2")));

    // Bad configs: 400 with the setting's path, in both error shapes.
    let (s, body) = call(
        "PUT",
        "/connectors/bad/config".into(),
        json!({"connector.class": "SpoolDirCsvSource", "csv.preset": "excel", "input.path": "/tmp"}),
    )
    .await;
    assert_eq!(s, 400, "{body}");
    assert_eq!(body["error_code"], 400);
    assert_eq!(body["error"]["details"][0]["path"], "config.csv.preset");
    let (s, body) = call(
        "PUT",
        "/connector-plugins/PostgresSource/config/validate".into(),
        json!({"table": "t"}),
    )
    .await;
    assert_eq!(s, 200);
    assert_eq!(body["error_count"], 1, "{body}");

    // Rows flow; the two tasks share the files.
    drop_file(
        &dir,
        "a.txt",
        "00001 19970101 1 10.00\n00002 19970102 2 20.00\n",
    );
    drop_file(&dir, "b.txt", "00003 19970103 1 30.00\n");
    drop_file(&dir, "c.txt", "00004 19970104 1 40.00\n");
    let got = read_topic(&topic, 4);
    assert_eq!(got.len(), 4);

    // Pause, resume, update, restart.
    assert_eq!(
        call("PUT", "/connectors/cd/pause".into(), Value::Null)
            .await
            .0,
        202
    );
    let (_, st) = call("GET", "/connectors/cd/status".into(), Value::Null).await;
    assert_eq!(st["connector"]["state"], "PAUSED", "{st}");
    assert_eq!(st["connector"]["worker_id"], "test");
    wait_until(Duration::from_secs(30), "both tasks paused", || {
        let w = w.clone();
        async move {
            let st = w.status("cd").await.unwrap();
            st["tasks"]
                .as_array()
                .unwrap()
                .iter()
                .all(|t| t["state"] == "PAUSED")
                .then_some(())
        }
    })
    .await;
    drop_file(&dir, "d.txt", "00005 19970105 1 50.00\n");
    assert_eq!(
        call("PUT", "/connectors/cd/resume".into(), Value::Null)
            .await
            .0,
        202
    );
    assert_eq!(read_topic(&topic, 5).len(), 5);
    let mut updated = cfg.clone();
    updated["tasks.max"] = json!("1");
    let (s, body) = call("PUT", "/connectors/cd/config".into(), updated).await;
    assert_eq!(s, 200, "{body}");
    assert_eq!(body["tasks"].as_array().unwrap().len(), 1);
    assert_eq!(
        call("POST", "/connectors/cd/restart".into(), Value::Null)
            .await
            .0,
        204
    );
    let (_, tasks) = call("GET", "/connectors/cd/tasks".into(), Value::Null).await;
    assert_eq!(tasks[0]["id"], json!({"connector": "cd", "task": 0}));

    // A bad row with errors.tolerance=none fails the task with the row in its trace.
    let strict = json!({"connector.class": "SpoolDirCsvSource", "csv.preset": "cdnow",
                        "input.path": dir.join("strict").to_str().unwrap(), "topic": topic});
    let (s, _) = call("PUT", "/connectors/strict/config".into(), strict.clone()).await;
    assert_eq!(s, 400, "a missing input folder is refused");
    std::fs::create_dir_all(dir.join("strict")).unwrap();
    std::fs::write(
        dir.join("strict/x.txt"),
        "00006 19970106 1 60.00\n00007 1997-01-07 1 70.00\n",
    )
    .unwrap();
    let (s, body) = call("PUT", "/connectors/strict/config".into(), strict).await;
    assert_eq!(s, 201, "{body}");
    let trace = wait_until(Duration::from_secs(30), "the strict task to fail", || {
        let status = call("GET", "/connectors/strict/status".into(), Value::Null);
        async move {
            let (_, st) = status.await;
            (st["tasks"][0]["state"] == "FAILED")
                .then(|| st["tasks"][0]["trace"].as_str().unwrap_or("").to_owned())
        }
    })
    .await;
    assert!(
        trace.contains("x.txt:2") && trace.contains("YYYYMMDD"),
        "{trace}"
    );
    assert_eq!(
        read_topic(&topic, 6).len(),
        6,
        "the good row before the bad one was produced"
    );
    assert!(
        dir.join("strict/x.txt").is_file(),
        "halt.on.error keeps the file in place"
    );

    let (s, _) = call("DELETE", "/connectors/cd".into(), Value::Null).await;
    assert_eq!(s, 204);
    let (s, body) = call("GET", "/connectors/cd".into(), Value::Null).await;
    assert_eq!((s, body["error_code"].as_u64()), (404, Some(404)));
    assert_eq!(
        call("GET", "/connectors".into(), Value::Null).await.1,
        json!(["strict"])
    );
    w.shutdown().await;

    // Configs and target states survive a worker restart.
    let again = worker(&prefix).await;
    assert_eq!(again.names().await, ["strict"]);
    again.shutdown().await;
    std::fs::remove_dir_all(dir).ok();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn postgres_source_waits_for_open_transactions_and_resumes_exactly_once() {
    use sqlx::Connection;
    let url = std::env::var("CUSTFLOW_TEST_PG")
        .unwrap_or_else(|_| "postgres://postgres@127.0.0.1:5432/test".into());
    let table = unique("src_orders_");
    let mut a = sqlx::PgConnection::connect(&url).await.unwrap();
    let mut b = sqlx::PgConnection::connect(&url).await.unwrap();
    sqlx::query(&format!(
        "CREATE TABLE {table} (id bigserial PRIMARY KEY, customer_id bigint NOT NULL, \
         total numeric(10,2) NOT NULL, created_at timestamptz NOT NULL DEFAULT now())"
    ))
    .execute(&mut a)
    .await
    .unwrap();
    let insert = |n: i64| format!("INSERT INTO {table} (customer_id, total) VALUES ({n}, {n}.50)");
    for n in 1..=3 {
        sqlx::query(&insert(n)).execute(&mut a).await.unwrap();
    }
    // An open transaction writes a row, and later transactions commit rows after it.
    let mut open = b.begin().await.unwrap();
    sqlx::query(&insert(4)).execute(&mut *open).await.unwrap();
    for n in 5..=6 {
        sqlx::query(&insert(n)).execute(&mut a).await.unwrap();
    }

    let prefix = unique("conn-pg-");
    let topic = format!("{prefix}orders");
    let cfg = config(
        "pg",
        &[
            ("connector.class", "PostgresSource"),
            ("connection.url", &url),
            ("table", &table),
            ("timestamp.column", "created_at"),
            ("id.column", "id"),
            ("column.occurred_at", "created_at"),
            ("column.order_id", "id"),
            ("topic", &topic),
            ("poll.interval.ms", "100"),
        ],
    );
    let w = worker(&prefix).await;
    w.put(cfg.clone()).await.unwrap();
    let first = orders(&read_topic(&topic, 3));
    assert_eq!(
        first.len(),
        3,
        "rows after the open transaction's start wait for it"
    );
    open.commit().await.unwrap();
    let mut got = orders(&read_topic(&topic, 6));
    got.sort_by_key(|o| o.order_id.parse::<i64>().unwrap());
    let ids: Vec<&str> = got.iter().map(|o| o.order_id.as_str()).collect();
    assert_eq!(
        ids,
        ["1", "2", "3", "4", "5", "6"],
        "none skipped, none twice"
    );
    assert_eq!(got[3].customer_id, "4");
    assert!((got[3].total - 4.5).abs() < 1e-9);
    w.shutdown().await;

    for n in 7..=8 {
        sqlx::query(&insert(n)).execute(&mut a).await.unwrap();
    }
    let w = worker(&prefix).await;
    wait_until(Duration::from_secs(30), "rows 7 and 8", || async {
        let st = w.status("pg").await.unwrap();
        (st["tasks"][0]["progress"]["rows"] == 2).then_some(())
    })
    .await;
    wait_idle(&w).await;
    let mut got = orders(&read_topic(&topic, 8));
    got.sort_by_key(|o| o.order_id.parse::<i64>().unwrap());
    let ids: Vec<&str> = got.iter().map(|o| o.order_id.as_str()).collect();
    assert_eq!(
        ids,
        ["1", "2", "3", "4", "5", "6", "7", "8"],
        "a restart resumes at the watermark"
    );
    w.shutdown().await;
    sqlx::query(&format!("DROP TABLE {table}"))
        .execute(&mut a)
        .await
        .unwrap();
}
