//! Sales analytics against the real broker, Redis and PostgreSQL: over a synthetic month
//! with refunds, cancellations, late and repeated orders, every rollup the processor
//! keeps (distinct customers included), every row the sales sink writes and what the
//! sales API answers equal a recomputation from the raw events; an API key with `sales:read` reads them and no
//! customer's features.

#![allow(clippy::unwrap_used)] // tests fail loudly on purpose

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::sync::Arc;
use std::time::Duration;

use custflow_connectors::sales_sink;
use custflow_connectors::sql_sink::SqlSink;
use custflow_feature_store::keys::Keys;
use custflow_feature_store::sales::{self, Grain, RollupRow};
use custflow_feature_store::state::{day_of, daypart, DAYPARTS, RETURN_DAYS};
use custflow_ingest::synth::{Generator, SynthParams};
use custflow_kafka::admin::client_config;
use custflow_processors::metrics::Metrics;
use custflow_processors::{Clock, Processor, ProcessorConfig};
use custflow_schemas::registry::Registry;
use custflow_schemas::time::{parse_rfc3339, DAY_MS};
use custflow_schemas::topics::Topics;
use custflow_schemas::{json, Event, Order, OrderStatus};
use rdkafka::producer::{FutureProducer, FutureRecord};
use serde_json::Value;

/// Series key: (grain, period, dimension, value).
type Key = (&'static str, String, String, String);

/// The rollups recomputed from the raw events, by the rules of docs/deviations.md,
/// written independently of the processor's code.
#[derive(Default)]
struct Expected {
    sums: BTreeMap<Key, [i64; 6]>,
    customers: BTreeMap<Key, BTreeSet<String>>,
    /// Discount label → (first orders, returned within 30 days).
    cohorts: BTreeMap<String, (i64, i64)>,
}

fn cents(x: f64) -> i64 {
    (x * 100.0).round() as i64
}

fn label(code: Option<&str>, discounted: bool) -> String {
    match code {
        Some(c) => c.to_owned(),
        None if discounted => "unnamed".into(),
        None => "none".into(),
    }
}

/// One customer's orders as the rules see them, in the order they were sent.
#[derive(Default)]
struct Book {
    /// order id → (event time, open amount, cancelled, discount label)
    orders: HashMap<String, (i64, f64, bool, String)>,
}

impl Expected {
    fn add(&mut self, at: i64, series: &[(&str, String)], customer: &str, metric: usize, v: i64) {
        for grain in Grain::ALL {
            let period = grain.label(grain.start(day_of(at)));
            for (dim, value) in series {
                let key = (
                    grain.as_str(),
                    period.clone(),
                    (*dim).to_owned(),
                    value.clone(),
                );
                self.sums.entry(key.clone()).or_default()[metric] += v;
                if metric == 1 {
                    self.customers
                        .entry(key)
                        .or_default()
                        .insert(customer.to_owned());
                }
            }
        }
    }

    fn from_events(sent: &[Event]) -> Self {
        // Loyalty is the customer's membership, whether the profile arrives before or
        // after the orders (orders before it move to its group once it is applied).
        let loyalty: HashMap<&str, bool> = sent
            .iter()
            .filter_map(|e| match e {
                Event::Customer(c) => Some((c.customer_id.as_str(), c.loyalty_member)),
                _ => None,
            })
            .collect();
        let mut books: HashMap<&str, Book> = HashMap::new();
        let mut exp = Expected::default();
        for e in sent {
            if let Event::Order(o) = e {
                exp.order(o, &mut books, &loyalty);
            }
        }
        for book in books.values() {
            let Some((first_at, _, _, code)) = book.orders.values().min_by_key(|o| o.0).cloned()
            else {
                continue;
            };
            let mut per_day: HashMap<i32, i32> = HashMap::new();
            for (at, _, cancelled, _) in book.orders.values() {
                if !cancelled {
                    *per_day.entry(day_of(*at)).or_default() += 1;
                }
            }
            let fd = day_of(first_at);
            let returned = per_day.get(&fd).copied().unwrap_or(0) >= 2
                || (fd + 1..=fd + RETURN_DAYS).any(|d| per_day.contains_key(&d));
            let c = exp.cohorts.entry(code).or_default();
            c.0 += 1;
            c.1 += i64::from(returned);
        }
        exp
    }

    fn order<'a>(
        &mut self,
        o: &'a Order,
        books: &mut HashMap<&'a str, Book>,
        loyalty: &HashMap<&str, bool>,
    ) {
        let member = if loyalty
            .get(o.customer_id.as_str())
            .copied()
            .unwrap_or(false)
        {
            "member"
        } else {
            "non_member"
        };
        let book = books.entry(&o.customer_id).or_default();
        let location = o.location_id.clone().unwrap_or_else(|| "unknown".into());
        let part = DAYPARTS[daypart(o.occurred_at)].to_owned();
        let mut series = vec![
            ("all", "all".to_owned()),
            ("location", location),
            ("daypart", part),
            ("loyalty", member.to_owned()),
        ];
        match o.status {
            OrderStatus::Placed => {
                if book.orders.contains_key(&o.order_id) {
                    return; // placed twice: counted once
                }
                let discounted = o.discount_amount > 0.0 || o.discount_code.is_some();
                let code = label(o.discount_code.as_deref(), discounted);
                book.orders.insert(
                    o.order_id.clone(),
                    (o.occurred_at, o.total, false, code.clone()),
                );
                series.push(("discount", code));
                let c = &o.customer_id;
                self.add(o.occurred_at, &series, c, 0, cents(o.total));
                self.add(o.occurred_at, &series, c, 1, 1);
                self.add(o.occurred_at, &series, c, 2, cents(o.discount_amount));
                self.add(o.occurred_at, &series, c, 3, i64::from(discounted));
                let mut cats: BTreeMap<String, i64> = BTreeMap::new();
                for item in &o.items {
                    *cats.entry(item.category.clone()).or_default() +=
                        cents(f64::from(item.quantity) * item.unit_price);
                }
                for (cat, v) in cats {
                    let s = [("category", cat)];
                    self.add(o.occurred_at, &s, c, 0, v);
                    self.add(o.occurred_at, &s, c, 1, 1);
                }
            }
            OrderStatus::Refunded | OrderStatus::Cancelled => {
                let cancel = o.status == OrderStatus::Cancelled;
                let amount = match book.orders.get_mut(&o.order_id) {
                    None => o.total, // the original was not seen (yet): the event's amount
                    Some((_, _, true, _)) => return, // already cancelled
                    Some((_, open, cancelled, _)) => {
                        let amount = if cancel { *open } else { o.total.min(*open) };
                        *open -= amount;
                        *cancelled = cancel;
                        amount
                    }
                };
                if cents(amount) <= 0 && !cancel {
                    return;
                }
                self.add(o.occurred_at, &series, &o.customer_id, 4, cents(amount));
                self.add(o.occurred_at, &series, &o.customer_id, 5, 1);
            }
        }
    }
}

