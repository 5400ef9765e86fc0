//! A champion switch mid-stream, against the real broker and Redis: while orders keep
//! arriving, a new model becomes current; the processor rescores every customer once, so
//! each customer's latest score names the new model, and per-customer versions only grow.
//! A processor stopped mid-pass leaves the rest of the pass to the next one.

#![allow(clippy::unwrap_used)] // tests fail loudly on purpose

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use custflow_feature_store::keys::Keys;
use custflow_feature_store::model::{rollout, ModelHandle};
use custflow_kafka::admin::client_config;
use custflow_kafka::client as kafka;
use custflow_models::artefact::ModelArtefact;
use custflow_processors::metrics::Metrics;
use custflow_processors::runtime::{BatchHook, BoxFuture, Changed, Rescore, Scored, Tick};
use custflow_processors::scoring::Scorer;
use custflow_processors::store::Store;
use custflow_processors::{Clock, Processor, ProcessorConfig};
use custflow_schemas::registry::Registry;
use custflow_schemas::topics::{self, Topics};
use custflow_schemas::{avro, json, CustomerScore, Event};
use rdkafka::consumer::{Consumer, StreamConsumer};
use rdkafka::producer::{FutureProducer, FutureRecord};
use rdkafka::Message;

/// Makes `next` current at the following tick, like a model job publishing a champion.
struct Switch {
    model: ModelHandle,
    next: Mutex<Option<ModelArtefact>>,
}

impl Tick for Switch {
    fn tick(&self) -> BoxFuture<'_, custflow_processors::Result<Option<String>>> {
        Box::pin(async move {
            if let Some(next) = self.next.lock().unwrap().take() {
                self.model.set(next);
            }
            Ok(self.model.current().map(|m| m.version.clone()))
        })
    }
}

fn artefact(version: &str) -> ModelArtefact {
    let text =
        std::fs::read_to_string(custflow_tests::repo_root().join("connectors/tests/model.json"))
            .unwrap();
    let mut m: ModelArtefact = serde_json::from_str(&text).unwrap();
    m.version = version.into();
    m
}

async fn send_orders(
    producer: &FutureProducer,
    topic: &str,
    customers: std::ops::Range<u32>,
    day: i64,
) {
    let sends = customers.map(|c| {
        let id = format!("cust-{c:04}");
        let e = Event::Order(custflow_tests::placed_order(
            format!("e-{c}-{day}"),
            format!("o-{c}-{day}"),
            &id,
            20_000 + day,
            10.0 + f64::from(c % 7),
        ));
        let payload = json::encode(&e);
        async move {
            producer
                .send(
                    FutureRecord::to(topic).key(&id).payload(&payload),
                    Duration::from_secs(30),
                )
                .await
                .unwrap();
        }
    });
    futures::future::join_all(sends).await;
}

/// The scorer, failing (retryably, as if Redis were away) every slice of a rescoring
/// pass beyond the `slices` it may still score, so a test can stop a processor mid-pass
/// at a known place; and failing the delivery of the pass slice numbered `fail_delivery`
/// (counted in `scored`) after the broker acknowledged its scores, as a lost
/// acknowledgement would.
struct Gated {
    scorer: Scorer,
    slices: Arc<AtomicU64>,
    scored: Arc<AtomicU64>,
    fail_delivery: Arc<AtomicU64>,
}

impl BatchHook for Gated {
    fn on_batch<'a>(
        &'a self,
        changed: &'a mut [Changed<'a>],
        as_of: i64,
    ) -> BoxFuture<'a, custflow_processors::Result<Scored>> {
        let slice = changed.iter().any(|c| c.cause == Rescore::NewModel);
        let open = || {
            self.slices
                .fetch_update(Ordering::SeqCst, Ordering::SeqCst, |n| n.checked_sub(1))
                .is_ok()
        };
        if slice && !open() {
            return Box::pin(async { Err(custflow_processors::Error::Conflict(Vec::new())) });
        }
        let fail = slice
            && self.scored.fetch_add(1, Ordering::SeqCst) + 1
                == self.fail_delivery.load(Ordering::SeqCst);
        let scored = self.scorer.on_batch(changed, as_of);
        Box::pin(async move {
            let mut scored = scored.await?;
            if fail {
                let delivered = scored.delivered;
                scored.delivered = Box::pin(async move {
                    delivered.await?;
                    Err(custflow_processors::Error::Conflict(Vec::new()))
                });
            }
            Ok(scored)
        })
    }
}

