//! The SQL sink against real databases: one scenario, run on SQLite and on the
//! PostgreSQL of the local stack (a fresh database per run).

#![allow(clippy::unwrap_used)] // tests fail loudly on purpose

use custflow_connectors::sql_sink::SqlSink;
use custflow_feature_store::model::ModelDecision;
use custflow_feature_store::sales::RollupRow;
use custflow_schemas::CustomerScore;
use sqlx::Row;

fn score(customer: &str, version: i64, as_of: i64, tier: &str) -> CustomerScore {
    CustomerScore {
        customer_id: customer.into(),
        version,
        as_of,
        model_version: "m1".into(),
        frequency: version as f64,
        recency: 3.0,
        age: 10.0,
        monetary_value: 12.5,
        p_alive: 0.9 - version as f64 / 100.0,
        churn_probability: 0.1 + version as f64 / 100.0,
        expected_orders_90d: 1.2,
        expected_aov: 13.0,
        clv_12m: 40.0 + version as f64,
        value_tier: tier.into(),
        r_score: 5,
        f_score: 3,
        m_score: 4,
        rfm_segment: "potential_loyalist".into(),
        cluster: if version % 2 == 0 {
            Some("v1".into())
        } else {
            None
        },
        at_risk: false,
        retention_target: version % 3 == 0,
        expected_retention_profit: version as f64 - 2.5,
    }
}

async fn dump(sink: &SqlSink) -> Vec<String> {
    let mut out = Vec::new();
    for sql in [
        "SELECT customer_id, version, as_of, clv_12m, value_tier, cluster, retention_target, expected_retention_profit FROM customer_scores ORDER BY customer_id",
        "SELECT customer_id, version, valid_from, valid_to, is_current, retention_target, expected_retention_profit FROM customer_score_history ORDER BY customer_id, version",
    ] {
        for r in sqlx::query(sql).fetch_all(sink.pool()).await.unwrap() {
            let cols: Vec<String> = (0..r.len())
                .map(|i| {
                    r.try_get::<String, _>(i)
                        .or_else(|_| r.try_get::<i64, _>(i).map(|v| v.to_string()))
                        .or_else(|_| r.try_get::<i32, _>(i).map(|v| v.to_string()))
                        .or_else(|_| r.try_get::<f64, _>(i).map(|v| v.to_string()))
                        .or_else(|_| r.try_get::<bool, _>(i).map(|v| v.to_string()))
                        .unwrap_or_else(|_| "NULL".into())
                })
                .collect();
            out.push(cols.join("|"));
        }
    }
    out
}

/// Sales rollup rows are upserted: a period copied again replaces its values.
async fn sales_rollups(sink: &SqlSink) {
    let row = |value: &str, revenue: f64, orders: i64| RollupRow {
        grain: "day",
        period: "2026-11-25".into(),
        period_start: 1_795_564_800_000,
        dimension: "location".into(),
        value: value.into(),
        revenue,
        orders,
        aov: revenue / orders as f64,
        customers: 2,
        discount: 1.5,
        discounted_orders: 1,
        refunds: 0.0,
        refund_count: 0,
        net_revenue: revenue,
    };
    sink.upsert_sales(&[row("loc-1", 30.0, 2), row("loc-2", 12.5, 1)])
        .await
        .unwrap();
    sink.upsert_sales(&[row("loc-1", 45.25, 3)]).await.unwrap();
    let rows: Vec<(String, f64, i64)> =
        sqlx::query("SELECT value, revenue, orders FROM sales_rollups ORDER BY value")
            .fetch_all(sink.pool())
            .await
            .unwrap()
            .into_iter()
            .map(|r| (r.get(0), r.get(1), r.get(2)))
            .collect();
    assert_eq!(
        rows,
        vec![("loc-1".into(), 45.25, 3), ("loc-2".into(), 12.5, 1)]
    );
    assert_eq!(sink.counts().await.unwrap().3, 2);
}

