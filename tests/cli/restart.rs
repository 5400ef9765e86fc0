//! Restarts the way users cause them, against the real stack, with the commands exactly as
//! the README gives them (`custflow run`, `custflow demo`: no flags; each test's own
//! deployment name, HTTP address and sink come from the environment, as a user's
//! configuration would): stopped by SIGKILL at random moments, by SIGTERM followed by
//! SIGKILL 2 s later, or by Ctrl-C, and started again at once. Afterwards every event on
//! the topics is applied exactly once (the features equal a recomputation from the topics)
//! and every scored customer reached the sink. Also: the broker killed mid-stream loses
//! no acknowledged event; `scripts/stack.sh down && up` keeps records, committed offsets,
//! schemas and connectors; `demo --fresh` after an unclean stop works; Ctrl-C to
//! `scripts/demo.sh`'s process group stops the demo cleanly and leaves the stack it
//! started up; a consumer that stops moving while input waits makes `/readyz` say so.

use std::collections::HashMap;
use std::io::{BufRead, BufReader};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use custflow_feature_store::keys::Keys;
use custflow_feature_store::state::CustomerState;
use custflow_kafka::registry_store::KafkaRegistryStore;
use custflow_schemas::avro::AvroCodec;
use custflow_schemas::registry::Registry;
use custflow_schemas::time::DAY_MS;
use custflow_schemas::topics::Topics;
use custflow_schemas::{EventKind, ValidationContext};
use rand::{Rng, SeedableRng};
use rdkafka::Message;

use crate::crash::{assert_same, counter, synthetic, Deployment};
use crate::{free_port, get};

/// How a user stops a command.
#[derive(Debug, Clone, Copy)]
enum Stop {
    /// `kill -9`, an OOM kill, a power cut of the process.
    Kill,
    /// A terminal closing or a supervisor stopping it: SIGTERM, SIGKILL 2 s later.
    TermThenKill,
    /// Ctrl-C.
    Interrupt,
}

/// One deployment of a test: its name, HTTP address, sink and working folder, passed to
/// the commands through the environment.
struct Env {
    prefix: String,
    names: Topics,
    http: String,
    dir: PathBuf,
    sink: String,
    brokers: String,
    redis: String,
}

impl Env {
    fn new(label: &str) -> Self {
        let brokers = custflow_tests::ensure_stack();
        Self::on(label, &brokers, &custflow_tests::redis_url())
    }

    /// `n` synthetic events of `customers` for this deployment, its topics created.
    async fn events(&self, seed: u64, customers: u64, n: usize) -> Deployment {
        custflow_kafka::ensure_topics(&self.brokers, &self.names, Duration::from_secs(20))
            .await
            .unwrap();
        let (now, events) = synthetic(seed, customers, n);
        Deployment {
            brokers: self.brokers.clone(),
            prefix: self.prefix.clone(),
            names: self.names.clone(),
            now,
            events,
        }
    }

    /// A deployment on the broker and Redis given.
    fn on(label: &str, brokers: &str, redis: &str) -> Self {
        let prefix = custflow_tests::unique(label) + ".";
        let dir = std::env::temp_dir().join(&prefix);
        std::fs::create_dir_all(&dir).unwrap();
        Self {
            names: Topics::new(prefix.clone()),
            http: format!("127.0.0.1:{}", free_port()),
            sink: format!("sqlite://{}/custflow.db", dir.display()),
            prefix,
            dir,
            brokers: brokers.to_owned(),
            redis: redis.to_owned(),
        }
    }

    /// `custflow ARGS` in this deployment, its stderr to `log` in the working folder.
    fn command(&self, args: &[&str], log: &str) -> Command {
        let mut c = Command::new(env!("CARGO_BIN_EXE_custflow"));
        self.configure(c.args(args).current_dir(&self.dir))
            .stdout(Stdio::piped())
            .stderr(
                std::fs::OpenOptions::new()
                    .create(true)
                    .append(true)
                    .open(self.dir.join(log))
                    .unwrap(),
            );
        c
    }

