//! The command line as a user meets it: each command's `--help` lists the settings it
//! uses and no others, a mistyped key in `custflow.toml` is refused by name, and
//! `synth --end` makes generated history reproducible byte for byte.

use std::process::{Command, Output};

fn custflow(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_custflow"))
        .args(args)
        .env_remove("CUSTFLOW_CONFIG")
        .output()
        .unwrap()
}

fn help(command: &str) -> String {
    let out = custflow(&[command, "--help"]);
    assert!(out.status.success(), "{command} --help");
    String::from_utf8_lossy(&out.stdout).into_owned()
}

#[test]
fn each_command_lists_only_the_settings_it_uses() {
    let fit = help("fit");
    for other in [
        "--api-keys",
        "--alert-webhook",
        "--rate-limit",
        "--brokers",
        "--redis",
    ] {
        assert!(!fit.contains(other), "fit --help lists {other}:\n{fit}");
    }
    let features = help("features");
    assert!(features.contains("--redis"), "{features}");
    assert!(features.contains("--topic-prefix"), "{features}");
    assert!(!features.contains("--api-keys"), "{features}");
    assert!(!features.contains("--alert-rule"), "{features}");
    let serve = help("serve");
    for needed in [
        "--api-keys",
        "--http",
        "--brokers",
        "--redis",
        "--deny-attributes",
    ] {
        assert!(
            serve.contains(needed),
            "serve --help lacks {needed}:\n{serve}"
        );
    }
    assert!(!serve.contains("--alert-webhook"), "{serve}");
    let demo = help("demo");
    assert!(
        demo.contains("--alert-webhook") && demo.contains("--clock"),
        "{demo}"
    );
    // Environment variables keep their documented names.
    assert!(demo.contains("CUSTFLOW_REDIS_URL"), "{demo}");
    assert!(demo.contains("CUSTFLOW_SINK_URL"), "{demo}");
    assert!(demo.contains("CUSTFLOW_HTTP_ADDR"), "{demo}");
    // A flag of another command is refused, not ignored.
    let out = custflow(&["fit", "--api-keys", "k=admin"]);
    assert!(!out.status.success());
}

#[test]
fn a_mistyped_setting_in_the_file_is_refused_by_name() {
    let dir = std::env::temp_dir().join(format!("custflow-flags-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let file = dir.join("custflow.toml");
    std::fs::write(&file, "brokrs = \"127.0.0.1:9092\"\n").unwrap();
    let out = custflow(&["topics", "--config", file.to_str().unwrap()]);
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success());
    assert!(err.contains("\"brokrs\""), "{err}");
    assert!(
        err.contains("brokers"),
        "the known settings are listed: {err}"
    );
}

#[test]
fn synth_with_an_end_gives_the_same_bytes_every_time() {
    let dir = std::env::temp_dir().join(format!("custflow-synth-end-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let run = |name: &str, end: &str| {
        let path = dir.join(name);
        let out = custflow(&[
            "synth",
            "--customers",
            "150",
            "--days",
            "90",
            "--format",
            "json",
            "--end",
            end,
            "--output",
            path.to_str().unwrap(),
        ]);
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        std::fs::read(path).unwrap()
    };
    let a = run("a.ndjson", "2026-01-01");
    let b = run("b.ndjson", "2026-01-01");
    assert!(a.len() > 10_000, "{} bytes", a.len());
    assert_eq!(a, b, "two runs with one seed and one --end differ");
    // The end of the day, not its start: no event after 2026-01-01T23:59:59.999Z.
    let text = String::from_utf8(a.clone()).unwrap();
    assert!(
        text.contains("\"occurred_at\":\"2026-01-01T"),
        "nothing on the last day"
    );
    assert!(!text.contains("\"occurred_at\":\"2026-01-02"));
    let c = run("c.ndjson", "2026-01-02");
    assert_ne!(a, c, "--end moved nothing");
    let bad = custflow(&["synth", "--end", "soon"]);
    assert!(!bad.status.success());
    assert!(String::from_utf8_lossy(&bad.stderr).contains("--end"));
}

/// Flags, then the environment, then the file, then the defaults: the Redis a lookup
/// tries to reach says which won (nothing listens on these ports).
#[test]
fn settings_come_from_the_flag_then_the_environment_then_the_file() {
    let dir = std::env::temp_dir().join(format!("custflow-precedence-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let file = dir.join("custflow.toml");
    std::fs::write(&file, "redis = \"redis://127.0.0.1:1\"\n").unwrap();
    let file = file.to_str().unwrap();
    let tried = |args: &[&str], env: Option<&str>| {
        let mut cmd = Command::new(env!("CARGO_BIN_EXE_custflow"));
        cmd.args(["features", "c1", "--config", file])
            .args(args)
            .env_remove("CUSTFLOW_REDIS_URL");
        if let Some(url) = env {
            cmd.env("CUSTFLOW_REDIS_URL", url);
        }
        let out = cmd.output().unwrap();
        assert!(!out.status.success());
        String::from_utf8_lossy(&out.stderr).into_owned()
    };
    assert!(
        tried(&[], None).contains("127.0.0.1:1;"),
        "the file, over the default"
    );
    assert!(
        tried(&[], Some("redis://127.0.0.1:3")).contains("127.0.0.1:3;"),
        "the environment, over the file"
    );
    assert!(
        tried(
            &["--redis", "redis://127.0.0.1:2"],
            Some("redis://127.0.0.1:3")
        )
        .contains("127.0.0.1:2;"),
        "the flag, over the environment"
    );
}