/// The scenario on `url`; `reference` is an empty second database to compare with.
async fn scenario(url: &str, reference: &str) {
    let sink = SqlSink::connect(url).await.unwrap();
    let batch = vec![
        score("a", 1, 1000, "mid60"),
        score("b", 1, 1500, "bottom20"),
        score("a", 3, 3000, "top20"),
        score("a", 2, 2000, "top20"),
    ];
    let s = sink.write_scores(&batch).await.unwrap();
    assert_eq!((s.applied, s.skipped), (4, 0));
    let first = dump(&sink).await;
    assert_eq!(sink.counts().await.unwrap().0, 2);
    assert_eq!(sink.counts().await.unwrap().1, 4);
    sales_rollups(&sink).await;

    // Replaying the whole topic twice leaves the tables identical.
    for _ in 0..2 {
        let s = sink.write_scores(&batch).await.unwrap();
        assert_eq!((s.applied, s.skipped), (0, 4));
        assert_eq!(dump(&sink).await, first);
    }

    // SCD2: point-in-time answers.
    let at = |t| sink.score_at("a", Some(t));
    assert!(at(999).await.unwrap().is_none());
    assert_eq!(at(1000).await.unwrap().unwrap().version, 1);
    assert_eq!(at(2500).await.unwrap().unwrap().version, 2);
    let now = at(99_999).await.unwrap().unwrap();
    assert_eq!((now.version, now.valid_to, now.is_current), (3, None, true));
    let current = sink.score_at("a", None).await.unwrap().unwrap();
    assert_eq!((current.version, current.value_tier.as_str()), (3, "top20"));
    let v1 = at(1000).await.unwrap().unwrap();
    assert_eq!(
        (v1.valid_from, v1.valid_to, v1.is_current),
        (1000, Some(2000), false)
    );

    // A newer version in a later batch closes the current row. Text with the CSV
    // delimiter and quotes arrives as written.
    let odd = "odd,\"id\"\n";
    sink.write_scores(&[score("a", 4, 4000, "mid60"), score(odd, 1, 4100, "x,\"y")])
        .await
        .unwrap();
    assert_eq!(at(3500).await.unwrap().unwrap().valid_to, Some(4000));
    let row = sink.score_at(odd, None).await.unwrap().unwrap();
    assert_eq!(
        (row.customer_id.as_str(), row.value_tier.as_str()),
        (odd, "x,\"y")
    );

    // Batches larger than one multi-row statement: the same tables as one score at a time.
    let big: Vec<CustomerScore> = (0..1_201)
        .flat_map(|i| {
            let c = format!("big{i:05}");
            [
                score(&c, 2, 2000 + i, "mid60"),
                score(&c, 1, 1000 + i, "top20"),
            ]
        })
        .collect();
    let s = sink.write_scores(&big).await.unwrap();
    assert_eq!((s.applied, s.skipped), (2_402, 0));
    let batched = dump(&sink).await;
    // (A customer's scores reach the sink in version order, as on their partition.)
    let single = SqlSink::connect(reference).await.unwrap();
    let mut in_order = batch.clone();
    in_order.push(score("a", 4, 4000, "mid60"));
    in_order.push(score(odd, 1, 4100, "x,\"y"));
    let mut big_in_order = big.clone();
    big_in_order.sort_by_key(|s| s.version);
    in_order.sort_by_key(|s| s.version);
    for sc in in_order.iter().chain(&big_in_order) {
        single.write_scores(std::slice::from_ref(sc)).await.unwrap();
    }
    assert_eq!(dump(&single).await, batched);
    // SCD2: every customer has exactly one current history row, the stored version.
    let (customers, matched, current): (i64, i64, i64) = sqlx::query_as(
        "SELECT (SELECT COUNT(*) FROM customer_scores),
                (SELECT COUNT(*) FROM customer_scores s JOIN customer_score_history h
                   ON h.customer_id = s.customer_id AND h.version = s.version AND h.is_current = 1),
                (SELECT COUNT(*) FROM customer_score_history WHERE is_current = 1)",
    )
    .fetch_one(sink.pool())
    .await
    .unwrap();
    assert_eq!((matched, current), (customers, customers));

    // Models: every artefact recorded once, the newest is champion.
    let text = std::fs::read_to_string(
        std::path::PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/model.json"),
    )
    .unwrap();
    let mut m: custflow_models::artefact::ModelArtefact = serde_json::from_str(&text).unwrap();
    assert!(sink.record_model(&m).await.unwrap());
    assert!(!sink.record_model(&m).await.unwrap());
    m.version = "m2".into();
    assert!(sink.record_model(&m).await.unwrap());
    let statuses: Vec<(String, String)> =
        sqlx::query("SELECT version, status FROM models ORDER BY version")
            .fetch_all(sink.pool())
            .await
            .unwrap()
            .into_iter()
            .map(|r| (r.get(0), r.get(1)))
            .collect();
    assert_eq!(
        statuses,
        vec![
            ("m1".into(), "retired".into()),
            ("m2".into(), "champion".into())
        ]
    );

    // Decisions of the model job: each recorded once, newest first, kept ones too.
    let decision = |version: &str, at: i64, promoted: bool| ModelDecision {
        version: version.into(),
        decided_at_ms: at,
        promoted,
        reason: format!("{version}: because, with a ' quote"),
        previous: (at > 1).then(|| "m1".into()),
        customers: 10,
        metrics: [("promotion.p_value".to_owned(), 0.5)].into(),
        comparison: promoted.then(Default::default),
    };
    sink.record_decision(&decision("m1", 1, true))
        .await
        .unwrap();
    sink.record_decision(&decision("m1b", 2, false))
        .await
        .unwrap();
    sink.record_decision(&decision("m1b", 2, false))
        .await
        .unwrap();
    assert_eq!(
        sink.decisions(10).await.unwrap(),
        vec![
            ("m1b".into(), false, "m1b: because, with a ' quote".into()),
            ("m1".into(), true, "m1: because, with a ' quote".into())
        ]
    );
    let (comparison, previous): (Option<String>, Option<String>) =
        sqlx::query_as("SELECT comparison, previous FROM model_decisions WHERE version = 'm1b'")
            .fetch_one(sink.pool())
            .await
            .unwrap();
    assert_eq!((comparison, previous.as_deref()), (None, Some("m1")));

    // Erasure: the customer's current row and whole history go, nobody else's; a second
    // erasure deletes nothing; a score after it starts the customer afresh.
    let before = sink.counts().await.unwrap();
    assert_eq!(sink.erase(&["a", "nobody"]).await.unwrap(), 1 + 4);
    assert!(sink.score_at("a", None).await.unwrap().is_none());
    assert!(sink.score_at("a", Some(2500)).await.unwrap().is_none());
    assert!(sink.score_at("b", None).await.unwrap().is_some());
    let after = sink.counts().await.unwrap();
    assert_eq!((after.0, after.1), (before.0 - 1, before.1 - 4));
    assert_eq!(sink.erase(&["a"]).await.unwrap(), 0);
    let s = sink
        .write_scores(&[score("a", 5, 5000, "bottom20")])
        .await
        .unwrap();
    assert_eq!((s.applied, s.skipped), (1, 0));
    let again = sink.score_at("a", None).await.unwrap().unwrap();
    assert_eq!((again.version, again.valid_from), (5, 5000));
    assert!(sink.score_at("a", Some(4500)).await.unwrap().is_none());
}