    /// Gives `c` this deployment's configuration, through the environment as a user's
    /// would be.
    fn configure<'c>(&self, c: &'c mut Command) -> &'c mut Command {
        c.env("CUSTFLOW_TOPIC_PREFIX", &self.prefix)
            .env("CUSTFLOW_HTTP_ADDR", &self.http)
            .env("CUSTFLOW_SINK_URL", &self.sink)
            .env("CUSTFLOW_BROKERS", &self.brokers)
            .env("CUSTFLOW_REDIS_URL", &self.redis)
            .env("CUSTFLOW_LOG", "info,rdkafka=warn")
    }

    /// The deployment's topics read from the start to their ends, every input event
    /// applied in order as the processor does: the reference states, and how often each
    /// event id is on the topics.
    async fn recompute(&self) -> (HashMap<String, CustomerState>, HashMap<String, u32>) {
        let store = KafkaRegistryStore::new(
            &self.brokers,
            &self.names.name(custflow_schemas::topics::SCHEMAS),
        )
        .unwrap();
        let registry = Arc::new(Registry::open(Arc::new(store)).await.unwrap());
        let ids = registry.register_builtin(&self.names).await.unwrap();
        let codec = AvroCodec::new(registry, ids);
        let (brokers, names) = (self.brokers.clone(), self.names.clone());
        tokio::task::spawn_blocking(move || {
            let inputs: Vec<String> = EventKind::ALL
                .iter()
                .map(|k| names.name(k.topic()))
                .collect();
            let parts: Vec<(String, i32)> =
                custflow_kafka::list_topics(&brokers, &inputs, Duration::from_secs(10))
                    .unwrap()
                    .into_iter()
                    .flat_map(|(t, n)| (0..n).map(move |p| (t.clone(), p)))
                    .collect();
            // From the beginning of the deployment's log (a fresh demo moved it).
            let starts: Vec<(String, i32, i64)> = custflow_kafka::client::log_starts(
                &brokers,
                &names.name(""),
                &parts,
                Duration::from_secs(10),
            )
            .unwrap()
            .into_iter()
            .map(|((t, p), o)| (t, p, o))
            .collect();
            let ctx = ValidationContext::now();
            let mut states = HashMap::new();
            let mut seen: HashMap<String, u32> = HashMap::new();
            custflow_kafka::client::read_to_end(&brokers, &starts, Duration::from_secs(300), |m| {
                let e = crate::crash::apply_input(&names, &codec, &ctx, m, &mut states);
                *seen.entry(e.event_id().to_owned()).or_default() += 1;
            })
            .unwrap();
            (states, seen)
        })
        .await
        .unwrap()
    }

    /// Waits (up to 5 minutes) until Redis holds every event of `reference`, then checks
    /// that every customer's state equals it: nothing lost, nothing applied twice.
    async fn assert_applied_exactly_once(&self, reference: &HashMap<String, CustomerState>) {
        let ids: Vec<String> = reference.keys().cloned().collect();
        let expected: u64 = reference.values().map(|s| s.applied).sum();
        let keys = Keys::new(self.prefix.clone());
        let states =
            custflow_tests::wait_until(Duration::from_secs(300), "every event applied", || {
                let (keys, ids, url) = (keys.clone(), ids.clone(), self.redis.clone());
                async move {
                    let states = custflow_tests::read_states_at(&url, &keys, &ids).await;
                    let applied: u64 = states.iter().flatten().map(|s| s.applied).sum();
                    (applied >= expected).then_some(states)
                }
            })
            .await;
        let now = custflow_schemas::time::now_ms();
        assert_same(reference, &ids, &states, now + DAY_MS);
    }

    /// Waits (up to 3 minutes) until every customer with a score in Redis has that
    /// score's version as its row in the sink; returns how many were scored.
    async fn assert_scores_reached_the_sink(&self, ids: &[String]) -> usize {
        let keys = Keys::new(self.prefix.clone());
        let sink = custflow_connectors::sql_sink::SqlSink::connect(&self.sink)
            .await
            .unwrap();
        let mut missing = Vec::new();
        let deadline = Instant::now() + Duration::from_secs(180);
        loop {
            let states = custflow_tests::read_states_at(&self.redis, &keys, ids).await;
            let scored: Vec<(&String, i64)> = ids
                .iter()
                .zip(&states)
                .filter_map(|(id, s)| Some((id, s.as_ref()?.score_version)))
                .filter(|(_, v)| *v > 0)
                .collect();
            missing.clear();
            for (id, version) in &scored {
                let row: Option<(i64,)> =
                    sqlx::query_as("SELECT version FROM customer_scores WHERE customer_id = $1")
                        .bind(id.as_str())
                        .fetch_optional(sink.pool())
                        .await
                        .unwrap();
                if row.map(|r| r.0) != Some(*version) {
                    missing.push(format!("{id} v{version}: {row:?}"));
                }
            }
            if missing.is_empty() && !scored.is_empty() {
                return scored.len();
            }
            assert!(
                Instant::now() < deadline,
                "{} of {} scored customers are not in the sink at their version, e.g. {:?}",
                missing.len(),
                scored.len(),
                &missing[..missing.len().min(5)]
            );
            tokio::time::sleep(Duration::from_millis(500)).await;
        }
    }
}

impl Drop for Env {
    /// Removes the working folder, but keeps it (with the commands' logs) when the test
    /// failed.
    fn drop(&mut self) {
        if std::thread::panicking() {
            eprintln!("logs of the failed test: {}", self.dir.display());
        } else {
            let _ = std::fs::remove_dir_all(&self.dir);
        }
    }
}

/// A child process killed when dropped, however the test ends.
struct Running(Child);

impl Running {
    fn pid(&self) -> String {
        self.0.id().to_string()
    }

    fn signal(&self, sig: &str) {
        let _ = Command::new("kill").args([sig, &self.pid()]).status();
    }

