//! Churn monitoring in the model job against the real Redis: served predictions are
//! recorded, judged once their labels mature (realised AUC and calibration as metrics),
//! a low AUC refits the churn classifier on that point-in-time set, and a population
//! refit keeps the churn model in use.

#![allow(clippy::unwrap_used)] // tests fail loudly on purpose

use custflow_feature_store::conn::Redis;
use custflow_feature_store::keys::Keys;
use custflow_feature_store::state::CustomerState;
use custflow_processors::metrics::Metrics;
use custflow_processors::model_job::{ChurnMonitoring, Outcome};
use custflow_schemas::time::DAY_MS;
use redis::AsyncCommands;

const CUSTOMERS: usize = 600;
const DAY: i64 = 20_400;
const HORIZON: i64 = 30;

/// Customer `c`'s orders up to `DAY`: `1 + c % 6` of them, 12 days apart, the last one
/// `c % 90` days before `DAY`; with `later`, the customers who bought recently (and
/// often) buy once more 10 days after `DAY`.
fn state(c: usize, later: bool) -> CustomerState {
    let id = format!("c{c}");
    let orders = 1 + c % 6;
    let last = DAY - (c % 90) as i64;
    let mut days: Vec<i64> = (0..orders)
        .map(|k| last - (orders - 1 - k) as i64 * 12)
        .collect();
    if later && c % 90 < 30 && orders > 1 {
        days.push(DAY + 10);
    }
    custflow_tests::state_with_orders(&id, &days, 20.0 + (c % 7) as f64)
}

async fn write(conn: &mut Redis, keys: &Keys, later: bool) {
    let mut pipe = redis::pipe();
    for c in 0..CUSTOMERS {
        pipe.set(keys.features(&format!("c{c}"), 0), state(c, later).encode());
    }
    let () = pipe.query_async(conn).await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn matured_predictions_are_judged_and_a_low_auc_refits_the_classifier() {
    // Every population refit takes over, so the churn model must survive them.
    let churn = ChurnMonitoring {
        every_days: 7,
        sample: 10_000,
        // Nothing reaches this: the first matured record always refits.
        min_auc: 1.01,
        horizon_days: HORIZON,
    };
    let job = custflow_tests::model_job(
        "churnmon-",
        custflow_tests::always_promote(),
        f64::INFINITY,
        churn,
    )
    .await;
    let (keys, metrics, mut conn) = (job.keys.clone(), job.metrics.clone(), job.conn.clone());
    let at = |day: i64| day * DAY_MS + 12 * 3_600_000;
    let recorded = |conn: &mut Redis| {
        let mut conn = conn.clone();
        let key = keys.churn_predictions();
        async move {
            let days: Vec<i64> = conn.hkeys(key).await.unwrap();
            days
        }
    };

    write(&mut conn, &keys, false).await;
    // The first run has no model to record predictions of; it fits one.
    let first = job.run_once(at(DAY)).await.unwrap();
    assert!(matches!(first, Outcome::Promoted { .. }), "{first:?}");
    assert!(recorded(&mut conn).await.is_empty());
    assert!(job.model.current().unwrap().churn.is_none());
    // Without a classifier the served churn probability speaks of the job's horizon.
    assert_eq!(
        job.model.current().unwrap().churn_horizon_days,
        HORIZON as f64
    );
    // The second records today's served predictions, once.
    job.run_once(at(DAY)).await.unwrap();
    job.run_once(at(DAY + 3)).await.unwrap();
    assert_eq!(recorded(&mut conn).await, vec![DAY]);
    assert!(
        metrics.churn_realised.lock().unwrap().is_empty(),
        "not matured yet"
    );

    // A third of the customers buy again; after the horizon the record is judged.
    write(&mut conn, &keys, true).await;
    job.run_once(at(DAY + HORIZON)).await.unwrap();
    let realised = metrics.churn_realised.lock().unwrap().clone();
    assert_eq!(realised["predictions"], CUSTOMERS as f64, "{realised:?}");
    let bought_again = (0..CUSTOMERS)
        .filter(|c| c % 90 < 30 && 1 + c % 6 > 1)
        .count();
    assert_eq!(
        realised["churn_rate"],
        (CUSTOMERS - bought_again) as f64 / CUSTOMERS as f64
    );
    let auc = realised["auc"];
    assert!((0.0..=1.0).contains(&auc), "{realised:?}");
    // The matured record is gone, a new one was taken today.
    assert_eq!(recorded(&mut conn).await, vec![DAY + HORIZON]);

    // The low AUC refitted the classifier on the matured record and promoted it.
    assert_eq!(Metrics::get(&metrics.churn_refits), 1);
    let with_churn = job.model.current().unwrap();
    let churn = with_churn
        .churn
        .clone()
        .expect("a churn model after the refit");
    assert_eq!(churn.horizon_days, HORIZON as f64);
    assert!(
        churn.metrics.contains_key("log_loss.btyd_no_purchase"),
        "{:?}",
        churn.metrics
    );
    // The served horizon is the classifier's label horizon.
    assert_eq!(with_churn.churn_horizon_days, HORIZON as f64);
    let rendered = custflow_metrics::Registry::of(metrics.clone()).render();
    assert!(
        rendered.contains("custflow_churn_realised_auc "),
        "{rendered}"
    );
    assert!(rendered.contains("custflow_churn_refits_total 1"));

    // A population refit (every one takes over here) keeps the churn model.
    let next = job.run_once(at(DAY + HORIZON + 1)).await.unwrap();
    assert!(matches!(next, Outcome::Promoted { .. }), "{next:?}");
    let after = job.model.current().unwrap();
    assert_ne!(after.version, with_churn.version);
    assert_eq!(after.churn.as_ref().map(|c| &c.name), Some(&churn.name));

    custflow_tests::delete_customers(&mut conn, &keys).await;
    let () = conn.del(keys.churn_predictions()).await.unwrap();
}