/// A running processor with scoring.
struct Running {
    metrics: Arc<Metrics>,
    /// Pass slices it may still score (no limit unless a test sets one).
    slices: Arc<AtomicU64>,
    /// Pass slices scored so far, and the one whose delivery fails (none unless a test
    /// sets one).
    scored: Arc<AtomicU64>,
    fail_delivery: Arc<AtomicU64>,
    stop: tokio::sync::watch::Sender<bool>,
    handle: tokio::task::JoinHandle<()>,
}

impl Running {
    async fn start(
        brokers: &str,
        names: &Topics,
        registry: &Arc<Registry>,
        switch: &Arc<Switch>,
        rescore_slice: usize,
    ) -> Self {
        let out_ids = registry.register_outputs(names).await.unwrap();
        let metrics = Arc::new(Metrics::default());
        let mut cfg = ProcessorConfig::new(
            brokers,
            &custflow_tests::redis_url(),
            names.clone(),
            Clock::event(0),
        );
        cfg.sweep_every = Duration::from_millis(200);
        cfg.rescore_slice = rescore_slice;
        let p = Processor::new(cfg, registry.clone(), metrics.clone())
            .await
            .unwrap();
        let scorer = Scorer::new(
            p.producer().clone(),
            names.clone(),
            switch.model.clone(),
            metrics.clone(),
            45.0,
            out_ids,
        );
        let slices = Arc::new(AtomicU64::new(u64::MAX));
        let scored = Arc::new(AtomicU64::new(0));
        let fail_delivery = Arc::new(AtomicU64::new(0));
        let gated = Gated {
            scorer,
            slices: slices.clone(),
            scored: scored.clone(),
            fail_delivery: fail_delivery.clone(),
        };
        let p = p.with_hook(Arc::new(gated)).with_tick(switch.clone());
        let (stop, rx) = tokio::sync::watch::channel(false);
        let handle = tokio::spawn(async move { p.run(rx).await.unwrap() });
        Self {
            metrics,
            slices,
            scored,
            fail_delivery,
            stop,
            handle,
        }
    }

    async fn stop(self) -> Arc<Metrics> {
        self.stop.send(true).unwrap();
        self.handle.await.unwrap();
        self.metrics
    }

    async fn wait(&self, what: &str, done: impl Fn(&Metrics) -> bool) {
        custflow_tests::wait_until(Duration::from_secs(60), what, || {
            let m = self.metrics.clone();
            let ok = done(&m);
            async move { ok.then_some(()) }
        })
        .await;
    }
}

/// A fresh deployment's broker address, topics (created) and schema registry.
async fn deployment(prefix: &str) -> (String, Topics, Arc<Registry>) {
    let (brokers, names) = custflow_tests::deployment(prefix).await;
    (brokers, names, Arc::new(Registry::in_memory()))
}

fn switch(model: &str) -> Arc<Switch> {
    let handle = ModelHandle::default();
    handle.set(artefact(model));
    Arc::new(Switch {
        model: handle,
        next: Mutex::new(None),
    })
}

/// The first `n` scores on the score topic, each with the produce time of the event
/// behind it (when it has one) and its own message time.
async fn scores(
    brokers: &str,
    names: &Topics,
    n: u64,
) -> Vec<(CustomerScore, Option<i64>, Option<i64>)> {
    let consumer: StreamConsumer = client_config(brokers)
        .set("group.id", custflow_tests::unique("champ-check-"))
        .set("auto.offset.reset", "earliest")
        .create()
        .unwrap();
    consumer
        .subscribe(&[&names.name(topics::CUSTOMER_SCORES)])
        .unwrap();
    let mut out = Vec::new();
    for _ in 0..n {
        let m = tokio::time::timeout(Duration::from_secs(30), consumer.recv())
            .await
            .expect("fewer scores on the topic than emitted")
            .unwrap();
        let (_, datum) = avro::unframe(m.payload().unwrap()).unwrap();
        let s: CustomerScore = avro::decode_record("CustomerScore", datum).unwrap();
        out.push((s, kafka::event_time(&m), m.timestamp().to_millis()));
    }
    out
}