async fn produce(brokers: &str, names: &Topics, events: &[Event]) {
    let producer: FutureProducer = client_config(brokers)
        .set("enable.idempotence", "true")
        .set("linger.ms", "5")
        .create()
        .unwrap();
    for chunk in events.chunks(500) {
        let sends: Vec<_> = chunk
            .iter()
            .map(|e| {
                let topic = names.name(e.kind().topic());
                let payload = json::encode(e);
                let key = e.customer_id().to_owned();
                let producer = producer.clone();
                async move {
                    producer
                        .send(
                            FutureRecord::to(&topic).key(&key).payload(&payload),
                            Duration::from_secs(30),
                        )
                        .await
                }
            })
            .collect();
        // In order per customer: one partition per key, sent in sequence within a chunk.
        for s in sends {
            s.await.unwrap();
        }
    }
}

async fn applied(metrics: &Arc<Metrics>, n: u64, what: &str) {
    let m = metrics.clone();
    custflow_tests::wait_until(Duration::from_secs(120), what, || {
        let m = m.clone();
        async move { (Metrics::get(&m.applied) + Metrics::get(&m.dead_lettered) >= n).then_some(()) }
    })
    .await;
    assert_eq!(Metrics::get(&metrics.dead_lettered), 0, "no event refused");
}

