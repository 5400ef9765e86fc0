//! The model job against the real Redis: it exports the population stability index of
//! each model input (live population against the model's training population), and a
//! large drift lets a refit take over without the likelihood margin.

#![allow(clippy::unwrap_used)] // tests fail loudly on purpose

use std::sync::Arc;

use custflow_feature_store::keys::Keys;
use custflow_feature_store::state::{CustomerState, SourcePos};
use custflow_processors::metrics::Metrics;
use custflow_processors::model_job::{ModelJob, Outcome, DRIFT_THRESHOLD};
use custflow_schemas::time::DAY_MS;
use custflow_schemas::Event;
use redis::aio::ConnectionManager;

const CUSTOMERS: usize = 400;
const AS_OF_DAY: i64 = 20_400;

/// Writes a population: customer `c` orders `1 + c % 5` times, `gap` days apart, the
/// last one `c % 60 * spread` days before the as-of day.
async fn write_population(conn: &mut ConnectionManager, keys: &Keys, gap: i64, spread: i64) {
    let mut pipe = redis::pipe();
    for c in 0..CUSTOMERS {
        let id = format!("c{c}");
        let orders = 1 + c % 5;
        let last = AS_OF_DAY - (c % 60) as i64 * spread;
        let mut state = CustomerState::default();
        for k in 0..orders {
            let day = last - (orders - 1 - k) as i64 * gap;
            let e = Event::Order(custflow_tests::placed_order(
                format!("{id}-e{k}"),
                format!("{id}-o{k}"),
                &id,
                day,
                10.0 + (c % 13) as f64,
            ));
            let pos = SourcePos {
                topic: 1,
                partition: 0,
                offset: k as i64,
            };
            state.apply(&e, pos).unwrap();
        }
        pipe.set(keys.features(&id), state.encode());
    }
    let () = pipe.query_async(conn).await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn drift_of_the_inputs_is_exported_and_lets_a_refit_take_over() {
    let keys = Keys::new(custflow_tests::unique("drift-"));
    let mut conn =
        ConnectionManager::new(redis::Client::open(custflow_tests::redis_url()).unwrap())
            .await
            .unwrap();
    let metrics = Arc::new(Metrics::default());
    let job = ModelJob {
        conn: conn.clone(),
        keys: keys.clone(),
        model: Default::default(),
        at_risk_days: 45.0,
        sample_max: 10_000,
        seed: 7,
        // No refit wins on likelihood alone: only the first model and drift promote.
        min_gain: f64::INFINITY,
        drift_threshold: DRIFT_THRESHOLD,
        metrics: metrics.clone(),
        churn: Default::default(),
    };
    let as_of = AS_OF_DAY * DAY_MS + 20 * 3_600_000;
    let psi = |m: &Metrics| m.drift.lock().unwrap().clone();

    write_population(&mut conn, &keys, 20, 2).await;
    let first = job.run_once(as_of).await.unwrap();
    assert!(matches!(first, Outcome::Promoted { .. }), "{first:?}");
    let model = job.model.current().unwrap();
    assert_eq!(model.drift_reference.len(), 3);

    // The same population: stable, and the margin keeps the model.
    let again = job.run_once(as_of).await.unwrap();
    assert!(matches!(again, Outcome::Kept { .. }), "{again:?}");
    let stable = psi(&metrics);
    assert_eq!(stable.len(), 3, "{stable:?}");
    assert!(stable.values().all(|p| *p < 0.01), "{stable:?}");

    // Customers who buy three times as far apart: recency drifts, and the refit takes over.
    write_population(&mut conn, &keys, 60, 2).await;
    let drifted = job.run_once(as_of).await.unwrap();
    let moved = psi(&metrics);
    assert!(moved["recency"] > DRIFT_THRESHOLD, "{moved:?}");
    assert!(moved["frequency"] < 0.01, "{moved:?}");
    assert!(
        matches!(drifted, Outcome::Promoted { .. }),
        "{drifted:?} {moved:?}"
    );
    let newer = job.model.current().unwrap();
    assert_ne!(newer.version, model.version);
    assert_eq!(newer.metrics["psi_at_promotion.recency"], moved["recency"]);
    assert!(metrics
        .render()
        .contains("custflow_model_input_psi{input=\"recency\"}"));

    // Against the new model's own training population the inputs are stable again.
    let settled = job.run_once(as_of).await.unwrap();
    assert!(matches!(settled, Outcome::Kept { .. }), "{settled:?}");
    assert!(psi(&metrics).values().all(|p| *p < 0.01));

    let mut cursor = 0;
    loop {
        let (next, found) =
            custflow_feature_store::keys::scan_page(&mut conn, cursor, &keys.patterns()[0], 1000)
                .await
                .unwrap();
        if !found.is_empty() {
            let () = redis::cmd("DEL")
                .arg(&found)
                .query_async(&mut conn)
                .await
                .unwrap();
        }
        if next == 0 {
            break;
        }
        cursor = next;
    }
}
