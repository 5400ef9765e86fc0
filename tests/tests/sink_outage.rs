//! The SQL sink's database goes away for a minute in the middle of a stream of scores:
//! the sink retries with backoff, catches up when it is back, and the tables hold every
//! score exactly once (checked by content against what was produced).

#![allow(clippy::unwrap_used)] // tests fail loudly on purpose

use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;

use custflow_connectors::score_sink::{self, ScoreSinkConfig, SinkMetrics};
use custflow_connectors::sql_sink::SqlSink;
use custflow_schemas::CustomerScore;
use custflow_tests::{brokers, ensure_stack, produce_scores, unique, wait_until, Proxy};
use rdkafka::producer::FutureProducer;
use sqlx::{Connection, Row};

fn score(customer: &str, version: i64) -> CustomerScore {
    CustomerScore {
        customer_id: customer.into(),
        version,
        as_of: 1_700_000_000_000 + version * 1000,
        model_version: "m1".into(),
        frequency: version as f64,
        recency: 3.0,
        age: 10.0,
        monetary_value: 12.5,
        p_alive: 0.9,
        churn_probability: 0.1,
        expected_orders_90d: 1.2,
        expected_aov: 13.0,
        clv_12m: 40.0 + version as f64,
        value_tier: "mid60".into(),
        r_score: 5,
        f_score: 3,
        m_score: 4,
        rfm_segment: "potential_loyalist".into(),
        cluster: None,
        at_risk: false,
        retention_target: false,
        expected_retention_profit: 0.0,
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_sink_catches_up_after_its_database_was_down_for_a_minute() {
    ensure_stack();
    let admin = std::env::var("CUSTFLOW_TEST_POSTGRES")
        .unwrap_or_else(|_| "postgres://postgres@127.0.0.1:5432/test".into());
    sqlx::any::install_default_drivers();
    let mut conn = sqlx::AnyConnection::connect(&admin).await.unwrap();
    let db = unique("cf_outage_");
    sqlx::query(&format!("CREATE DATABASE {db}"))
        .execute(&mut conn)
        .await
        .unwrap();
    let proxy = Proxy::start("127.0.0.1:5432").await;
    let sink = SqlSink::connect(&format!(
        "postgres://postgres@127.0.0.1:{}/{db}",
        proxy.port
    ))
    .await
    .unwrap();
    let direct = SqlSink::connect(&format!("postgres://postgres@127.0.0.1:5432/{db}"))
        .await
        .unwrap();

    let prefix = unique("outage-");
    let names = custflow_schemas::topics::Topics::new(prefix.clone());
    custflow_kafka::ensure_topics(&brokers(), &names, Duration::from_secs(20))
        .await
        .unwrap();
    let topic = names.name(custflow_schemas::topics::CUSTOMER_SCORES);
    let producer: FutureProducer = custflow_kafka::admin::client_config(&brokers())
        .set("acks", "all")
        .create()
        .unwrap();
    // 300 customers × 4 versions, in version order per customer, in two halves.
    let all: Vec<CustomerScore> = (1..=4)
        .flat_map(|v| (0..300).map(move |c| score(&format!("c{c:03}"), v)))
        .collect();
    let (first, second) = all.split_at(600);

    let metrics = Arc::new(SinkMetrics::default());
    let (stop, stop_rx) = tokio::sync::watch::channel(false);
    let cfg = ScoreSinkConfig {
        brokers: brokers(),
        topic: topic.clone(),
        group_id: format!("{prefix}sink"),
        batch_max: 200,
        batch_wait: Duration::from_millis(50),
        member: custflow_tests::member(&prefix, "sql-sink").await,
        progress: Arc::new(custflow_kafka::progress::Progress::new(format!(
            "{prefix}sink"
        ))),
    };
    let running = tokio::spawn(score_sink::run(cfg, sink, metrics.clone(), stop_rx));
    produce_scores(&producer, &topic, first).await;
    wait_until(
        Duration::from_secs(60),
        "the first half in the tables",
        || {
            let m = metrics.clone();
            async move { (m.applied.load(Ordering::Relaxed) == 600).then_some(()) }
        },
    )
    .await;

    // The database goes away; the second half arrives meanwhile.
    proxy.down();
    produce_scores(&producer, &topic, second).await;
    tokio::time::sleep(Duration::from_secs(60)).await; // the outage itself
    let during = direct.counts().await.unwrap();
    assert_eq!(
        during.1, 600,
        "nothing was written while the database was away"
    );
    proxy.up();

    // A write cut off at its commit may have landed: its retry is then skipped, not
    // applied again, so applied and skipped together reach the total.
    wait_until(Duration::from_secs(120), "the sink to catch up", || {
        let m = metrics.clone();
        async move {
            let seen = m.applied.load(Ordering::Relaxed) + m.skipped.load(Ordering::Relaxed);
            (seen >= 1200).then_some(())
        }
    })
    .await;
    let _ = stop.send(true);
    running.await.unwrap().unwrap();

    // Every score once: one current row per customer at version 4, four history rows
    // each, versions 1…4 exactly.
    let (current, history, _, _) = direct.counts().await.unwrap();
    assert_eq!((current, history), (300, 1200));
    let rows = sqlx::query(
        "SELECT customer_id, COUNT(*), SUM(version), MAX(version) FROM customer_score_history
         GROUP BY customer_id HAVING COUNT(*) <> 4 OR SUM(version) <> 10 OR MAX(version) <> 4",
    )
    .fetch_all(direct.pool())
    .await
    .unwrap();
    assert!(
        rows.is_empty(),
        "{} customers with a wrong history",
        rows.len()
    );
    let stale: i64 = sqlx::query("SELECT COUNT(*) FROM customer_scores WHERE version <> 4")
        .fetch_one(direct.pool())
        .await
        .unwrap()
        .get(0);
    assert_eq!(stale, 0);
    drop(direct);
    sqlx::query(&format!("DROP DATABASE {db} WITH (FORCE)"))
        .execute(&mut conn)
        .await
        .unwrap();
}