fn check_rows(rows: &[RollupRow], exp: &Expected, grain: &'static str) -> usize {
    let mut seen = 0;
    for r in rows {
        let key: Key = (
            grain,
            r.period.clone(),
            r.dimension.clone(),
            r.value.clone(),
        );
        let want = exp
            .sums
            .get(&key)
            .unwrap_or_else(|| panic!("unexpected series {key:?}"));
        let got = [
            cents(r.revenue),
            r.orders,
            cents(r.discount),
            r.discounted_orders,
            cents(r.refunds),
            r.refund_count,
        ];
        assert_eq!(&got, want, "{key:?}");
        assert_eq!(cents(r.net_revenue), want[0] - want[4], "{key:?}");
        let exact = exp.customers.get(&key).map_or(0, BTreeSet::len);
        assert_eq!(r.customers, exact as u64, "customers of {key:?}");
        seen += 1;
    }
    seen
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sales_rollups_equal_a_recomputation_from_the_raw_events() {
    let (brokers, names) = custflow_tests::deployment("sales-").await;

    // A month of a restaurant chain: plenty of discounts, refunds and cancellations.
    let start = parse_rfc3339("2026-03-01T00:00:00Z").unwrap();
    let params = SynthParams {
        seed: 11,
        customers: 600,
        start_ms: start,
        end_ms: start + 31 * DAY_MS - 1,
        discount_uptake: 0.3,
        refund_share: 0.08,
        cancel_share: 0.04,
        activity_per_order: 0.3,
        ..SynthParams::default()
    };
    let events: Vec<Event> = Generator::new(params).unwrap().collect();
    // Every 12th placed order arrives last (late, after its refunds), and every 25th is
    // sent twice. Profiles go with the rest, in event-time order, on their own topic, so
    // some orders are applied before their customer's profile.
    let mut on_time = Vec::new();
    let mut late = Vec::new();
    let mut placed = 0;
    for e in events {
        let is_placed = matches!(&e, Event::Order(o) if o.status == OrderStatus::Placed);
        if is_placed {
            placed += 1;
            if placed % 25 == 0 {
                on_time.push(e.clone());
            }
            if placed % 12 == 0 {
                late.push(e);
                continue;
            }
        }
        on_time.push(e);
    }
    let sent: Vec<Event> = on_time.iter().chain(&late).cloned().collect();
    let exp = Expected::from_events(&sent);
    let refunds: i64 = exp
        .sums
        .iter()
        .filter(|(k, _)| k.0 == "month" && k.2 == "all")
        .map(|(_, m)| m[5])
        .sum();
    assert!(
        placed > 500 && refunds > 20 && late.len() > 40,
        "{placed} orders, {refunds} refunds"
    );

    let registry = Arc::new(Registry::in_memory());
    let metrics = Arc::new(Metrics::default());
    let cfg = ProcessorConfig::new(
        &brokers,
        &custflow_tests::redis_url(),
        names.clone(),
        Clock::event(0),
    );
    let p = Processor::new(cfg, registry, metrics.clone())
        .await
        .unwrap();
    let (stop, rx) = tokio::sync::watch::channel(false);
    let handle = tokio::spawn(async move { p.run(rx).await.unwrap() });
    produce(&brokers, &names, &on_time).await;
    produce(&brokers, &names, &late).await;
    applied(&metrics, sent.len() as u64, "every event applied").await;
    stop.send(true).unwrap();
    handle.await.unwrap();

    // Redis: every series of every grain, exactly (customers within HyperLogLog error).
    let keys = Keys::new(names.name(""));
    let mut conn = custflow_tests::redis_conn().await;
    let (first_day, last_day) = (day_of(start), day_of(start) + 30);
    let mut all_rows = Vec::new();
    for grain in Grain::ALL {
        let starts = sales::period_starts(grain, first_day, last_day).unwrap();
        let rows = sales::rows(&mut conn, &keys, grain, &starts, None)
            .await
            .unwrap();
        let n = check_rows(&rows, &exp, grain.as_str());
        let want = exp.sums.keys().filter(|k| k.0 == grain.as_str()).count();
        assert_eq!(n, want, "{} series of grain {}", n, grain.as_str());
        all_rows.extend(rows);
    }
    let cohorts = sales::cohorts(&mut conn, &keys).await.unwrap();
    let cohorts: BTreeMap<String, (i64, i64)> =
        cohorts.into_iter().filter(|(_, c)| *c != (0, 0)).collect();
    assert_eq!(cohorts, exp.cohorts);
    assert!(
        exp.cohorts.len() > 2,
        "cohorts of several codes: {:?}",
        exp.cohorts
    );

    // PostgreSQL: the sales sink copies every changed period; a second copy has nothing
    // left to do.
    let (db, db_name) = sales_db().await;
    let sink = SqlSink::connect(&db).await.unwrap();
    let written = sales_sink::flush(&mut conn, &keys, &sink).await.unwrap();
    assert_eq!(written, all_rows.len());
    assert_eq!(sales_sink::flush(&mut conn, &keys, &sink).await.unwrap(), 0);
    use sqlx::Row;
    let stored = sqlx::query(
        "SELECT grain, period, dimension, value, revenue, orders, customers, refunds FROM sales_rollups",
    )
    .fetch_all(sink.pool())
    .await
    .unwrap();
    assert_eq!(stored.len(), all_rows.len());
    let by_key: HashMap<(String, String, String, String), &RollupRow> = all_rows
        .iter()
        .map(|r| {
            (
                (
                    r.grain.to_owned(),
                    r.period.clone(),
                    r.dimension.clone(),
                    r.value.clone(),
                ),
                r,
            )
        })
        .collect();
    for row in &stored {
        let key: (String, String, String, String) =
            (row.get(0), row.get(1), row.get(2), row.get(3));
        let r = by_key[&key];
        let (revenue, orders, customers, refunds): (f64, i64, i64, f64) =
            (row.get(4), row.get(5), row.get(6), row.get(7));
        assert_eq!(
            (cents(revenue), orders, customers as u64, cents(refunds)),
            (cents(r.revenue), r.orders, r.customers, cents(r.refunds)),
            "{key:?}"
        );
    }

    // The API, with keys: analysts read sales, not customers; readers of features do not
    // read sales.
    let addr = serve(&keys).await;
    let analyst = [("Authorization", "Bearer analyst-key-0123456789")];
    let reader = [("Authorization", "Bearer reader-key-0123456789")];
    let get = |path: &str, h: &[(&str, &str)]| {
        let (status, _, body) = custflow_tests::http(&addr, "GET", path, h, b"");
        (
            status,
            serde_json::from_str::<Value>(&body).unwrap_or(Value::Null),
        )
    };
    let window = "from=2026-03-01&to=2026-03-31";
    let (status, body) = get(&format!("/v1/sales/trends?grain=month&{window}"), &analyst);
    assert_eq!(status, 200, "{body}");
    let month = &exp.sums[&("month", "2026-03".into(), "all".into(), "all".into())];
    assert_eq!(
        cents(body["rows"][0]["revenue"].as_f64().unwrap()),
        month[0]
    );
    let (status, body) = get(
        &format!("/v1/sales/trends?grain=day&{window}&dimension=location&value=loc-01"),
        &analyst,
    );
    assert_eq!(
        (status, body["rows"].as_array().map(Vec::len)),
        (200, Some(31)),
        "zero-filled days"
    );
    let customer = late[0].customer_id().to_owned();
    assert_eq!(
        get(&format!("/v1/customers/{customer}/features"), &analyst).0,
        403
    );
    assert_eq!(
        get(&format!("/v1/customers/{customer}/features"), &reader).0,
        200
    );
    assert_eq!(get("/v1/sales/trends", &reader).0, 403);
    assert_eq!(get("/v1/sales/trends", &[]).0, 401);
    let (status, body) = get(
        "/v1/sales/trends?grain=year&from=March&dimension=city",
        &analyst,
    );
    assert_eq!(status, 400);
    let paths: BTreeSet<&str> = body["error"]["details"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|d| d["path"].as_str())
        .collect();
    assert_eq!(paths, BTreeSet::from(["from", "grain", "dimension"]));

    // Top locations: ranked by the recomputed revenue over the month.
    let mut by_location: Vec<(String, i64)> = exp
        .sums
        .iter()
        .filter(|(k, _)| k.0 == "month" && k.2 == "location" && k.3 != "unknown")
        .map(|(k, m)| (k.3.clone(), m[0]))
        .collect();
    by_location.sort_by_key(|l| std::cmp::Reverse(l.1));
    let (status, body) = get(
        &format!("/v1/sales/top-locations?{window}&limit=3"),
        &analyst,
    );
    assert_eq!(status, 200, "{body}");
    let top: Vec<(String, i64)> = body["locations"]
        .as_array()
        .unwrap()
        .iter()
        .map(|l| {
            (
                l["location"].as_str().unwrap().to_owned(),
                cents(l["revenue"].as_f64().unwrap()),
            )
        })
        .collect();
    assert_eq!(top, by_location[..3].to_vec());

    // Discounts: orders per code and the cohorts; loyalty: revenue per group.
    let (status, body) = get(&format!("/v1/sales/discounts?{window}"), &analyst);
    assert_eq!(status, 200, "{body}");
    for c in body["codes"].as_array().unwrap() {
        let code = c["code"].as_str().unwrap();
        let key = (
            "month",
            "2026-03".to_owned(),
            "discount".to_owned(),
            code.to_owned(),
        );
        assert_eq!(
            c["orders"].as_i64(),
            exp.sums.get(&key).map(|m| m[1]).or(Some(0)),
            "{code}"
        );
        let (first, back) = exp.cohorts.get(code).copied().unwrap_or_default();
        assert_eq!(
            c["first_order_cohort"]["first_orders"].as_i64(),
            Some(first)
        );
        assert_eq!(
            c["first_order_cohort"]["returned_within_30d"].as_i64(),
            Some(back)
        );
    }
    let (status, body) = get(&format!("/v1/sales/loyalty?{window}"), &analyst);
    assert_eq!(status, 200, "{body}");
    for group in ["member", "non_member"] {
        let key = (
            "month",
            "2026-03".to_owned(),
            "loyalty".to_owned(),
            group.to_owned(),
        );
        assert_eq!(
            cents(body["groups"][group]["revenue"].as_f64().unwrap()),
            exp.sums[&key][0],
            "{group}"
        );
    }
    sink.pool().close().await;
    drop_db(&db_name).await;
}

fn pg_base() -> String {
    std::env::var("CUSTFLOW_TEST_PG")
        .unwrap_or_else(|_| "postgres://postgres@127.0.0.1:5432/test".into())
}

/// A fresh PostgreSQL database for this run (the table has no deployment prefix): its
/// URL and name.
async fn sales_db() -> (String, String) {
    use sqlx::Connection;
    let base = pg_base();
    let name = custflow_tests::unique("sales_").replace('-', "_");
    let mut admin = sqlx::PgConnection::connect(&base).await.unwrap();
    sqlx::query(&format!("CREATE DATABASE {name}"))
        .execute(&mut admin)
        .await
        .unwrap();
    let (root, _) = base.rsplit_once('/').unwrap();
    (format!("{root}/{name}"), name)
}

async fn drop_db(name: &str) {
    use sqlx::Connection;
    let mut admin = sqlx::PgConnection::connect(&pg_base()).await.unwrap();
    sqlx::query(&format!("DROP DATABASE {name} WITH (FORCE)"))
        .execute(&mut admin)
        .await
        .unwrap();
}

async fn serve(keys: &Keys) -> String {
    let redis = custflow_tests::redis_conn().await;
    let api_keys = custflow_http::auth::ApiKeys::parse(
        "analyst-key-0123456789=sales:read;reader-key-0123456789=features:read",
    )
    .unwrap();
    let app = custflow_http::sales::routes()
        .with_state(custflow_http::sales::SalesState {
            redis: redis.clone(),
            keys: keys.clone(),
        })
        .merge(custflow_http::features::routes().with_state(
            custflow_http::features::FeatureState {
                redis,
                keys: keys.clone(),
                model: Default::default(),
                at_risk_days: custflow_feature_store::features::DEFAULT_AT_RISK_DAYS,
            },
        ))
        .into_router(custflow_http::auth::Access::new(
            api_keys,
            Default::default(),
        ));
    custflow_tests::serve(app).await
}