mod sqlite {
    #[tokio::test]
    async fn sink_scenario() {
        let dir = std::env::temp_dir().join(format!("custflow-sink-{}", ulid::Ulid::new()));
        let url = format!("sqlite://{}/custflow.db", dir.display());
        let reference = format!("sqlite://{}/reference.db", dir.display());
        super::scenario(&url, &reference).await;
        std::fs::remove_dir_all(dir).ok();
    }
}

mod postgres {
    use custflow_connectors::sql_sink::SqlSink;
    use sqlx::{Connection, Row};

    /// TLS settings in the sink URL reach PostgreSQL unchanged (sqlx with native-tls):
    /// `sslmode=require` makes an encrypted session where the server offers TLS (and
    /// fails where it does not), `disable` a plain one, and `verify-full` checks the
    /// server's certificate against the trusted CAs.
    #[tokio::test]
    async fn tls_settings_in_the_url_reach_the_server() {
        let admin = std::env::var("CUSTFLOW_TEST_POSTGRES")
            .unwrap_or_else(|_| "postgres://postgres@127.0.0.1:5432/test".into());
        sqlx::any::install_default_drivers();
        let mut conn = sqlx::AnyConnection::connect(&admin).await.unwrap();
        let offered: String = sqlx::query("SHOW ssl")
            .fetch_one(&mut conn)
            .await
            .unwrap()
            .get(0);
        let db = format!("cf_tls_{}", ulid::Ulid::new().to_string().to_lowercase());
        sqlx::query(&format!("CREATE DATABASE {db}"))
            .execute(&mut conn)
            .await
            .unwrap();
        let base = admin.rsplit_once('/').unwrap().0.to_owned();
        let url = |mode: &str| format!("{base}/{db}?sslmode={mode}");
        let encrypted = |sink: SqlSink| async move {
            sqlx::query("SELECT ssl FROM pg_stat_ssl WHERE pid = pg_backend_pid()")
                .fetch_one(sink.pool())
                .await
                .unwrap()
                .get::<bool, _>(0)
        };
        let plain = SqlSink::connect(&url("disable")).await.unwrap();
        assert!(!encrypted(plain).await);
        let required = SqlSink::connect(&url("require")).await;
        if offered == "on" {
            assert!(encrypted(required.unwrap()).await);
            // Debian's snakeoil certificate is signed by no trusted CA.
            assert!(SqlSink::connect(&url("verify-full")).await.is_err());
        } else {
            assert!(
                required.is_err(),
                "sslmode=require against a server without TLS"
            );
        }
        sqlx::query(&format!("DROP DATABASE {db} WITH (FORCE)"))
            .execute(&mut conn)
            .await
            .unwrap();
    }

    #[tokio::test]
    async fn sink_scenario() {
        let admin = std::env::var("CUSTFLOW_TEST_POSTGRES")
            .unwrap_or_else(|_| "postgres://postgres@127.0.0.1:5432/test".into());
        sqlx::any::install_default_drivers();
        let mut conn = sqlx::AnyConnection::connect(&admin)
            .await
            .unwrap_or_else(|e| {
                panic!("PostgreSQL at {admin} is needed (scripts/stack.sh up starts it): {e}")
            });
        let db = format!("cf_{}", ulid::Ulid::new().to_string().to_lowercase());
        let reference = format!("{db}_ref");
        for name in [&db, &reference] {
            sqlx::query(&format!("CREATE DATABASE {name}"))
                .execute(&mut conn)
                .await
                .unwrap();
        }
        let url_of = |name: &str| match admin.rsplit_once('/') {
            Some((base, _)) => format!("{base}/{name}"),
            None => panic!("bad URL {admin}"),
        };
        super::scenario(&url_of(&db), &url_of(&reference)).await;
        for name in [&db, &reference] {
            sqlx::query(&format!("DROP DATABASE {name} WITH (FORCE)"))
                .execute(&mut conn)
                .await
                .unwrap();
        }
    }
}