    /// Stops it the way `how` says and waits until it is gone.
    async fn stop(mut self, how: Stop) {
        match how {
            Stop::Kill => self.signal("-KILL"),
            Stop::Interrupt => self.signal("-INT"),
            Stop::TermThenKill => {
                self.signal("-TERM");
                let until = Instant::now() + Duration::from_secs(2);
                while Instant::now() < until && self.0.try_wait().unwrap().is_none() {
                    tokio::time::sleep(Duration::from_millis(50)).await;
                }
                self.signal("-KILL");
            }
        }
        let what = format!("the process gone after {how:?}");
        custflow_tests::wait_until(Duration::from_secs(60), &what, || {
            let gone = self.0.try_wait().unwrap().is_some();
            async move { gone.then_some(()) }
        })
        .await;
    }
}

impl Drop for Running {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// The applied-events counter of the `run` serving on `addr` (0 while it does not answer).
fn applied(addr: &str) -> u64 {
    if std::net::TcpStream::connect(addr).is_err() {
        return 0;
    }
    counter(addr, "custflow_events_applied_total")
}

/// `custflow run` stopped five times at random moments while events flow, `how`, and
/// started again at once each time: every event applied exactly once, every scored
/// customer in the sink.
async fn run_survives(how: Stop, seed: u64) {
    const N: usize = 30_000;
    let _turn = crate::HEAVY.lock().await;
    let env = Env::new("restart-run-");
    let mut d = env.events(seed, 6_000, N).await;
    // Paced over about 80 s, so that events flow through all five rounds.
    let producing = d.produce(250, Duration::from_millis(650));
    let mut rng = rand::rngs::StdRng::seed_from_u64(seed);
    let mut previous = 0;
    for round in 0..5 {
        let run = Running(env.command(&["run"], "run.log").spawn().unwrap());
        // Stopped at a random moment of its life while events flow.
        custflow_tests::wait_until(Duration::from_secs(60), "the restarted run up", || {
            let up = std::net::TcpStream::connect(env.http.as_str()).is_ok();
            async move { up.then_some(()) }
        })
        .await;
        tokio::time::sleep(Duration::from_millis(rng.gen_range(500..4000))).await;
        assert!(
            !producing.is_finished(),
            "round {round}: the events stopped flowing before the run was stopped"
        );
        previous += applied(&env.http);
        run.stop(how).await;
    }
    producing.await.unwrap();
    assert!(previous > 0, "the stopped lives applied nothing");
    // A last life runs until everything is applied and scored.
    let _last = Running(env.command(&["run"], "run.log").spawn().unwrap());
    let (reference, seen) = env.recompute().await;
    assert_eq!(seen.len(), N, "events on the topics");
    env.assert_applied_exactly_once(&reference).await;
    let ids: Vec<String> = reference.keys().cloned().collect();
    let scored = env.assert_scores_reached_the_sink(&ids).await;
    assert!(
        scored > 100,
        "only {scored} of {} customers scored",
        ids.len()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn run_killed_five_times_applies_every_event_once() {
    run_survives(Stop::Kill, 31).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn run_terminated_then_killed_five_times_applies_every_event_once() {
    run_survives(Stop::TermThenKill, 37).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn run_interrupted_five_times_applies_every_event_once() {
    run_survives(Stop::Interrupt, 41).await;
}

/// A started demo's stdout, read line by line on a thread.
struct DemoOut {
    lines: std::sync::mpsc::Receiver<String>,
}

impl DemoOut {
    fn of(child: &mut Child) -> Self {
        let out = child.stdout.take().unwrap();
        let (tx, rx) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(out).lines().map_while(Result::ok) {
                if tx.send(line).is_err() {
                    return;
                }
            }
        });
        Self { lines: rx }
    }

    /// Waits up to `secs` for a line containing `needle`; whether it came.
    fn wait_for(&self, needle: &str, secs: u64) -> bool {
        let deadline = Instant::now() + Duration::from_secs(secs);
        while let Some(left) = deadline.checked_duration_since(Instant::now()) {
            match self.lines.recv_timeout(left) {
                Ok(l) if l.contains(needle) => return true,
                Ok(_) => {}
                Err(_) => return false,
            }
        }
        false
    }
}

/// The ids of the events of the demo's backfill (`customers` over `days`, ending at
/// `now_ms`), as `custflow synth` generates them.
fn backfill_ids(now_ms: i64, customers: u64, days: i64) -> Vec<String> {
    let params = custflow_ingest::synth::SynthParams {
        seed: 42,
        customers,
        start_ms: now_ms - days * DAY_MS,
        end_ms: now_ms,
        ..Default::default()
    };
    custflow_ingest::synth::Generator::new(params)
        .unwrap()
        .take_while(|e| e.occurred_at() <= now_ms)
        .map(|e| e.event_id().to_owned())
        .collect()
}

/// How many records the deployment's input topics hold (their log ends).
fn input_records(env: &Env) -> i64 {
    use rdkafka::consumer::{BaseConsumer, Consumer};
    let c: BaseConsumer = custflow_kafka::admin::client_config(&env.brokers)
        .create()
        .unwrap();
    EventKind::ALL
        .iter()
        .flat_map(|k| (0..8).map(move |p| (env.names.name(k.topic()), p)))
        .filter_map(|(t, p)| c.fetch_watermarks(&t, p, Duration::from_secs(5)).ok())
        .map(|(_, high)| high)
        .sum()
}

/// The demo's backfill plan as the sink keeps it.
async fn plan(env: &Env) -> serde_json::Value {
    let sink = custflow_connectors::sql_sink::SqlSink::connect(&env.sink)
        .await
        .unwrap();
    let json = sink.meta("demo.backfill").await.unwrap().expect("a plan");
    serde_json::from_str(&json).unwrap()
}

/// `custflow demo` stopped every way a user stops it — SIGKILL in the middle of its
/// backfill, SIGTERM then SIGKILL while live, Ctrl-C, SIGKILL while live — and started
/// again at once each time: each time it shows its commands (the pipeline continues)
/// within 30 s of the history being on the topics, the backfill is complete with no event
/// twice, and every event on the topics is applied exactly once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_demo_continues_after_every_kind_of_stop() {
    let _turn = crate::HEAVY.lock().await;
    let env = Env::new("restart-demo-");
    // Killed during its backfill: as soon as its first events are on the topics.
    let mut first = env.command(&["demo"], "demo.log").spawn().unwrap();
    let _ = first.stdout.take();
    let log = env.dir.join("demo.log");
    custflow_tests::wait_until(Duration::from_secs(60), "a backfill event", || {
        let some = input_records(&env) > 0;
        async move { some.then_some(()) }
    })
    .await;
    Running(first).stop(Stop::Kill).await;
    let interrupted = plan(&env).await["done"] == false;
    eprintln!("the first demo was killed with its backfill unfinished: {interrupted}");
    for how in [Stop::TermThenKill, Stop::Interrupt, Stop::Kill] {
        let started = Instant::now();
        let mut demo = env.command(&["demo"], "demo.log").spawn().unwrap();
        let out = DemoOut::of(&mut demo);
        assert!(
            out.wait_for("Dashboard:", 120),
            "the demo did not continue after a stop; see {}",
            log.display()
        );
        let took = started.elapsed();
        assert!(
            took < Duration::from_secs(30),
            "continued only after {took:?}"
        );
        tokio::time::sleep(Duration::from_millis(1500)).await;
        Running(demo).stop(how).await;
    }
    // A last life ends by itself.
    let last = env
        .command(&["demo", "--duration-secs", "5", "--json"], "demo.log")
        .output()
        .unwrap();
    assert!(last.status.success(), "see {}", log.display());
    let summary: serde_json::Value = serde_json::from_str(
        String::from_utf8_lossy(&last.stdout)
            .lines()
            .last()
            .unwrap_or_default(),
    )
    .unwrap();
    assert!(summary["applied"].as_u64().unwrap_or(0) > 0, "{summary}");

    let plan = plan(&env).await;
    assert_eq!(plan["done"], true, "{plan}");
    let (reference, seen) = env.recompute().await;
    let twice: Vec<&String> = seen
        .iter()
        .filter(|(_, n)| **n > 1)
        .map(|(id, _)| id)
        .collect();
    assert!(twice.is_empty(), "events on the topics twice: {twice:?}");
    // The whole backfill is there, and live events of four lives after it.
    let backfill = backfill_ids(plan["now_ms"].as_i64().unwrap(), 3000, 365);
    let lost: Vec<&String> = backfill
        .iter()
        .filter(|id| !seen.contains_key(*id))
        .collect();
    assert!(lost.is_empty(), "{} backfill events missing", lost.len());
    assert!(seen.len() > backfill.len(), "no live event");
    if interrupted {
        let text = std::fs::read_to_string(&log).unwrap();
        assert!(
            text.contains("resuming a backfill"),
            "the backfill was not resumed"
        );
    }
    // The last life stopped producing and applying at once, with live events of its last
    // second still on the topics; the next start of the pipeline applies them.
    let _next = Running(env.command(&["run"], "run.log").spawn().unwrap());
    env.assert_applied_exactly_once(&reference).await;
}

/// `demo --fresh` right after a demo was killed starts over and works: its backfill is
/// processed, a model is fitted, live events flow and it ends cleanly.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn demo_fresh_after_an_unclean_stop_works() {
    let _turn = crate::HEAVY.lock().await;
    let env = Env::new("restart-fresh-");
    let mut demo = env.command(&["demo"], "demo.log").spawn().unwrap();
    let out = DemoOut::of(&mut demo);
    assert!(
        out.wait_for("Dashboard:", 120),
        "the first demo did not come up"
    );
    Running(demo).stop(Stop::Kill).await;
    let fresh = env
        .command(
            &["demo", "--fresh", "--duration-secs", "8", "--json"],
            "demo.log",
        )
        .output()
        .unwrap();
    let log = std::fs::read_to_string(env.dir.join("demo.log")).unwrap();
    assert!(fresh.status.success(), "{log}");
    assert!(
        log.contains("fresh start: the deployment's log begins anew"),
        "{log}"
    );
    assert!(
        log.contains("fitted on"),
        "no model after the fresh start: {log}"
    );
    let summary: serde_json::Value = serde_json::from_str(
        String::from_utf8_lossy(&fresh.stdout)
            .lines()
            .last()
            .unwrap_or_default(),
    )
    .unwrap();
    assert!(summary["events"].as_u64().unwrap_or(0) > 0, "{summary}");
    assert!(summary["applied"].as_u64().unwrap_or(0) > 0, "{summary}");
    // Only the fresh run's events are on the topics now, each applied once (a processor
    // applies what the stopped demo left).
    let (reference, seen) = env.recompute().await;
    assert!(seen.values().all(|n| *n == 1));
    let _processor = Running(env.command(&["process"], "process.log").spawn().unwrap());
    env.assert_applied_exactly_once(&reference).await;
}

/// The README's demo stopped the way a terminal stops it: `bash scripts/demo.sh` as the
/// foreground job of a shell (a process group of its own), Ctrl-C to the whole group. The
/// script starts its own stack (a broker and Redis on free ports, as on a fresh machine);
/// each life prints its summary with the events it applied and exits 0, the broker and
/// Redis it started stay up (a Ctrl-C is for the demo, not for the stack), the same
/// command again continues the pipeline, and afterwards every event on the topics is
/// applied exactly once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ctrl_c_to_the_readme_demo_stops_it_cleanly_and_it_continues() {
    use std::os::unix::process::CommandExt;
    let _turn = crate::HEAVY.lock().await;
    let stack = PrivateStack::new();
    let env = Env::on("restart-ctrlc-", &stack.brokers(), &stack.redis());
    for life in 0..2 {
        let log = env.dir.join(format!("demo-{life}.log"));
        let mut demo = Command::new("bash");
        demo.arg(custflow_tests::repo_root().join("scripts/demo.sh"));
        env.configure(stack.configure(&mut demo))
            .process_group(0)
            .stdout(Stdio::piped())
            .stderr(std::fs::File::create(&log).unwrap());
        let mut demo = Running(demo.spawn().unwrap());
        let out = DemoOut::of(&mut demo.0);
        assert!(
            out.wait_for("Dashboard:", 300),
            "life {life}: the demo did not start; see {}",
            log.display()
        );
        custflow_tests::wait_until(Duration::from_secs(120), "events applied", || {
            let moved = applied(&env.http) > 0;
            async move { moved.then_some(()) }
        })
        .await;
        // Ctrl-C: SIGINT to every process of the foreground job.
        let group = format!("-{}", demo.pid());
        let status = Command::new("kill")
            .args(["-INT", "--", &group])
            .status()
            .unwrap();
        assert!(status.success());
        let what = format!(
            "life {life}: the demo stopping after Ctrl-C (see {})",
            log.display()
        );
        let exit = custflow_tests::wait_until(Duration::from_secs(60), &what, || {
            let exit = demo.0.try_wait().unwrap();
            async move { exit }
        })
        .await;
        let text = std::fs::read_to_string(&log).unwrap();
        assert!(exit.success(), "life {life}: {exit}; see {}", log.display());
        let summary = text
            .lines()
            .find(|l| l.starts_with("custflow demo ran"))
            .unwrap_or_else(|| panic!("life {life}: no summary; see {}", log.display()));
        let applied_in_life: u64 = summary
            .split(" applied to customer state")
            .next()
            .and_then(|head| head.rsplit(' ').next())
            .and_then(|n| n.parse().ok())
            .unwrap_or_else(|| panic!("no applied count in {summary:?}"));
        assert!(applied_in_life > 0, "life {life}: {summary}");
        if life > 0 {
            assert!(
                text.contains("continuing the existing pipeline"),
                "life {life} did not continue the pipeline; see {}",
                log.display()
            );
        }
        for (what, port) in [("broker", stack.broker_port), ("Redis", stack.redis_port)] {
            assert!(
                std::net::TcpStream::connect(("127.0.0.1", port)).is_ok(),
                "life {life}: the {what} the script started went down with the demo's Ctrl-C"
            );
        }
    }
    // The live events of the last second are on the topics; the next start of the
    // pipeline applies them.
    let (reference, _) = env.recompute().await;
    let _next = Running(env.command(&["run"], "run.log").spawn().unwrap());
    env.assert_applied_exactly_once(&reference).await;
}

