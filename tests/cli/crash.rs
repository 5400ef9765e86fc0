//! Crash test: while 200,000 synthetic events flow, `kill -9` the processor at random
//! moments while it works, six times, each time started again at once the way a user or
//! a supervisor does (`custflow process`, no instance id); afterwards every customer's
//! features equal a recomputation from the topic contents — nothing lost, nothing counted
//! twice. A restart at a commit inside a producer batch skips nothing. Three instances
//! joining under load share the 8 partitions and arrive at the same features as one; a
//! member leaving under load (SIGTERM) or killed (SIGKILL) hands its partitions over. An
//! explicit instance id that a running process holds is refused with the reason.

use std::collections::HashMap;
use std::process::{Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use custflow_feature_store::features::compute;
use custflow_feature_store::keys::Keys;
use custflow_feature_store::state::{CustomerState, SourcePos};
use custflow_ingest::producer::{EventProducer, Format};
use custflow_ingest::synth::{Generator, SynthParams};
use custflow_schemas::avro::AvroCodec;
use custflow_schemas::time::DAY_MS;
use custflow_schemas::topics::Topics;
use custflow_schemas::{Event, ValidationContext};

use crate::Proc;
use rand::{Rng, SeedableRng};
use rdkafka::Message;

const EVENTS: usize = 200_000;

/// A processor started as the README tells a user (`custflow process`, no instance id),
/// in the deployment `prefix`.
pub(crate) fn spawn(prefix: &str, brokers: &str) -> Proc {
    spawn_on(prefix, brokers, "127.0.0.1:0")
}

/// An instance serving its metrics on `http`.
pub(crate) fn spawn_on(prefix: &str, brokers: &str, http: &str) -> Proc {
    spawn_with(prefix, brokers, http, &[])
}

/// A processor instance with `more` arguments.
pub(crate) fn spawn_with(prefix: &str, brokers: &str, http: &str, more: &[&str]) -> Proc {
    // Each instance's log goes to the temp folder, for diagnosis when the test fails.
    let log = std::env::temp_dir().join(format!("{prefix}{}.log", ulid::Ulid::new()));
    Proc(
        Command::new(env!("CARGO_BIN_EXE_custflow"))
            .args([
                "process",
                "--clock",
                "event",
                "--topic-prefix",
                prefix,
                "--brokers",
                brokers,
                "--batch-max",
                "2000",
                "--http",
                http,
            ])
            .args(more)
            .env("CUSTFLOW_LOG", "info")
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(log).unwrap())
            .spawn()
            .unwrap(),
    )
}

/// Decodes an input message and applies it to its customer's state in `states` the way
/// the processor does; gives the event back.
pub(crate) fn apply_input(
    names: &Topics,
    codec: &AvroCodec,
    ctx: &ValidationContext,
    m: &rdkafka::message::BorrowedMessage<'_>,
    states: &mut HashMap<String, CustomerState>,
) -> Event {
    let (kind, e) = custflow_tests::decode_input(names, codec, ctx, m);
    let pos = SourcePos {
        topic: kind as u8,
        partition: m.partition(),
        offset: m.offset(),
    };
    states
        .entry(e.customer_id().to_owned())
        .or_default()
        .apply(&e, pos)
        .unwrap();
    e
}

/// Reads every input topic from the beginning until all `events` are seen and applies
/// them the way the processor does, one after another: the reference. (Counting
/// messages, not watermarks: tansu's high watermark can trail acknowledged writes.)
fn recompute(brokers: &str, names: &Topics, events: usize) -> HashMap<String, CustomerState> {
    let consumer = custflow_tests::input_reader(brokers, names, "crash-check-");
    let codec = AvroCodec::builtin();
    let ctx = ValidationContext::now();
    let mut states: HashMap<String, CustomerState> = HashMap::new();
    let mut seen = 0;
    let deadline = Instant::now() + Duration::from_secs(300);
    while seen < events {
        assert!(
            Instant::now() < deadline,
            "read only {seen} of {events} events back"
        );
        let Some(m) = consumer.poll(Duration::from_secs(1)) else {
            continue;
        };
        apply_input(names, &codec, &ctx, &m.unwrap(), &mut states);
        seen += 1;
    }
    states
}

/// `n` synthetic events of a year ending now (which it returns) for `customers`.
pub(crate) fn synthetic(seed: u64, customers: u64, n: usize) -> (i64, Vec<Event>) {
    let now = custflow_schemas::time::now_ms();
    let params = SynthParams {
        seed,
        customers,
        start_ms: now - 365 * DAY_MS,
        end_ms: now,
        ..Default::default()
    };
    let events: Vec<Event> = Generator::new(params).unwrap().take(n).collect();
    assert_eq!(
        events.len(),
        n,
        "{customers} customers make fewer than {n} events"
    );
    (now, events)
}

