//! `custflow train-churn`: point-in-time training sets from transactions (a file, a
//! replay of the `orders` topic or the synthetic generator), the candidate search, the report as JSON and SVG, and
//! optionally installing the champion into the model artefact in use. The maths is in
//! `custflow_models::churn`.

use std::path::PathBuf;

use anyhow::Context;
use clap::Args;
use custflow_feature_store::model::ModelHandle;
use custflow_ingest::synth::{purchase_log, SynthParams};
use custflow_models::churn::train::{
    evaluate, evaluation_set, train_from_transactions, Evaluation, SnapshotPlan, TrainOptions,
};
use custflow_models::churn::{plot, ChurnModel, Offer};
use custflow_models::fit::holdout_purchases;
use custflow_processors::replay::{order_transactions, Replayed};
use custflow_schemas::avro::AvroCodec;
use custflow_schemas::time::DAY_MS;
use serde_json::json;

use crate::config::Resolved;
use crate::fit::{day, TransactionArgs};

/// Options of `custflow train-churn`.
#[derive(Debug, Args)]
pub(crate) struct TrainChurnArgs {
    #[command(flatten)]
    transactions: TransactionArgs,
    /// Train on this many synthetic customers instead of --input, and judge the
    /// models against the generator's ground truth (who really dropped out).
    #[arg(long, conflicts_with = "input")]
    synth_customers: Option<u64>,
    /// Replay the `orders` topic of this deployment (refunds and cancellations on the
    /// original order's day, as the processors apply them) instead of --input.
    #[arg(long, conflicts_with_all = ["input", "synth_customers"])]
    from_topics: bool,
    /// Days the synthetic customers are generated over, ending now.
    #[arg(long, default_value_t = 730)]
    synth_days: i64,
    /// Nothing after this day is used for training; default: the last transaction day.
    #[arg(long)]
    as_of: Option<String>,
    /// Churned means no purchase within this many days after a snapshot. Installed, it
    /// is also the horizon `churn_probability` is served for (the artefact's
    /// `churn_horizon_days`): the label and the served probability are one setting.
    #[arg(long, visible_alias = "churn-horizon-days", default_value_t = 90)]
    horizon_days: i64,
    /// Days between training snapshots.
    #[arg(long, default_value_t = 30)]
    spacing_days: i64,
    /// Training snapshots (cut-offs) at most, besides the selection snapshot.
    #[arg(long, default_value_t = 4)]
    cutoffs: usize,
    /// Also judge the champion on the customers as of --as-of, labelled by whether
    /// they bought in (as-of, this day] (a later holdout, such as CDNOW's 39 weeks).
    #[arg(long, conflicts_with = "synth_customers")]
    evaluate_until: Option<String>,
    /// Cost of one retention offer.
    #[arg(long, default_value_t = Offer::default().cost)]
    offer_cost: f64,
    /// Share of would-be churners an offer keeps.
    #[arg(long, default_value_t = Offer::default().acceptance)]
    offer_acceptance: f64,
    /// Seconds after which no new candidate starts.
    #[arg(long, default_value_t = 30.0)]
    budget_secs: f64,
    #[arg(long, default_value_t = 42)]
    seed: u64,
    /// Where to write the report (JSON); default data/churn/<time>.json.
    #[arg(long)]
    report: Option<PathBuf>,
    /// Where to write the plot (SVG); default: the report's path with .svg.
    #[arg(long)]
    plot: Option<PathBuf>,
    /// Install the champion into the model artefact in use (Redis), as a new version.
    #[arg(long)]
    install: bool,
}