/// Each customer's latest score; per customer, versions only grow.
fn latest(scores: &[(CustomerScore, Option<i64>, Option<i64>)]) -> HashMap<String, CustomerScore> {
    latest_with(scores, false)
}

/// Each customer's latest score; per customer, versions only grow, or repeat where
/// `repeats` (a score sent again after a failure).
fn latest_with(
    scores: &[(CustomerScore, Option<i64>, Option<i64>)],
    repeats: bool,
) -> HashMap<String, CustomerScore> {
    let mut latest: HashMap<String, CustomerScore> = HashMap::new();
    for (s, _, _) in scores {
        if let Some(prev) = latest.get(&s.customer_id) {
            assert!(
                s.version > prev.version || (repeats && s.version == prev.version),
                "{}: version {} after {}",
                s.customer_id,
                s.version,
                prev.version
            );
        }
        latest.insert(s.customer_id.clone(), s.clone());
    }
    latest
}

/// The customers whose latest score does not name `model`.
fn stale<'a>(latest: &'a HashMap<String, CustomerScore>, model: &str) -> Vec<&'a str> {
    latest
        .values()
        .filter(|s| s.model_version != model)
        .map(|s| s.customer_id.as_str())
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_new_champion_mid_stream_rescores_every_customer() {
    let (brokers, names, registry) = deployment("champ-").await;
    let switch = switch("model-a");
    // Several slices, interleaved with live batches.
    let p = Running::start(&brokers, &names, &registry, &switch, 40).await;

    let producer: FutureProducer = client_config(&brokers).create().unwrap();
    let orders = names.name(topics::ORDERS);
    send_orders(&producer, &orders, 0..400, 0).await;
    // The partitions' first pass, with model-a, and the orders scored.
    p.wait("400 first scores", |m| {
        Metrics::get(&m.applied) >= 400 && Metrics::get(&m.model_passes_done) == 1
    })
    .await;
    let rescored_before = Metrics::get(&p.metrics.model_rescored);

    // The switch, with orders still flowing: repeat orders of some, new customers.
    *switch.next.lock().unwrap() = Some(artefact("model-b"));
    send_orders(&producer, &orders, 300..500, 3).await;
    p.wait("the rescoring pass", |m| {
        Metrics::get(&m.model_passes_done) == 2
            && Metrics::get(&m.model_rescored) >= rescored_before + 400
            && Metrics::get(&m.applied) >= 600
    })
    .await;
    send_orders(&producer, &orders, 0..50, 5).await;
    p.wait("the last orders", |m| Metrics::get(&m.applied) >= 650)
        .await;
    let metrics = p.stop().await;

    // Every score on the topic: per customer, versions grow; the latest names model-b.
    let all = scores(&brokers, &names, Metrics::get(&metrics.scores_emitted)).await;
    let latest = latest(&all);
    assert_eq!(latest.len(), 500, "every customer has a score");
    let stale = stale(&latest, "model-b");
    assert!(stale.is_empty(), "still scored by the old model: {stale:?}");
    let model_a = all
        .iter()
        .filter(|(s, _, _)| s.model_version == "model-a")
        .count();
    assert!(model_a >= 400, "{model_a} scores by model-a");
    // Scores with the time of the event behind them, and without (the passes', sweeps').
    for (s, event, produced) in &all {
        if let Some(at) = event {
            // The event came first: its produce time is not after the score's.
            assert!(
                produced.is_some_and(|t| *at <= t),
                "{}: event time {at} after the score's {produced:?}",
                s.customer_id
            );
        }
    }
    let with_event_time = all.iter().filter(|(_, e, _)| e.is_some()).count() as u64;
    let without_event_time = all.len() as u64 - with_event_time;
    // Each of the first 400 orders scored a new customer.
    assert!(
        with_event_time >= 400,
        "{with_event_time} with an event time"
    );
    assert!(
        without_event_time >= Metrics::get(&metrics.model_rescored),
        "{without_event_time} scores without an event time, {} rescored by the passes",
        Metrics::get(&metrics.model_rescored)
    );
}