/// A private local stack, started and stopped by the project's own script on free ports
/// with its own data folder.
struct PrivateStack {
    data: PathBuf,
    broker_port: u16,
    redis_port: u16,
}

impl PrivateStack {
    fn new() -> Self {
        let data = std::env::temp_dir().join(custflow_tests::unique("stack-"));
        std::fs::create_dir_all(&data).unwrap();
        Self {
            data,
            broker_port: free_port(),
            redis_port: free_port(),
        }
    }

    /// Points a project script run by `c` at this stack (the default durable storage):
    /// it starts or finds the stack there.
    fn configure<'c>(&self, c: &'c mut Command) -> &'c mut Command {
        c.env("CUSTFLOW_DATA", &self.data)
            .env("CUSTFLOW_BROKER_PORT", self.broker_port.to_string())
            .env("CUSTFLOW_REDIS_PORT", self.redis_port.to_string())
            .env_remove("CUSTFLOW_BROKER_STORAGE")
    }

    fn script(&self, what: &str) {
        let mut c = Command::new("bash");
        let out = self
            .configure(c.arg(custflow_tests::repo_root().join("scripts/stack.sh")))
            .arg(what)
            .env_remove("CUSTFLOW_TOPIC_PREFIX")
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "scripts/stack.sh {what}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }

    fn brokers(&self) -> String {
        format!("127.0.0.1:{}", self.broker_port)
    }

    fn redis(&self) -> String {
        format!("redis://127.0.0.1:{}", self.redis_port)
    }

    /// SIGKILL to the broker, as a crash or the OOM killer does.
    fn kill_broker(&self) {
        let pid = std::fs::read_to_string(self.data.join("tansu.pid")).unwrap();
        let status = Command::new("kill")
            .args(["-KILL", pid.trim()])
            .status()
            .unwrap();
        assert!(status.success());
        let port = self.broker_port;
        crate::eventually(30, "the killed broker's port closing", || {
            std::net::TcpStream::connect(("127.0.0.1", port))
                .is_err()
                .then_some(())
        });
    }
}