/// A fresh deployment on the local broker and `n` synthetic events for it.
pub(crate) struct Deployment {
    pub(crate) brokers: String,
    pub(crate) prefix: String,
    pub(crate) names: Topics,
    pub(crate) now: i64,
    pub(crate) events: Vec<Event>,
}

pub(crate) async fn deployment(label: &str, seed: u64, customers: u64, n: usize) -> Deployment {
    let brokers = custflow_tests::ensure_stack();
    let prefix = custflow_tests::unique(label) + ".";
    let names = Topics::new(prefix.clone());
    custflow_kafka::ensure_topics(&brokers, &names, Duration::from_secs(20))
        .await
        .unwrap();
    let (now, events) = synthetic(seed, customers, n);
    Deployment {
        brokers,
        prefix,
        names,
        now,
        events,
    }
}

impl Deployment {
    /// Produces the events, pausing `pause` after every `every` of them (the load's
    /// shape), and checks every delivery succeeded.
    pub(crate) fn produce(&mut self, every: usize, pause: Duration) -> tokio::task::JoinHandle<()> {
        let (brokers, names) = (self.brokers.clone(), self.names.clone());
        let events = std::mem::take(&mut self.events);
        tokio::task::spawn_blocking(move || {
            let codec = Arc::new(AvroCodec::builtin());
            let mut p = EventProducer::new(&brokers, names, codec, Format::Avro).unwrap();
            for (i, e) in events.iter().enumerate() {
                p.send(e).unwrap();
                if i % every == every - 1 {
                    std::thread::sleep(pause);
                }
            }
            p.flush(Duration::from_secs(60)).unwrap();
            assert_eq!(
                p.deliveries()
                    .failed
                    .load(std::sync::atomic::Ordering::Relaxed),
                0
            );
        })
    }

    /// The reference recomputed from the topics (`n` events), and the stored states of
    /// its customers once they have applied all of them (within 5 minutes).
    pub(crate) async fn applied(
        &self,
        n: usize,
    ) -> (
        HashMap<String, CustomerState>,
        Vec<String>,
        Vec<Option<CustomerState>>,
    ) {
        self.applied_in(n, &custflow_tests::redis_url()).await
    }

