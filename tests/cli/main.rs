//! The `custflow` binary as a user runs it: `fit` and `train-churn` on the CDNOW reference
//! data, the demo end to end, the crash test, the REST load generator and the connect worker.

#![allow(clippy::unwrap_used)] // tests fail loudly on purpose

mod broker_outage;
mod churn;
mod compose;
mod connect;
mod crash;
mod dashboard;
mod demo;
mod erasure;
mod flags;
mod fluvio;
mod layout;
mod load;
mod models;
mod openapi;
mod redis_cluster;
mod redis_restart;
mod redis_stall;
mod restart;
mod scopes;
mod self_contained;
mod tls;
mod traces;

use std::net::TcpStream;
use std::path::PathBuf;
use std::process::Command;
use std::time::Duration;

/// A GET over plain HTTP/1.0: (status, body).
pub(crate) fn get(addr: &str, path: &str) -> (u16, String) {
    request(addr, "GET", path, "")
}

/// A request with a JSON body over plain HTTP/1.0: (status, body).
pub(crate) fn request(addr: &str, method: &str, path: &str, body: &str) -> (u16, String) {
    request_with(addr, method, path, body, &[])
}

/// [`request`] with extra headers (through the suite's one client, `custflow_tests::http`).
pub(crate) fn request_with(
    addr: &str,
    method: &str,
    path: &str,
    body: &str,
    headers: &[(&str, &str)],
) -> (u16, String) {
    let mut all = vec![("Content-Type", "application/json")];
    all.extend_from_slice(headers);
    let (status, _, body) = custflow_tests::http(addr, method, path, &all, body.as_bytes());
    (status, body)
}

/// Runs a `custflow` command that must succeed; its `--json` summary (last stdout line).
pub(crate) fn json_summary(cmd: &mut Command) -> serde_json::Value {
    let out = cmd.output().unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let stdout = String::from_utf8(out.stdout).unwrap();
    serde_json::from_str(stdout.lines().last().unwrap()).unwrap()
}

/// Tests that load both cores for minutes (the kill -9 test, the browser test and the
/// schemathesis run) take turns, so that none runs out of its time budget because the
/// others share the machine.
pub(crate) static HEAVY: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

/// A `custflow` server process, killed when the test ends, however it ends.
pub(crate) struct Server(std::process::Child);

impl Server {
    /// Starts `custflow ARGS --http ADDR` and waits until `ready_path` answers 200.
    pub(crate) fn start(args: &[&str], addr: &str, ready_path: &str) -> Self {
        Self::start_with_env(args, &[], addr, ready_path)
    }

    /// [`Server::start`] with extra environment variables.
    pub(crate) fn start_with_env(
        args: &[&str],
        env: &[(&str, &str)],
        addr: &str,
        ready_path: &str,
    ) -> Self {
        let mut server = Self(
            Command::new(env!("CARGO_BIN_EXE_custflow"))
                .args(args)
                .envs(env.iter().copied())
                .args(["--http", addr])
                .stdout(std::process::Stdio::null())
                .stderr(std::process::Stdio::inherit())
                .spawn()
                .unwrap(),
        );
        let deadline = std::time::Instant::now() + Duration::from_secs(60);
        while TcpStream::connect(addr).is_err() || get(addr, ready_path).0 != 200 {
            if let Some(status) = server.0.try_wait().unwrap() {
                panic!("custflow {args:?} exited ({status}) before answering {ready_path}");
            }
            assert!(
                std::time::Instant::now() < deadline,
                "custflow {args:?} did not answer {ready_path} within 60 s"
            );
            std::thread::sleep(Duration::from_millis(100));
        }
        server
    }
}