pub(crate) async fn run(config: &Resolved, args: &TrainChurnArgs) -> anyhow::Result<()> {
    anyhow::ensure!(args.horizon_days >= 1, "--horizon-days must be at least 1");
    anyhow::ensure!(
        args.offer_cost >= 0.0 && (0.0..=1.0).contains(&args.offer_acceptance),
        "--offer-cost must be ≥ 0 and --offer-acceptance in [0, 1]"
    );
    let now = custflow_schemas::time::now_ms();
    let mut replayed = None;
    let (tx, truth) = match args.synth_customers {
        Some(n) => {
            anyhow::ensure!(n >= 100, "--synth-customers must be at least 100");
            anyhow::ensure!(
                args.synth_days >= 3 * args.horizon_days,
                "--synth-days must cover at least three horizons"
            );
            eprintln!(
                "generating {n} synthetic customers over {} days …",
                args.synth_days
            );
            let log = purchase_log(SynthParams {
                seed: args.seed,
                customers: n,
                start_ms: now - args.synth_days * DAY_MS,
                end_ms: now,
                ..SynthParams::default()
            })
            .context("synthetic generator")?;
            (log.tx, Some(log.dropped_out))
        }
        None if args.from_topics => {
            let r = replay_orders(config, args).await?;
            replayed = Some(
                json!({"records": r.records, "rejected": r.rejected, "transactions": r.transactions.len()}),
            );
            (r.transactions, None)
        }
        None => (args.transactions.read()?.to_vec(), None),
    };
    let last = tx.iter().map(|t| t.1).max().context("no transactions")?;
    let as_of = match &args.as_of {
        Some(s) => day(s, "as-of")?,
        None if truth.is_some() => now.div_euclid(DAY_MS),
        None => last,
    };
    let plan = SnapshotPlan {
        as_of_day: as_of,
        horizon_days: args.horizon_days,
        spacing_days: args.spacing_days,
        fit_cutoffs: args.cutoffs,
    };
    let opts = TrainOptions {
        budget_secs: args.budget_secs,
        seed: args.seed,
        horizon_days: args.horizon_days as f64,
        offer: Offer {
            cost: args.offer_cost,
            acceptance: args.offer_acceptance,
        },
        trained_at_ms: now,
    };
    eprintln!("training on {} transactions up to day {as_of} …", tx.len());
    let tx = std::sync::Arc::new(tx);
    let shared = tx.clone();
    let report =
        tokio::task::spawn_blocking(move || train_from_transactions(&shared, &plan, &opts))
            .await??;

    // Judged beside the BTYD baseline on a set the search never saw.
    let evaluation: Option<(&str, Evaluation)> = match (&truth, &args.evaluate_until) {
        (Some(dead), _) => {
            let d = evaluation_set(&tx, as_of, opts.horizon_days, args.seed, |id| {
                dead.get(id).copied()
            })?;
            Some(("ground_truth_dropout", evaluate(&report.model, &d)))
        }
        (None, Some(until)) => {
            let until = day(until, "evaluate-until")?;
            anyhow::ensure!(until > as_of, "--evaluate-until must be after --as-of");
            anyhow::ensure!(
                until <= last,
                "--evaluate-until is after the last transaction day"
            );
            let bought = holdout_purchases(
                tx.iter().map(|(c, d, v)| (c.as_str(), *d, *v)),
                as_of,
                until,
            );
            let d = evaluation_set(&tx, as_of, opts.horizon_days, args.seed, |id| {
                Some(!bought.contains_key(id))
            })?;
            Some(("holdout", evaluate(&report.model, &d)))
        }
        (None, None) => None,
    };

    let path = args
        .report
        .clone()
        .unwrap_or_else(|| PathBuf::from(format!("data/churn/{now}.json")));
    let plot_path = args
        .plot
        .clone()
        .unwrap_or_else(|| path.with_extension("svg"));
    for p in [&path, &plot_path] {
        if let Some(dir) = p.parent().filter(|d| !d.as_os_str().is_empty()) {
            std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
        }
    }
    let shown = evaluation.as_ref().map_or(&report.selection, |(_, e)| e);
    std::fs::write(
        &plot_path,
        plot::svg(&report.model.name, shown, report.model.threshold),
    )
    .with_context(|| format!("writing {}", plot_path.display()))?;

    let installed = if args.install {
        Some(install(config, &report.model).await?)
    } else {
        None
    };
    let body = json!({
        "champion": report.model.name,
        "threshold": report.model.threshold,
        "horizon_days": args.horizon_days,
        "as_of_day": as_of,
        "fit_rows": report.fit_rows,
        "calibration_rows": report.calibration_rows,
        "train_seconds": report.seconds,
        "candidates": report.candidates,
        "selection": report.selection,
        "evaluation": evaluation.as_ref().map(|(kind, e)| json!({"labels": kind, "result": e})),
        "model": report.model,
        "installed_version": installed,
        "replayed": replayed,
        "report": path.display().to_string(),
        "plot": plot_path.display().to_string(),
    });
    std::fs::write(&path, serde_json::to_vec_pretty(&body)?)
        .with_context(|| format!("writing {}", path.display()))?;

    if config.json {
        let mut short = body.clone();
        if let Some(o) = short.as_object_mut() {
            o.remove("model");
            o.remove("selection");
        }
        println!("{short}");
        return Ok(());
    }
    println!(
        "training rows  {} (+ {} to calibrate, {} to select)",
        report.fit_rows, report.calibration_rows, report.selection.rows
    );
    println!(
        "{:<34} {:>7} {:>9} {:>7} {:>8}",
        "candidate", "AUC", "log-loss", "ECE", "fit s"
    );
    for c in &report.candidates {
        println!(
            "{:<34} {:>7} {:>9.4} {:>7.4} {:>8.2}",
            c.name,
            c.auc.map_or("n/a".into(), |a| format!("{a:.4}")),
            c.log_loss,
            c.calibration_error,
            c.fit_seconds
        );
    }
    println!("champion       {}", report.model.name);
    println!(
        "threshold      {:.2} (profit {:.0} on the selection set)",
        report.model.threshold,
        best_profit(&report.selection)
    );
    if let Some((kind, e)) = &evaluation {
        let f = |a: Option<f64>| a.map_or("n/a".into(), |a| format!("{a:.4}"));
        println!(
            "{kind:<14} {} customers, churn rate {:.3}: AUC {} (BTYD P(no purchase) {}, 1 − P(alive) {}), log-loss {:.4} (BTYD {:.4})",
            e.rows,
            e.churn_rate,
            f(e.auc),
            f(e.btyd_auc),
            f(e.one_minus_p_alive_auc),
            e.log_loss,
            e.btyd_log_loss
        );
    }
    println!("report         {}", path.display());
    println!("plot           {}", plot_path.display());
    if let Some(v) = installed {
        println!("installed      model version {v}");
    }
    Ok(())
}