impl Drop for PrivateStack {
    fn drop(&mut self) {
        let mut c = Command::new("bash");
        let _ = self
            .configure(c.arg(custflow_tests::repo_root().join("scripts/stack.sh")))
            .arg("down")
            .output();
        let _ = std::fs::remove_dir_all(&self.data);
    }
}

/// `custflow connect [CONFIG] --exit-when-idle` in the deployment: the connectors (the
/// one in `config`, or those stored on the broker) copy what they find, then it exits.
fn connect_until_idle(env: &Env, config: Option<&str>) {
    let http = format!("127.0.0.1:{}", free_port());
    let mut args = vec!["connect"];
    args.extend(config);
    args.extend(["--exit-when-idle", "--connect-http", &http, "--json"]);
    let out = env.command(&args, "connect.log").output().unwrap();
    assert!(
        out.status.success(),
        "see {}",
        env.dir.join("connect.log").display()
    );
}

/// Per topic its record count and digest, and the committed offsets (topic, partition, offset).
type BrokerContents = (
    std::collections::BTreeMap<String, (usize, u64)>,
    Vec<(String, i32, i64)>,
);

/// What a deployment keeps in the broker: per topic its record count and a digest of its
/// records (partition, offset, key, payload) — of a compacted topic, the latest record of
/// each key, which is what compaction (tansu compacts at every start) keeps — and the
/// processors' committed offsets.
fn broker_contents(brokers: &str, names: &Topics) -> BrokerContents {
    use rdkafka::consumer::{BaseConsumer, Consumer};
    let contract: Vec<String> = custflow_schemas::topics::ALL
        .iter()
        .map(|t| names.name(t.name))
        .collect();
    let mut records = std::collections::BTreeMap::new();
    let ours = custflow_kafka::list_topics(brokers, &contract, Duration::from_secs(10)).unwrap();
    let starts: Vec<(String, i32, i64)> = ours
        .iter()
        .flat_map(|(t, n)| (0..*n).map(move |p| (t.clone(), p, 0)))
        .collect();
    custflow_kafka::client::read_to_end(brokers, &starts, Duration::from_secs(120), |m| {
        records
            .entry(m.topic().to_owned())
            .or_insert_with(Vec::new)
            .push((
                m.partition(),
                m.offset(),
                m.key().unwrap_or_default().to_vec(),
                m.payload().unwrap_or_default().to_vec(),
            ));
    })
    .unwrap();
    let compacted = |topic: &str| {
        custflow_schemas::topics::ALL.iter().any(|s| {
            s.cleanup == custflow_schemas::topics::Cleanup::Compact && names.name(s.name) == topic
        })
    };
    let records = records
        .into_iter()
        .map(|(t, mut v)| {
            v.sort();
            if compacted(&t) {
                let mut latest = std::collections::BTreeMap::new();
                for (p, _, k, payload) in v {
                    latest.insert((p, k), payload);
                }
                v = latest
                    .into_iter()
                    .map(|((p, k), payload)| (p, 0, k, payload))
                    .collect();
            }
            let mut h = std::collections::hash_map::DefaultHasher::new();
            std::hash::Hash::hash(&v, &mut h);
            (t, (v.len(), std::hash::Hasher::finish(&h)))
        })
        .collect();
    let group: BaseConsumer = custflow_kafka::admin::client_config(brokers)
        .set("group.id", format!("{}custflow-processors", names.name("")))
        .create()
        .unwrap();
    let mut tpl = rdkafka::TopicPartitionList::new();
    for (t, n) in &ours {
        if EventKind::ALL.iter().any(|k| names.name(k.topic()) == *t) {
            for p in 0..*n {
                tpl.add_partition(t, p);
            }
        }
    }
    let committed = group
        .committed_offsets(tpl, Duration::from_secs(10))
        .unwrap()
        .elements()
        .iter()
        .filter_map(|e| match e.offset() {
            rdkafka::Offset::Offset(o) => Some((e.topic().to_owned(), e.partition(), o)),
            _ => None,
        })
        .collect();
    (records, committed)
}