/// A newer model promoted while a rollout is under way: the pass goes on with the newest
/// model instead of starting a second full pass, every customer's latest score names the
/// newest, and no customer is rescored more than once per promotion. The rollout's
/// progress, as `GET /v1/models/current` reads it from Redis, follows.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_promotion_during_a_rollout_continues_it_with_the_newest_model() {
    let (brokers, names, registry) = deployment("champ-newest-").await;
    let keys = Keys::new(names.name(""));
    let mut conn = custflow_tests::redis_conn().await;
    let switch = switch("model-a");
    let p = Running::start(&brokers, &names, &registry, &switch, 40).await;
    let producer: FutureProducer = client_config(&brokers).create().unwrap();
    send_orders(&producer, &names.name(topics::ORDERS), 0..400, 0).await;
    p.wait("400 scores and model-a's pass", |m| {
        Metrics::get(&m.applied) >= 400 && Metrics::get(&m.model_passes_done) == 1
    })
    .await;
    let a = rollout(&mut conn, &keys, "model-a").await.unwrap().unwrap();
    assert!(a.done && a.rescored == 400 && a.customers == 400, "{a:?}");
    let before = Metrics::get(&p.metrics.model_rescored);

    // model-b's rollout gets one slice of 40 customers, then model-c is promoted.
    p.slices.store(1, Ordering::SeqCst);
    *switch.next.lock().unwrap() = Some(artefact("model-b"));
    p.wait("the first slice with model-b", |m| {
        Metrics::get(&m.model_rescored) > before
    })
    .await;
    let b = rollout(&mut conn, &keys, "model-b").await.unwrap().unwrap();
    assert!(!b.done && b.rescored > 0 && b.rescored < 400, "{b:?}");
    assert!(b.progress > 0.0 && b.progress < 1.0, "{b:?}");
    assert!(Metrics::get(&p.metrics.rollout_running) > 0);
    *switch.next.lock().unwrap() = Some(artefact("model-c"));
    p.slices.store(u64::MAX, Ordering::SeqCst);
    p.wait("model-c's pass", |m| {
        Metrics::get(&m.model_passes_done) == 2
    })
    .await;
    let c = rollout(&mut conn, &keys, "model-c").await.unwrap().unwrap();
    assert!(c.done && c.rescored == 400 && c.progress == 1.0, "{c:?}");
    assert_eq!(c.partitions, c.partitions_done);
    assert_eq!(Metrics::get(&p.metrics.rollout_running), 0);
    let m = p.stop().await;
    let rescored = Metrics::get(&m.model_rescored) - before;
    // One slice of model-b, then model-c once over everyone: not two full passes.
    assert!(
        (400..=400 + 40).contains(&rescored),
        "{rescored} customers rescored after model-a's pass"
    );

    let all = scores(&brokers, &names, Metrics::get(&m.scores_emitted)).await;
    let latest = latest(&all);
    assert_eq!(latest.len(), 400);
    let stale = stale(&latest, "model-c");
    assert!(
        stale.is_empty(),
        "not scored by the newest model: {stale:?}"
    );
    let mut per: HashMap<(&str, &str), usize> = HashMap::new();
    for (s, _, _) in &all {
        *per.entry((s.customer_id.as_str(), s.model_version.as_str()))
            .or_default() += 1;
    }
    let twice: Vec<_> = per
        .iter()
        .filter(|((_, model), n)| *model != "model-a" && **n > 1)
        .collect();
    assert!(
        twice.is_empty(),
        "rescored twice by one promotion: {twice:?}"
    );
    let by_b = per.keys().filter(|(_, model)| *model == "model-b").count();
    assert!(
        (1..=40).contains(&by_b),
        "{by_b} customers scored by model-b"
    );
}