/// The deployment's orders as transactions, up to --as-of when it is given.
async fn replay_orders(config: &Resolved, args: &TrainChurnArgs) -> anyhow::Result<Replayed> {
    let up_to = match &args.as_of {
        Some(s) => Some((day(s, "as-of")? + 1) * DAY_MS - 1),
        None => None,
    };
    let registry = crate::process::registry(config).await?;
    let ids = registry.register_builtin(&config.topics()).await?;
    let codec = AvroCodec::new(registry, ids);
    let (brokers, topics) = (config.brokers.clone(), config.topics());
    eprintln!("replaying {} …", topics.name("orders"));
    let r =
        tokio::task::spawn_blocking(move || order_transactions(&brokers, &topics, &codec, up_to))
            .await??;
    eprintln!(
        "read {} order records ({} rejected, as the processors would dead-letter them)",
        r.records, r.rejected
    );
    anyhow::ensure!(!r.transactions.is_empty(), "the orders topic has no orders");
    Ok(r)
}

fn best_profit(e: &Evaluation) -> f64 {
    e.profit_curve
        .iter()
        .map(|p| p.realised_profit)
        .fold(0.0, f64::max)
}

/// Stores the artefact in use with `churn` as a new version and makes it current.
async fn install(config: &Resolved, churn: &ChurnModel) -> anyhow::Result<String> {
    let (mut conn, keys) = crate::app::redis_connection(config).await?;
    let handle = ModelHandle::default();
    handle.refresh(&mut conn, &keys).await?;
    let current = handle.current().context(
        "no model artefact in use yet: `custflow run` (or the demo) makes one once customers have orders",
    )?;
    let next = current.with_churn(churn.clone(), custflow_schemas::time::now_ms());
    handle.promote(&mut conn, &keys, &next).await?;
    Ok(next.version)
}