/// `scripts/stack.sh down && scripts/stack.sh up`, and a SIGKILL of the broker followed by
/// `scripts/stack.sh up`: every topic's records, the committed offsets, the registered
/// schemas (their ids) and the connector configs and offsets are there afterwards, and the
/// pipeline goes on from where it was.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_local_stack_keeps_everything_across_down_up_and_a_killed_broker() {
    let _turn = crate::HEAVY.lock().await;
    let stack = PrivateStack::new();
    stack.script("up");
    let env = Env::on("durable-", &stack.brokers(), &stack.redis());
    // Events, processed (committed offsets, schemas registered by the generator).
    let synth = env
        .command(
            &["synth", "--customers", "300", "--days", "90", "--json"],
            "synth.log",
        )
        .output()
        .unwrap();
    assert!(synth.status.success());
    let process = env
        .command(&["process", "--until-events", "1", "--json"], "process.log")
        .output()
        .unwrap();
    assert!(process.status.success());
    // A connector that ran: its config and its offsets are in the broker.
    let spool = env.dir.join("spool");
    std::fs::create_dir_all(&spool).unwrap();
    std::fs::copy(
        custflow_tests::reference_data().join("cdnow/CDNOW_sample.txt"),
        spool.join("cdnow.txt"),
    )
    .unwrap();
    let config = env.dir.join("cdnow.json");
    std::fs::write(
        &config,
        serde_json::json!({"name": "cdnow", "config": {
            "connector.class": "SpoolDirCsvSource", "csv.preset": "cdnow",
            "input.path": spool, "finished.path": env.dir.join("done")}})
        .to_string(),
    )
    .unwrap();
    connect_until_idle(&env, Some(config.to_str().unwrap()));
    // The processor goes on until the connector's orders are applied too.
    let until = env
        .command(
            &["process", "--until-events", "6919", "--json"],
            "process.log",
        )
        .output()
        .unwrap();
    assert!(until.status.success());

    // The broker's SQLite file has the index `scripts/stack.sh` adds to tansu's schema.
    let db = format!(
        "sqlite://{}?mode=ro",
        stack.data.join("broker/tansu.db").display()
    );
    let pool = sqlx::SqlitePool::connect(&db).await.unwrap();
    let indexed: Option<(String,)> =
        sqlx::query_as("SELECT name FROM sqlite_master WHERE name = 'custflow_header_record'")
            .fetch_optional(&pool)
            .await
            .unwrap();
    assert!(indexed.is_some(), "the broker's header table has no index");
    pool.close().await;
    let before = broker_contents(&env.brokers, &env.names);
    assert!(before.0.len() >= 6, "topics: {:?}", before.0.keys());
    assert!(!before.1.is_empty(), "no committed offsets");
    let schemas = env.names.name(custflow_schemas::topics::SCHEMAS);
    let configs = env.names.name(custflow_schemas::topics::CONNECT_CONFIGS);
    let offsets = env.names.name(custflow_schemas::topics::CONNECT_OFFSETS);
    for t in [&schemas, &configs, &offsets] {
        assert!(before.0.get(t).is_some_and(|r| r.0 > 0), "{t} is empty");
    }
    let keys = Keys::new(env.prefix.clone());
    let redis_before = redis_keys(&env.redis, &keys).await;
    assert!(redis_before > 300, "{redis_before} keys");

    stack.script("down");
    assert!(std::net::TcpStream::connect(env.brokers.as_str()).is_err());
    stack.script("up");
    assert_eq!(
        broker_contents(&env.brokers, &env.names),
        before,
        "after down && up"
    );
    assert_eq!(
        redis_keys(&env.redis, &keys).await,
        redis_before,
        "Redis after down && up"
    );

    stack.kill_broker();
    stack.script("up");
    assert_eq!(
        broker_contents(&env.brokers, &env.names),
        before,
        "after a SIGKILL of the broker"
    );

    // The pipeline continues: the connector finds its file done (nothing produced twice),
    // a processor starts from the committed offsets (nothing applied twice).
    connect_until_idle(&env, None);
    let (reference, seen) = env.recompute().await;
    assert!(
        seen.values().all(|n| *n == 1),
        "an event is on the topics twice"
    );
    let _processor = Running(env.command(&["process"], "process.log").spawn().unwrap());
    env.assert_applied_exactly_once(&reference).await;
}