/// The pass's cursor is saved with the states it rescored: a processor stopped mid-pass
/// (a deploy, a crash) leaves the rest to its successor, which neither starts over nor
/// drops it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_restarted_processor_resumes_the_rescoring_pass() {
    let (brokers, names, registry) = deployment("champ-resume-").await;
    let switch = switch("model-a");
    // Forty customers a slice, five from each of the 8 partitions: the 400 customers
    // take ten slices.
    let first = Running::start(&brokers, &names, &registry, &switch, 40).await;
    let producer: FutureProducer = client_config(&brokers).create().unwrap();
    send_orders(&producer, &names.name(topics::ORDERS), 0..400, 0).await;
    first
        .wait("400 scores and model-a's pass", |m| {
            Metrics::get(&m.applied) >= 400 && Metrics::get(&m.model_passes_done) == 1
        })
        .await;
    let before = Metrics::get(&first.metrics.model_rescored);
    // One slice with model-b, then the processor is stopped mid-pass.
    first.slices.store(1, Ordering::SeqCst);
    *switch.next.lock().unwrap() = Some(artefact("model-b"));
    first
        .wait("the first slice with model-b", |m| {
            Metrics::get(&m.model_rescored) > before
        })
        .await;
    let first = first.stop().await;
    let by_first = Metrics::get(&first.model_rescored) - before;
    assert_eq!(
        Metrics::get(&first.model_passes_done),
        1,
        "model-b's pass ended before the stop"
    );

    // The successor starts with model-b current, as after a restart; ten new customers
    // order (its event clock starts with them).
    let second = Running::start(&brokers, &names, &registry, &self::switch("model-b"), 40).await;
    send_orders(&producer, &names.name(topics::ORDERS), 400..410, 1).await;
    second
        .wait("the rest of model-b's pass", |m| {
            Metrics::get(&m.model_passes_done) == 1
        })
        .await;
    let second = second.stop().await;
    let by_second = Metrics::get(&second.model_rescored);
    // Starting over would rescore all 410.
    assert!(
        by_second < 410 && by_first + by_second >= 400,
        "the first rescored {by_first}, the second {by_second}: not a resumed pass"
    );
    let emitted = Metrics::get(&first.scores_emitted) + Metrics::get(&second.scores_emitted);
    let latest = latest(&scores(&brokers, &names, emitted).await);
    assert_eq!(latest.len(), 410, "every customer has a score");
    let stale = stale(&latest, "model-b");
    assert!(stale.is_empty(), "still scored by the old model: {stale:?}");
}

/// Slices of a pass overlap (the next one is read, scored and sent while the last is
/// acknowledged and saved): when a slice's acknowledgements fail, neither it nor the
/// slice scored after it is saved, and both are done again: the pass rescores every
/// customer once in effect (no slice skipped, none saved twice), and the scores sent
/// before the failure come again with the same version.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_slice_whose_delivery_failed_is_rescored_with_the_one_after_it() {
    let (brokers, names, registry) = deployment("champ-redo-").await;
    let switch = switch("model-a");
    // Forty customers a slice: the 400 customers take ten slices.
    let p = Running::start(&brokers, &names, &registry, &switch, 40).await;
    let producer: FutureProducer = client_config(&brokers).create().unwrap();
    send_orders(&producer, &names.name(topics::ORDERS), 0..400, 0).await;
    p.wait("400 scores and model-a's pass", |m| {
        Metrics::get(&m.applied) >= 400 && Metrics::get(&m.model_passes_done) == 1
    })
    .await;
    let before = Metrics::get(&p.metrics.model_rescored);
    // The third slice of model-b's pass loses its acknowledgements.
    let third = p.scored.load(Ordering::SeqCst) + 3;
    p.fail_delivery.store(third, Ordering::SeqCst);
    *switch.next.lock().unwrap() = Some(artefact("model-b"));
    p.wait("model-b's pass", |m| {
        Metrics::get(&m.model_passes_done) == 2
    })
    .await;
    // At least ten slices of forty, and the failed one and the one after it again.
    let slices = p.scored.load(Ordering::SeqCst) - (third - 3);
    assert!(slices >= 12, "{slices} slices scored by model-b's pass");
    let m = p.stop().await;
    assert_eq!(
        Metrics::get(&m.model_rescored) - before,
        400,
        "customers saved as rescored by model-b's pass"
    );

    let all = scores(&brokers, &names, Metrics::get(&m.scores_emitted)).await;
    let latest = latest_with(&all, true);
    assert_eq!(latest.len(), 400);
    let stale = stale(&latest, "model-b");
    assert!(stale.is_empty(), "skipped by model-b's pass: {stale:?}");
    let mut per: HashMap<&str, usize> = HashMap::new();
    for (s, _, _) in all.iter().filter(|(s, _, _)| s.model_version == "model-b") {
        *per.entry(s.customer_id.as_str()).or_default() += 1;
    }
    let again = per.values().filter(|n| **n > 1).count();
    // The failed slice's forty customers at least were sent twice.
    assert!(again >= 40, "{again} customers scored twice by model-b");
}