    /// [`Deployment::applied`] with the states in the Redis at `redis_url`.
    pub(crate) async fn applied_in(
        &self,
        n: usize,
        redis_url: &str,
    ) -> (
        HashMap<String, CustomerState>,
        Vec<String>,
        Vec<Option<CustomerState>>,
    ) {
        let (b2, n2) = (self.brokers.clone(), self.names.clone());
        let reference = tokio::task::spawn_blocking(move || recompute(&b2, &n2, n))
            .await
            .unwrap();
        let ids: Vec<String> = reference.keys().cloned().collect();
        let expected: u64 = reference.values().map(|s| s.applied).sum();
        assert_eq!(expected, n as u64);
        let keys = Keys::new(self.prefix.clone());
        let deadline = Instant::now() + Duration::from_secs(300);
        loop {
            let states = custflow_tests::read_states_at(redis_url, &keys, &ids).await;
            let applied: u64 = states.iter().flatten().map(|s| s.applied).sum();
            if applied >= expected {
                return (reference, ids, states);
            }
            assert!(
                Instant::now() < deadline,
                "only {applied} of {expected} events applied after 5 minutes"
            );
            tokio::time::sleep(Duration::from_millis(500)).await;
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kill_nine_loses_and_doubles_nothing() {
    let _turn = crate::HEAVY.lock().await;
    // The flow: 200,000 synthetic events, produced while the processors crash and restart.
    let mut d = deployment("crash-", 7, 40_000, EVENTS).await;
    // Paced over about a minute, so every round has events to work on.
    let producer_task = d.produce(2_000, Duration::from_millis(600));

    let mut rng = rand::rngs::StdRng::seed_from_u64(11);
    for _round in 0..6 {
        // One instance, killed while it works at a random moment and started again at
        // once: the killed one's lease still counts for up to 10 s, during which the new
        // one owns part of the partitions, then all of them.
        let addr = format!("127.0.0.1:{}", crate::free_port());
        let mut a = spawn_on(&d.prefix, &d.brokers, &addr);
        applying(&addr).await;
        tokio::time::sleep(Duration::from_millis(rng.gen_range(100..1500))).await;
        a.kill().unwrap(); // SIGKILL: no clean shutdown, no final commit
        a.wait().unwrap();
    }
    producer_task.await.unwrap();

    // A last instance runs until everything is applied.
    let mut last = spawn(&d.prefix, &d.brokers);
    let (reference, ids, states) = d.applied(EVENTS).await;
    last.kill().unwrap();
    last.wait().unwrap();

    assert_same(&reference, &ids, &states, d.now + DAY_MS);
}

/// Waits (up to a minute) until the instance serving metrics on `addr` has applied
/// events.
async fn applying(addr: &str) {
    let deadline = Instant::now() + Duration::from_secs(60);
    while std::net::TcpStream::connect(addr).is_err()
        || counter(addr, "custflow_events_applied_total") == 0
    {
        assert!(
            Instant::now() < deadline,
            "the instance on {addr} applied nothing in 60 s"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// Every customer's stored state has applied what the reference did and gives the same
/// features.
pub(crate) fn assert_same(
    reference: &HashMap<String, CustomerState>,
    ids: &[String],
    states: &[Option<CustomerState>],
    as_of: i64,
) {
    let mut mismatches = Vec::new();
    for (id, got) in ids.iter().zip(states) {
        let want = &reference[id];
        let Some(got) = got else {
            mismatches.push(format!("{id}: missing"));
            continue;
        };
        if got.applied != want.applied || compute(got, as_of, 45.0) != compute(want, as_of, 45.0) {
            mismatches.push(format!("{id}: applied {} vs {}", got.applied, want.applied));
        }
    }
    assert!(
        mismatches.is_empty(),
        "{} customers differ, e.g. {:?}",
        mismatches.len(),
        &mismatches[..mismatches.len().min(5)]
    );
}

/// A counter of an instance's `/metrics`: the sum of its series (one when unlabelled),
/// 0 while it has none.
pub(crate) fn counter(addr: &str, name: &str) -> u64 {
    let (_, text) = crate::get(addr, "/metrics");
    text.lines()
        .filter_map(|l| {
            let rest = l.strip_prefix(name)?;
            let value = match rest.strip_prefix('{') {
                Some(labelled) => labelled.split_once("} ")?.1,
                None => rest.strip_prefix(' ')?,
            };
            value.parse::<u64>().ok()
        })
        .sum()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn three_instances_share_the_partitions_and_equal_one() {
    const N: usize = 40_000;
    let _turn = crate::HEAVY.lock().await;
    let mut d = deployment("scale-", 9, 8_000, N).await;

    // Three instances at once over the 8 partitions of each input topic.
    let addrs: Vec<String> = (0..3)
        .map(|_| format!("127.0.0.1:{}", crate::free_port()))
        .collect();
    let mut children: Vec<Proc> = addrs
        .iter()
        .map(|a| spawn_on(&d.prefix, &d.brokers, a))
        .collect();
    let up = Instant::now() + Duration::from_secs(60);
    for a in &addrs {
        while std::net::TcpStream::connect(a).is_err() {
            assert!(Instant::now() < up, "instance on {a} did not start");
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }
    // Paced over about 15 s, so the group settles while events flow.
    d.produce(200, Duration::from_millis(75)).await.unwrap();
    let (reference, ids, states) = d.applied(N).await;
    // Each instance applied its share; together exactly every event once.
    let applied: Vec<u64> = addrs
        .iter()
        .map(|a| counter(a, "custflow_events_applied_total"))
        .collect();
    for c in &mut children {
        c.kill().unwrap();
        c.wait().unwrap();
    }
    assert!(applied.iter().all(|n| *n > 0), "{applied:?}");
    assert_eq!(applied.iter().sum::<u64>(), N as u64, "{applied:?}");
    assert_same(&reference, &ids, &states, d.now + DAY_MS);
}

/// Two instances share the partitions while events flow; one leaves while it works —
/// SIGTERM (it finishes its batch, commits and gives its lease up) or SIGKILL (its lease
/// runs out) — and the other takes its partitions over: every event applied exactly
/// once, and the survivor applied the rest.
async fn a_member_goes_under_load_and_the_other_takes_over(signal: &str, seed: u64) {
    const N: usize = 40_000;
    let _turn = crate::HEAVY.lock().await;
    let mut d = deployment("leave-", seed, 8_000, N).await;
    // Paced over about 30 s.
    let producing = d.produce(200, Duration::from_millis(150));
    let (a_addr, b_addr) = (
        format!("127.0.0.1:{}", crate::free_port()),
        format!("127.0.0.1:{}", crate::free_port()),
    );
    let mut a = spawn_on(&d.prefix, &d.brokers, &a_addr);
    let mut b = spawn_on(&d.prefix, &d.brokers, &b_addr);
    applying(&a_addr).await;
    applying(&b_addr).await;
    let sent = Command::new("kill")
        .args([signal, &b.id().to_string()])
        .status()
        .unwrap();
    assert!(sent.success());
    let status = b.wait().unwrap();
    assert_eq!(status.success(), signal == "-TERM", "{status:?}");
    producing.await.unwrap();
    let (reference, ids, states) = d.applied(N).await;
    a.kill().unwrap();
    a.wait().unwrap();
    assert_same(&reference, &ids, &states, d.now + DAY_MS);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_member_leaves_under_load_and_the_other_takes_over() {
    a_member_goes_under_load_and_the_other_takes_over("-TERM", 17).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_member_killed_under_load_hands_its_partitions_over() {
    a_member_goes_under_load_and_the_other_takes_over("-KILL", 19).await;
}

/// An explicit `--instance-id` that a running process holds is refused with the reason,
/// at once for the second process (which exits with an error) and without disturbing
/// the first; once the first is killed, a process with its id takes over after the
/// lease ran out.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_second_process_with_the_same_instance_id_is_refused() {
    let mut d = deployment("sameid-", 23, 100, 10).await;
    let first_addr = format!("127.0.0.1:{}", crate::free_port());
    let mut first = spawn_with(&d.prefix, &d.brokers, &first_addr, &["--instance-id", "p0"]);
    custflow_tests::wait_until(Duration::from_secs(60), "the first instance up", || {
        let up = std::net::TcpStream::connect(&first_addr).is_ok();
        async move { up.then_some(()) }
    })
    .await;
    let second = Command::new(env!("CARGO_BIN_EXE_custflow"))
        .args([
            "process",
            "--topic-prefix",
            &d.prefix,
            "--brokers",
            &d.brokers,
        ])
        .args(["--http", "127.0.0.1:0", "--instance-id", "p0"])
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&second.stderr);
    assert!(!second.status.success(), "{err}");
    assert!(
        err.contains("another running process uses instance id \"p0\""),
        "{err}"
    );
    assert!(first.try_wait().unwrap().is_none(), "the first one stopped");
    first.kill().unwrap();
    first.wait().unwrap();
    // The killed one's id is free again once its lease ran out: a new process with it
    // starts and applies every event, of every partition.
    let third_addr = format!("127.0.0.1:{}", crate::free_port());
    let mut third = spawn_with(&d.prefix, &d.brokers, &third_addr, &["--instance-id", "p0"]);
    d.produce(10, Duration::ZERO).await.unwrap();
    custflow_tests::wait_until(
        Duration::from_secs(60),
        "the third instance to apply the events",
        || {
            assert!(third.try_wait().unwrap().is_none(), "the third one stopped");
            let applied = std::net::TcpStream::connect(&third_addr).is_ok()
                && counter(&third_addr, "custflow_events_applied_total") >= 10;
            async move { applied.then_some(()) }
        },
    )
    .await;
    third.kill().unwrap();
    third.wait().unwrap();
}

/// A processor that stops at a commit inside a producer's record batch, restarted,
/// applies the rest of that batch: tansu answers a fetch from inside a batch with the
/// batches after it, so resuming exactly at the commit would skip events.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_restart_inside_a_producer_batch_skips_nothing() {
    const N: usize = 6_000;
    let _turn = crate::HEAVY.lock().await;
    let mut d = deployment("midbatch-", 13, 2_000, N).await;
    // All at once: the producer packs hundreds of events into each record batch.
    d.produce(N, Duration::ZERO).await.unwrap();
    // Batches of 7 events, stopped after 1,000: its commit falls inside a record batch.
    let status = Command::new(env!("CARGO_BIN_EXE_custflow"))
        .args(["process", "--clock", "event", "--topic-prefix", &d.prefix])
        .args(["--brokers", &d.brokers, "--batch-max", "7"])
        .args(["--until-events", "1000", "--http", "127.0.0.1:0"])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .unwrap();
    assert!(status.success());
    let mut rest = spawn(&d.prefix, &d.brokers);
    let (reference, ids, states) = d.applied(N).await;
    rest.kill().unwrap();
    rest.wait().unwrap();
    assert_same(&reference, &ids, &states, d.now + DAY_MS);
}