/// The number of this deployment's keys in the Redis at `url`.
async fn redis_keys(url: &str, keys: &Keys) -> usize {
    let mut conn = custflow_tests::redis_conn_at(url).await;
    let mut n = 0;
    let mut scan =
        custflow_feature_store::conn::Scan::new(&mut conn, &keys.features_pattern(), 1000)
            .await
            .unwrap();
    while let Some(page) = scan.next_page(&mut conn).await.unwrap() {
        n += page.len();
    }
    n
}

/// The broker killed with SIGKILL in the middle of a stream and started again: every
/// event the producer had acknowledged is on the topics, once, and the features equal a
/// recomputation from them.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_killed_broker_loses_no_acknowledged_event() {
    const N: usize = 20_000;
    let _turn = crate::HEAVY.lock().await;
    let stack = PrivateStack::new();
    stack.script("up");
    let env = Env::on("broker-kill-", &stack.brokers(), &stack.redis());
    let mut d = env.events(43, 4_000, N).await;
    let _processor = Running(env.command(&["process"], "process.log").spawn().unwrap());
    // Paced over about 20 s; the producer waits out the outage (librdkafka retries).
    let producing = d.produce(500, Duration::from_millis(500));
    // Killed in the middle of the stream: once a quarter of the events is on the topics.
    custflow_tests::wait_until(Duration::from_secs(60), "a quarter of the events", || {
        let some = input_records(&env) >= (N / 4) as i64;
        async move { some.then_some(()) }
    })
    .await;
    assert!(!producing.is_finished(), "the stream ended before the kill");
    stack.kill_broker();
    // The outage itself: the broker stays away for 2 s before it is started again.
    tokio::time::sleep(Duration::from_secs(2)).await;
    stack.script("up");
    producing.await.unwrap(); // every delivery acknowledged (it checks)
    let (reference, seen) = env.recompute().await;
    assert_eq!(seen.len(), N, "acknowledged events on the topics");
    assert!(
        seen.values().all(|n| *n == 1),
        "an event is on the topics twice"
    );
    env.assert_applied_exactly_once(&reference).await;
}