/// The clock sweep, as it takes its turns between batches: when the event clock passes
/// the at-risk threshold of customers who stopped ordering, each of them is rescored
/// without an event of their own, and their latest score says at risk.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_clock_sweep_rescores_customers_who_go_quiet() {
    let (brokers, names, registry) = deployment("champ-sweep-").await;
    let switch = switch("model-a");
    let p = Running::start(&brokers, &names, &registry, &switch, 40).await;
    let producer: FutureProducer = client_config(&brokers).create().unwrap();
    let orders = names.name(topics::ORDERS);
    send_orders(&producer, &orders, 0..40, 0).await;
    p.wait("40 scores and the first pass", |m| {
        Metrics::get(&m.applied) >= 40 && Metrics::get(&m.model_passes_done) == 1
    })
    .await;
    let swept_before = Metrics::get(&p.metrics.clock_rescored);

    // Sixty days later (at risk after 45) others order: the clock moves on.
    send_orders(&producer, &orders, 100..110, 60).await;
    p.wait("the quiet customers rescored by the clock", |m| {
        Metrics::get(&m.applied) >= 50 && Metrics::get(&m.clock_rescored) >= swept_before + 40
    })
    .await;
    let m = p.stop().await;
    let scores = scores(&brokers, &names, Metrics::get(&m.scores_emitted)).await;
    let latest = latest(&scores);
    let quiet: Vec<&CustomerScore> = (0..40).map(|c| &latest[&format!("cust-{c:04}")]).collect();
    let not_at_risk: Vec<&str> = quiet
        .iter()
        .filter(|s| !s.at_risk)
        .map(|s| s.customer_id.as_str())
        .collect();
    assert!(not_at_risk.is_empty(), "not at risk: {not_at_risk:?}");
    // A score at risk follows each one's not-at-risk first score, caused by no event.
    for (s, event_ms, _) in &scores {
        if s.at_risk && s.customer_id.as_str() < "cust-0040" {
            assert_eq!(
                *event_ms, None,
                "{}: an event-caused at-risk score",
                s.customer_id
            );
        }
    }
}

/// The last-order index read by place, as the pass and the sweep read it: pages that
/// start after the last place of the one before cover every customer once and in order,
/// also across customers tied at one time (more of them than a page holds), and a bound
/// stops at a time.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_last_order_index_pages_by_place_across_ties() {
    let keys = Keys::new(custflow_tests::unique("idx-"));
    let store = Store::connect(&custflow_tests::redis_url(), keys.clone())
        .await
        .unwrap();
    let mut members: Vec<(i64, String)> = (0..25)
        .map(|i| (100, format!("t{i:02}")))
        .chain((0..5).map(|i| (200 + i, format!("u{i}"))))
        .collect();
    let mut add = redis::cmd("ZADD");
    add.arg(keys.last_order_index(3));
    for (at, c) in &members {
        add.arg(*at).arg(c);
    }
    let () = add.query_async(&mut store.connection()).await.unwrap();

    let mut seen = Vec::new();
    let mut after = None;
    loop {
        let page = store.index_after(3, after.as_ref(), None, 4).await.unwrap();
        assert!(page.len() <= 4, "{page:?}");
        let Some(last) = page.last().cloned() else {
            break;
        };
        after = Some(last);
        seen.extend(page);
    }
    members.sort();
    assert_eq!(seen, members);

    let bounded = store
        .index_after(3, Some(&(100, "t20".into())), Some(201), 10)
        .await
        .unwrap();
    let ids: Vec<&str> = bounded.iter().map(|(_, c)| c.as_str()).collect();
    assert_eq!(ids, ["t21", "t22", "t23", "t24", "u0", "u1"]);
}
