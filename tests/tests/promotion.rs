//! The model job's promotion rule against the real Redis: a population whose buying
//! process does not change keeps its first model through many refits, one whose purchase
//! rate doubles gets a new one, and every decision is readable with its reason.

#![allow(clippy::unwrap_used)] // tests fail loudly on purpose

use custflow_feature_store::conn::Redis;
use custflow_feature_store::keys::Keys;
use custflow_feature_store::model::{decisions, ModelHandle};
use custflow_http::features::FeatureState;
use custflow_processors::metrics::Metrics;
use custflow_processors::model_job::{ChurnMonitoring, Outcome, DRIFT_THRESHOLD};
use custflow_schemas::time::DAY_MS;
use rand::{Rng, SeedableRng};
use rand_distr::{Beta, Distribution, Exp, Gamma};
use serde_json::Value;

const CUSTOMERS: usize = 3000;
/// Customers join uniformly over these days.
const JOINING_DAYS: f64 = 1100.0;
/// Day 0 of the simulation, as an epoch day.
const EPOCH_DAY: i64 = 19_000;

/// One customer of a BG/NBD process: purchase days (from day 0) and their order value.
struct Customer {
    days: Vec<i64>,
    value: f64,
}

/// Draws customers from BG/NBD (per day: λ ~ Gamma(0.6, 1/25), p ~ Beta(0.6, 4)) up to
/// day `until`, their purchase rate multiplied by `boost` from day `boost_from` on.
fn population(seed: u64, until: f64, boost_from: f64, boost: f64) -> Vec<Customer> {
    let mut rng = rand::rngs::StdRng::seed_from_u64(seed);
    let rate = Gamma::new(0.6, 1.0 / 25.0).unwrap();
    let dropout = Beta::new(0.6, 4.0).unwrap();
    let spend = Gamma::new(4.0, 8.0).unwrap();
    (0..CUSTOMERS)
        .map(|_| {
            let joined = rng.gen_range(0.0..JOINING_DAYS);
            let (lambda, p): (f64, f64) = (rate.sample(&mut rng), dropout.sample(&mut rng));
            let value = spend.sample(&mut rng);
            let mut days = vec![joined.floor() as i64];
            let mut t = joined;
            loop {
                if rng.gen_bool(p.clamp(0.0, 1.0)) {
                    break; // dropped out after this purchase
                }
                // The next purchase; the rate changes at `boost_from` (memoryless, so a
                // gap crossing it starts again there at the new rate).
                let next = loop {
                    let r = if t >= boost_from {
                        lambda * boost
                    } else {
                        lambda
                    };
                    let gap = Exp::new(r.max(1e-12)).unwrap().sample(&mut rng);
                    if t < boost_from && t + gap > boost_from {
                        t = boost_from;
                        continue;
                    }
                    break t + gap;
                };
                if next > until {
                    break;
                }
                t = next;
                days.push(t.floor() as i64);
            }
            Customer { days, value }
        })
        .collect()
}

/// Writes the states of everyone who joined by `day` (their orders up to it) under `keys`.
async fn write_as_of(conn: &mut Redis, keys: &Keys, customers: &[Customer], day: i64) {
    let mut pipe = redis::pipe();
    for (c, cust) in customers.iter().enumerate() {
        let days: Vec<i64> = cust
            .days
            .iter()
            .filter(|d| **d <= day)
            .map(|d| EPOCH_DAY + d)
            .collect();
        if days.is_empty() {
            continue;
        }
        let id = format!("c{c}");
        let state = custflow_tests::state_with_orders(&id, &days, cust.value);
        pipe.set(keys.features(&id, 0), state.encode()).ignore();
    }
    let () = pipe.query_async(conn).await.unwrap();
}

