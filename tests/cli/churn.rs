//! `custflow train-churn` as a user runs it: on CDNOW with the 39 holdout weeks as
//! labels, installing the champion into the model in use; on synthetic customers
//! against the generator's ground truth; and its errors.

use std::process::Command;

use redis::Commands;

use crate::{cdnow, json_summary};

fn train_churn(args: &[&str]) -> Command {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_custflow"));
    cmd.arg("train-churn").args(args);
    cmd
}

#[test]
fn cdnow_holdout_report_plot_and_install() {
    let dir = std::env::temp_dir().join(format!("custflow-churn-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let prefix = custflow_tests::unique("churn-cli-");
    let mut redis = redis::Client::open(custflow_tests::redis_url())
        .unwrap()
        .get_connection()
        .unwrap();

    // A model in use to install into: the CDNOW fit, in days as the processors use.
    let artefact = dir.join("model.json");
    json_summary(
        Command::new(env!("CARGO_BIN_EXE_custflow"))
            .args([
                "fit",
                "--json",
                "--no-pareto",
                "--calibration-end",
                "1997-09-30",
                "--churn-horizon-days",
                "30",
                "--input",
            ])
            .arg(cdnow())
            .arg("--output")
            .arg(&artefact),
    );
    let model: serde_json::Value =
        serde_json::from_slice(&std::fs::read(&artefact).unwrap()).unwrap();
    assert_eq!(model["churn_horizon_days"], 30.0);
    let version = model["version"].as_str().unwrap();
    let _: () = redis
        .set(format!("{prefix}cf:model:{version}"), model.to_string())
        .unwrap();
    let _: () = redis
        .set(format!("{prefix}cf:model:current"), version)
        .unwrap();

    let report = dir.join("report.json");
    let s = json_summary(
        train_churn(&[
            "--json",
            "--as-of",
            "1997-09-30",
            "--evaluate-until",
            "1998-06-30",
            "--install",
            "--topic-prefix",
            &prefix,
        ])
        .arg("--input")
        .arg(cdnow())
        .arg("--report")
        .arg(&report),
    );
    let names: Vec<&str> = s["candidates"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| c["name"].as_str().unwrap())
        .collect();
    assert_eq!(names[0], "btyd_no_purchase", "{names:?}");
    assert_eq!(names[1], "btyd_one_minus_p_alive", "{names:?}");
    assert!(names.iter().any(|n| n.starts_with("logistic")), "{names:?}");
    assert!(names.iter().any(|n| n.starts_with("gbt")), "{names:?}");
    let champion = s["champion"].as_str().unwrap();
    assert!(names.contains(&champion));

    // Judged on every customer with the holdout's labels, beside the BTYD baseline: the
    // probability of no purchase ranks the churners; 1 − P(alive) ranks them worse than
    // chance (every one-time buyer is "alive").
    let e = &s["evaluation"]["result"];
    assert_eq!(s["evaluation"]["labels"], "holdout");
    assert_eq!(e["rows"], 2357);
    let auc = e["auc"].as_f64().unwrap();
    let btyd = e["btyd_auc"].as_f64().unwrap();
    let dead = e["one_minus_p_alive_auc"].as_f64().unwrap();
    assert!(auc > 0.7, "classifier {auc}");
    assert!(
        btyd > 0.7 && dead < 0.5,
        "P(no purchase) {btyd}, 1 − P(alive) {dead}"
    );
    let log_loss = e["btyd_log_loss"].as_f64().unwrap();
    assert!(log_loss < 1.0, "the baseline's log-loss {log_loss}");
    assert!(e["calibration"].as_array().unwrap().len() >= 3, "{e}");
    assert_eq!(e["profit_curve"].as_array().unwrap().len(), 101);

    // The files: the full report (with the model) and the plot.
    let written: serde_json::Value =
        serde_json::from_slice(&std::fs::read(&report).unwrap()).unwrap();
    assert_eq!(written["model"]["name"], champion);
    let svg = std::fs::read_to_string(report.with_extension("svg")).unwrap();
    assert!(
        svg.starts_with("<svg") && svg.contains("BTYD P(no purchase) AUC"),
        "{svg:.200}"
    );
    // Numbers on the axes: 0 … 1 on the ROC and calibration panels, profits on the third.
    assert!(svg.matches(">0.4</text>").count() >= 4, "{svg}");
    assert!(svg.matches("text-anchor=\"end\"").count() >= 9, "{svg}");

    // Installed: a new version in use, carrying the champion and its horizon as the
    // served one, the rest of the model kept.
    let installed = s["installed_version"].as_str().unwrap();
    assert_ne!(installed, version);
    let current: String = redis.get(format!("{prefix}cf:model:current")).unwrap();
    assert_eq!(current, installed);
    let stored: String = redis.get(format!("{prefix}cf:model:{installed}")).unwrap();
    let stored: serde_json::Value = serde_json::from_str(&stored).unwrap();
    assert_eq!(stored["churn"]["name"], champion);
    assert_eq!(stored["churn_horizon_days"], 90.0);
    assert_eq!(stored["churn"]["horizon_days"], 90.0);
    assert_eq!(stored["bgnbd"], model["bgnbd"]);

    let _: () = redis
        .del(&[
            format!("{prefix}cf:model:current"),
            format!("{prefix}cf:model:{version}"),
            format!("{prefix}cf:model:{installed}"),
        ])
        .unwrap();
    std::fs::remove_dir_all(dir).ok();
}

#[test]
fn synthetic_customers_are_judged_against_who_really_dropped_out() {
    let dir = std::env::temp_dir().join(format!("custflow-churn-synth-{}", std::process::id()));
    let s = json_summary(
        train_churn(&["--json", "--synth-customers", "4000", "--budget-secs", "5"])
            .arg("--report")
            .arg(dir.join("r.json")),
    );
    let e = &s["evaluation"]["result"];
    assert_eq!(s["evaluation"]["labels"], "ground_truth_dropout");
    assert!(e["rows"].as_u64().unwrap() > 3000, "{e}");
    let rate = e["churn_rate"].as_f64().unwrap();
    assert!(rate > 0.05 && rate < 0.95, "{rate}");
    // The data come from the BG/NBD process and the labels are who dropped out (not who
    // stays quiet for 90 days), so its 1 − P(alive) ranks them well; the probability of
    // no purchase, which answers the other question, still beats chance.
    assert!(e["one_minus_p_alive_auc"].as_f64().unwrap() > 0.8, "{e}");
    assert!(e["btyd_auc"].as_f64().unwrap() > 0.5, "{e}");
    assert!(e["auc"].as_f64().is_some(), "{e}");
    std::fs::remove_dir_all(dir).ok();
}

#[test]
fn training_sets_can_be_replayed_from_the_orders_topic() {
    let prefix = custflow_tests::unique("churn-topics-");
    let dir = std::env::temp_dir().join(format!("custflow-churn-topics-{}", std::process::id()));
    let synth = json_summary(
        Command::new(env!("CARGO_BIN_EXE_custflow"))
            .args(["synth", "--customers", "1500", "--days", "400", "--json"])
            .args(["--topic-prefix", &prefix]),
    );
    assert_eq!(synth["failed"], 0, "{synth}");
    let s = json_summary(
        train_churn(&["--json", "--from-topics", "--budget-secs", "5"])
            .args(["--topic-prefix", &prefix])
            .arg("--report")
            .arg(dir.join("r.json")),
    );
    // Every record on the topic was read, none rejected; refunds and cancellations
    // are transactions too, so there are at most as many as records.
    let on_topic = custflow_tests::read_topic(&format!("{prefix}orders"), 1).len() as u64;
    let r = &s["replayed"];
    assert_eq!(r["records"].as_u64(), Some(on_topic), "{r}");
    assert_eq!(r["rejected"], 0, "{r}");
    let tx = r["transactions"].as_u64().unwrap();
    assert!(tx > 1500 && tx <= on_topic, "{r}");
    assert!(s["fit_rows"].as_u64().unwrap() > 1000, "{s}");
    assert!(s["candidates"].as_array().unwrap().len() >= 2, "{s}");
    std::fs::remove_dir_all(dir).ok();
}

#[test]
fn train_churn_explains_what_is_wrong() {
    let run = |args: &[&str]| {
        let out = train_churn(args)
            .arg("--input")
            .arg(cdnow())
            .output()
            .unwrap();
        assert!(!out.status.success());
        String::from_utf8_lossy(&out.stderr).into_owned()
    };
    let e = run(&["--as-of", "1997-09-30", "--evaluate-until", "1997-09-01"]);
    assert!(e.contains("--evaluate-until must be after --as-of"), "{e}");
    let e = run(&["--as-of", "1997-03-01"]);
    assert!(e.contains("too little time for a 90-day horizon"), "{e}");
    let out = train_churn(&[]).output().unwrap();
    assert!(String::from_utf8_lossy(&out.stderr).contains("--input FILE is required"));
}