impl Server {
    /// Asks the server to stop (SIGTERM) and waits until it has, as a service manager
    /// would: it finishes its batch, commits and leaves its consumer groups.
    pub(crate) fn stop(mut self) {
        let pid = self.0.id().to_string();
        let _ = Command::new("kill").args(["-TERM", &pid]).status();
        let deadline = std::time::Instant::now() + Duration::from_secs(60);
        while self.0.try_wait().unwrap().is_none() {
            assert!(
                std::time::Instant::now() < deadline,
                "custflow did not stop within 60 s of SIGTERM"
            );
            std::thread::sleep(Duration::from_millis(100));
        }
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// A `custflow` process a test started, killed (SIGKILL) when dropped, so a failing test
/// leaves no process behind to load the shared stack.
pub(crate) struct Proc(pub(crate) std::process::Child);

impl std::ops::Deref for Proc {
    type Target = std::process::Child;
    fn deref(&self) -> &Self::Target {
        &self.0
    }
}

impl std::ops::DerefMut for Proc {
    fn deref_mut(&mut self) -> &mut Self::Target {
        &mut self.0
    }
}

impl Drop for Proc {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// A helper process of a test (redis-server, tansu), killed when dropped.
pub(crate) struct Helper(std::process::Child);

impl Helper {
    /// Spawns `cmd` (its stdout discarded) and waits up to 30 s until it listens on
    /// 127.0.0.1:`port`.
    pub(crate) fn listening(cmd: &mut Command, port: u16) -> Self {
        let what = cmd.get_program().to_string_lossy().into_owned();
        let child = cmd
            .stdout(std::process::Stdio::null())
            .spawn()
            .unwrap_or_else(|e| panic!("starting {what}: {e}"));
        let helper = Self(child);
        let deadline = std::time::Instant::now() + Duration::from_secs(30);
        while TcpStream::connect(("127.0.0.1", port)).is_err() {
            assert!(
                std::time::Instant::now() < deadline,
                "{what} did not listen on {port} within 30 s"
            );
            std::thread::sleep(Duration::from_millis(50));
        }
        helper
    }
}

impl Drop for Helper {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// `custflow run` under a fresh topic prefix, with model refits every 2 s, an SQLite sink
/// in a temporary folder and 200 synthetic customers (a population for the model job).
pub(crate) struct ScoredRun {
    pub(crate) server: Server,
    pub(crate) prefix: String,
    pub(crate) sink: String,
    pub(crate) addr: String,
    /// The temporary folder of the sink (remove it at the end).
    pub(crate) dir: PathBuf,
}

impl ScoredRun {
    /// Starts it with `more` flags, once `/readyz` answers.
    pub(crate) fn start(label: &str, more: &[&str]) -> Self {
        custflow_tests::ensure_stack();
        let prefix = custflow_tests::unique(label);
        let dir = std::env::temp_dir().join(&prefix);
        std::fs::create_dir_all(&dir).unwrap();
        let sink = format!("sqlite://{}/sink.db", dir.display());
        let addr = format!("127.0.0.1:{}", free_port());
        let mut args = vec!["run", "--model-every-secs", "2", "--topic-prefix", &prefix];
        args.extend(["--sink", &sink]);
        args.extend(more);
        let server = Server::start(&args, &addr, "/readyz");
        let summary = json_summary(
            Command::new(env!("CARGO_BIN_EXE_custflow"))
                .args(["synth", "--customers", "200", "--days", "120", "--json"])
                .args(["--topic-prefix", &prefix]),
        );
        assert!(summary["events"].as_u64().unwrap() > 200, "{summary}");
        Self {
            server,
            prefix,
            sink,
            addr,
            dir,
        }
    }
}

pub(crate) use custflow_tests::eventually;

pub(crate) fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

pub(crate) fn cdnow() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("testdata/cdnow/CDNOW_sample.txt")
}

#[test]
fn fit_on_cdnow_prints_the_published_parameters_and_writes_the_artefact() {
    let out_dir = std::env::temp_dir().join(format!("custflow-fit-{}", std::process::id()));
    let artefact = out_dir.join("model.json");
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_custflow"));
    cmd.args([
        "fit",
        "--json",
        "--unit",
        "week",
        "--calibration-end",
        "1997-09-30",
        "--holdout-end",
        "1998-06-30",
    ])
    .arg("--input")
    .arg(cdnow())
    .arg("--output")
    .arg(&artefact);
    let summary = json_summary(&mut cmd);
    assert_eq!(summary["customers"], 2357);
    let bg = &summary["models"]["bgnbd"];
    assert!(
        (bg["params"]["r"].as_f64().unwrap() - 0.2426).abs() < 0.001,
        "{bg}"
    );
    assert!(
        (bg["log_likelihood"].as_f64().unwrap() + 9582.43).abs() < 0.01,
        "{bg}"
    );
    assert!(
        (summary["models"]["pareto_nbd"]["params"]["beta"]
            .as_f64()
            .unwrap()
            - 11.669)
            .abs()
            < 0.01
    );
    assert!(
        (summary["models"]["gamma_gamma"]["params"]["p"]
            .as_f64()
            .unwrap()
            - 6.25)
            .abs()
            < 0.01
    );
    let champion = summary["champion"].as_str().unwrap();
    assert!(["bgnbd", "pareto_nbd"].contains(&champion));
    // Both models were scored on the holdout (1997-10-01 … 1998-06-30).
    for m in ["bgnbd", "pareto_nbd"] {
        let h = &summary["holdout"][m];
        assert!(
            h["mae"].as_f64().unwrap() > 0.0 && h["actual_total"].as_f64().unwrap() > 0.0,
            "{h}"
        );
    }
    let written: serde_json::Value =
        serde_json::from_slice(&std::fs::read(&artefact).unwrap()).unwrap();
    assert_eq!(written["version"], summary["version"]);
    assert_eq!(written["champion"], champion);
    std::fs::remove_dir_all(out_dir).ok();
}

#[test]
fn fit_explains_bad_input() {
    let dir = std::env::temp_dir().join(format!("custflow-bad-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let f = dir.join("tx.csv");
    std::fs::write(&f, "customer_id,date,value\nc1,1997-01-01,ten\n").unwrap();
    let out = Command::new(env!("CARGO_BIN_EXE_custflow"))
        .args(["fit", "--input"])
        .arg(&f)
        .output()
        .unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("line 2") && err.contains("\"ten\" is not a number"),
        "{err}"
    );
    std::fs::remove_dir_all(dir).ok();
}