fn as_of(day: i64) -> i64 {
    (EPOCH_DAY + day) * DAY_MS + 20 * 3_600_000
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stationary_population_keeps_its_first_model_and_a_doubled_rate_replaces_it() {
    // Churn monitoring never refits here: only population refits make versions.
    let churn = ChurnMonitoring {
        min_auc: 0.0,
        ..Default::default()
    };
    let job =
        custflow_tests::model_job("promote-", Default::default(), DRIFT_THRESHOLD, churn).await;
    let (keys, metrics, mut conn) = (job.keys.clone(), job.metrics.clone(), job.conn.clone());
    let boost_from = 1200.0;
    let stationary = population(11, 2000.0, f64::INFINITY, 1.0);

    // Weekly refits of the same customers as they go on buying at the same rates (and
    // new ones join): only the first is promoted.
    let mut first = None;
    for week in 0..8 {
        let day = 1000 + 7 * week;
        write_as_of(&mut conn, &keys, &stationary, day).await;
        let outcome = job.run_once(as_of(day)).await.unwrap();
        if let Outcome::Kept { decision } = &outcome {
            eprintln!("week {week}: {}", decision.reason);
        }
        match (&outcome, week) {
            (Outcome::Promoted { version, .. }, 0) => first = Some(version.clone()),
            (Outcome::Kept { decision }, w) if w > 0 => {
                assert!(!decision.promoted);
                assert!(
                    decision.reason.starts_with("not material")
                        || decision.reason.starts_with("no evidence"),
                    "{}",
                    decision.reason
                );
                let c = decision.comparison.as_ref().unwrap();
                assert!(c.customers > 2000, "{c:?}");
            }
            _ => panic!("week {week}: {outcome:?}"),
        }
    }
    let first = first.unwrap();
    assert_eq!(job.model.current().unwrap().version, first);
    assert_eq!(Metrics::get(&metrics.model_promotions), 1);
    assert_eq!(Metrics::get(&metrics.model_kept), 7);

    // The same customers, whose purchase rate doubles from day 1200: three months on,
    // the refit is promoted, and says why.
    let boosted = population(11, 2000.0, boost_from, 2.0);
    let day = boost_from as i64 + 180;
    write_as_of(&mut conn, &keys, &boosted, day).await;
    let outcome = job.run_once(as_of(day)).await.unwrap();
    let Outcome::Promoted {
        version, decision, ..
    } = outcome
    else {
        panic!("the doubled rate was not promoted: {outcome:?}");
    };
    eprintln!("doubled: {}", decision.reason);
    let c = decision.comparison.clone().unwrap();
    assert!(c.p_value < 0.001, "{c:?}");
    assert!(c.clv_shift > 0.05 || c.changed > 0.05, "{c:?}");
    assert_eq!(decision.previous.as_deref(), Some(first.as_str()));
    assert_eq!(job.model.current().unwrap().version, version);
    let stored = job.model.current().unwrap();
    assert_eq!(stored.metrics["promotion.p_value"], c.p_value);

    // The history, newest first: the promotion, seven kept, the first model.
    let history = decisions(&mut conn, &keys, 100).await.unwrap();
    assert_eq!(history.len(), 9, "{history:?}");
    assert_eq!(history[0].version, version);
    assert!(history[0].promoted);
    assert!(history[1..8].iter().all(|d| !d.promoted));
    assert_eq!(history[8].version, first);
    assert_eq!(history[8].reason, "the deployment's first model");
    let rendered = custflow_metrics::Registry::of(metrics.clone()).render();
    assert!(
        rendered.contains("custflow_model_promotions_total 2"),
        "{rendered}"
    );
    assert!(
        rendered.contains("custflow_model_kept_total 7"),
        "{rendered}"
    );

    // The same over HTTP, as a data scientist reads it.
    let app = custflow_http::features::routes().with_state(FeatureState {
        redis: conn.clone(),
        keys: keys.clone(),
        model: ModelHandle::default(),
        at_risk_days: custflow_feature_store::features::DEFAULT_AT_RISK_DAYS,
    });
    let addr = custflow_tests::serve(custflow_tests::open(app)).await;
    let (status, _, body) = custflow_tests::http(&addr, "GET", "/v1/models?limit=3", &[], b"");
    assert_eq!(status, 200, "{body}");
    let v: Value = serde_json::from_str(&body).unwrap();
    assert_eq!(v["current"]["version"], version.as_str(), "{v}");
    let listed = v["decisions"].as_array().unwrap();
    assert_eq!(listed.len(), 3, "{v}");
    assert_eq!(listed[0]["version"], version.as_str());
    assert_eq!(listed[0]["promoted"], true);
    assert!(listed[0]["comparison"]["p_value"].as_f64().unwrap() < 0.001);
    assert_eq!(listed[1]["promoted"], false);
    assert!(listed[1]["reason"].as_str().unwrap().len() > 20, "{v}");
    for bad in ["0", "501", "ten"] {
        let (status, _, body) =
            custflow_tests::http(&addr, "GET", &format!("/v1/models?limit={bad}"), &[], b"");
        assert_eq!(status, 400, "{bad}: {body}");
        assert!(body.contains("\"limit\""), "{body}");
    }
    // No processor ran here: the rollout is unknown, and says so.
    let (status, _, body) = custflow_tests::http(&addr, "GET", "/v1/models/current", &[], b"");
    assert_eq!(status, 200, "{body}");
    let current: Value = serde_json::from_str(&body).unwrap();
    assert_eq!(current["version"], version.as_str());
    assert!(current["rollout"].is_null(), "{}", current["rollout"]);

    custflow_tests::delete_customers(&mut conn, &keys).await;
}
