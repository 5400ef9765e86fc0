//! The model job against the real Redis: it exports the population stability index of
//! each model input (live population against the model's training population), and a
//! large drift lets a refit take over without the likelihood margin. After Redis lost
//! its data it stores the model in use again and fits nothing until the features are
//! rebuilt.

#![allow(clippy::unwrap_used)] // tests fail loudly on purpose

use custflow_feature_store::conn::Redis;
use custflow_feature_store::keys::Keys;
use custflow_processors::metrics::Metrics;
use custflow_processors::model_job::{Outcome, DRIFT_THRESHOLD};
use custflow_schemas::time::DAY_MS;

const CUSTOMERS: usize = 400;
const AS_OF_DAY: i64 = 20_400;

/// Writes a population: customer `c` orders `1 + c % 5` times, `gap` days apart, the
/// last one `c % 60 * spread` days before the as-of day.
async fn write_population(conn: &mut Redis, keys: &Keys, gap: i64, spread: i64) {
    let mut pipe = redis::pipe();
    for c in 0..CUSTOMERS {
        let id = format!("c{c}");
        let orders = 1 + c % 5;
        let last = AS_OF_DAY - (c % 60) as i64 * spread;
        let days: Vec<i64> = (0..orders)
            .map(|k| last - (orders - 1 - k) as i64 * gap)
            .collect();
        let state = custflow_tests::state_with_orders(&id, &days, 10.0 + (c % 13) as f64);
        pipe.set(keys.features(&id, 0), state.encode());
    }
    let () = pipe.query_async(conn).await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn drift_of_the_inputs_is_exported_and_lets_a_refit_take_over() {
    // No refit wins on likelihood alone: only the first model and drift promote.
    let job = custflow_tests::model_job(
        "drift-",
        custflow_tests::drift_only(),
        DRIFT_THRESHOLD,
        Default::default(),
    )
    .await;
    let (keys, metrics, mut conn) = (job.keys.clone(), job.metrics.clone(), job.conn.clone());
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
    assert!(custflow_metrics::Registry::of(metrics.clone())
        .render()
        .contains("custflow_model_input_psi{input=\"recency\"}"));

    // Against the new model's own training population the inputs are stable again.
    let settled = job.run_once(as_of).await.unwrap();
    assert!(matches!(settled, Outcome::Kept { .. }), "{settled:?}");
    assert!(psi(&metrics).values().all(|p| *p < 0.01));

    custflow_tests::delete_customers(&mut conn, &keys).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn after_redis_lost_the_model_it_is_stored_again_and_no_refit_runs_on_a_partial_rebuild() {
    let job = custflow_tests::model_job(
        "restore-",
        custflow_tests::always_promote(),
        DRIFT_THRESHOLD,
        Default::default(),
    )
    .await;
    let (keys, mut conn) = (job.keys.clone(), job.conn.clone());
    let as_of = AS_OF_DAY * DAY_MS + 20 * 3_600_000;
    write_population(&mut conn, &keys, 20, 2).await;
    let first = job.run_once(as_of).await.unwrap();
    assert!(matches!(first, Outcome::Promoted { .. }), "{first:?}");
    let version = job.model.current().unwrap().version.clone();

    // Redis loses this deployment's data (other tests share the server, so no FLUSHDB);
    // the processors have begun rebuilding a few customers.
    custflow_tests::delete_customers(&mut conn, &keys).await;
    let () = redis::cmd("DEL")
        .arg(keys.model_current())
        .arg(keys.model(&version))
        .arg(keys.state_ready())
        .query_async(&mut conn)
        .await
        .unwrap();
    let partial: Vec<String> = (0..5).map(|c| format!("c{c}")).collect();
    for id in &partial {
        let state = custflow_tests::state_with_orders(id, &[AS_OF_DAY - 3], 10.0);
        let () = redis::cmd("SET")
            .arg(keys.features(id, 0))
            .arg(state.encode())
            .query_async(&mut conn)
            .await
            .unwrap();
    }
    let outcome = job.run_once(as_of).await.unwrap();
    assert!(matches!(outcome, Outcome::FeaturesNotReady), "{outcome:?}");
    let stored: Option<String> = redis::cmd("GET")
        .arg(keys.model_current())
        .query_async(&mut conn)
        .await
        .unwrap();
    assert_eq!(stored.as_deref(), Some(version.as_str()));
    let artefact: Option<String> = redis::cmd("GET")
        .arg(keys.model(&version))
        .query_async(&mut conn)
        .await
        .unwrap();
    assert!(artefact.is_some(), "the artefact itself is stored again");
    assert_eq!(job.model.current().unwrap().version, version);

    // Once the features are built again the job fits as usual.
    write_population(&mut conn, &keys, 20, 2).await;
    let () = redis::cmd("SET")
        .arg(keys.state_ready())
        .arg("1")
        .query_async(&mut conn)
        .await
        .unwrap();
    let later = job.run_once(as_of).await.unwrap();
    assert!(
        matches!(later, Outcome::Kept { .. } | Outcome::Promoted { .. }),
        "{later:?}"
    );
    custflow_tests::delete_customers(&mut conn, &keys).await;
}