/// A consumer that stops moving while its input waits is not silent: the SQL sink's
/// database goes away under `custflow run` while scores keep coming, and within 15 s
/// `/readyz` answers 503 saying which group waits and why, `/metrics` counts the stall,
/// and the lag shows the waiting scores; once the database is back it is ready again.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stalled_consumer_makes_readyz_say_why() {
    let _turn = crate::HEAVY.lock().await;
    let proxy = custflow_tests::Proxy::start("127.0.0.1:5432").await;
    let mut env = Env::new("stall-");
    let db = env.prefix.replace(['.', '-'], "_");
    let pool = sqlx::PgPool::connect("postgres://postgres@127.0.0.1:5432/test")
        .await
        .unwrap();
    sqlx::query(&format!("CREATE DATABASE {db}"))
        .execute(&pool)
        .await
        .unwrap();
    env.sink = format!("postgres://postgres@127.0.0.1:{}/{db}", proxy.port);
    let run = Running(
        env.command(&["run", "--model-every-secs", "2"], "run.log")
            .spawn()
            .unwrap(),
    );
    let synth = |seed: &str| {
        let out = env
            .command(
                &[
                    "synth",
                    "--customers",
                    "300",
                    "--days",
                    "60",
                    "--seed",
                    seed,
                ],
                "synth.log",
            )
            .output()
            .unwrap();
        assert!(out.status.success());
    };
    synth("1");
    // Scored into the sink while its database is there.
    custflow_tests::wait_until(Duration::from_secs(120), "scores in the sink", || async {
        let up = std::net::TcpStream::connect(env.http.as_str()).is_ok();
        (up && get(&env.http, "/readyz").0 == 200
            && counter(&env.http, "custflow_sink_rows_total{result=\"applied\"}") > 0)
            .then_some(())
    })
    .await;
    proxy.down();
    // More customers: their scores wait for the sink.
    synth("2");
    let (code, body) = custflow_tests::wait_until(
        Duration::from_secs(120),
        "/readyz saying the sink is stalled",
        || async {
            let (code, body) = get(&env.http, "/readyz");
            (code == 503 && body.contains("custflow-sql-sink")).then_some((code, body))
        },
    )
    .await;
    let v: serde_json::Value = serde_json::from_str(&body).unwrap();
    assert_eq!(code, 503);
    assert_eq!(v["processing"], false, "{v}");
    let reason = v["reason"].as_str().unwrap_or_default();
    assert!(reason.contains("events wait on partitions"), "{reason}");
    assert!(reason.contains("no offset moved"), "{reason}");
    let (_, metrics) = get(&env.http, "/metrics");
    let group = format!("{}custflow-sql-sink", env.prefix);
    let line = |name: &str| {
        metrics
            .lines()
            .find(|l| l.starts_with(&format!("{name}{{group=\"{group}\"}}")))
            .and_then(|l| l.rsplit(' ').next()?.parse::<i64>().ok())
            .unwrap_or(-1)
    };
    assert!(line("custflow_group_stalls_total") >= 1, "{metrics}");
    assert_eq!(line("custflow_group_stalled"), 1);
    assert!(line("custflow_group_waiting") > 0);
    // The database is back: the sink catches up and the deployment is ready again.
    proxy.up();
    custflow_tests::wait_until(Duration::from_secs(120), "ready again", || async {
        (get(&env.http, "/readyz").0 == 200).then_some(())
    })
    .await;
    drop(run);
    sqlx::query(&format!("DROP DATABASE {db} WITH (FORCE)"))
        .execute(&pool)
        .await
        .unwrap();
}
