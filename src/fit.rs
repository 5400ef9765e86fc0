//! `custflow fit`: reads transactions, fits the models, prints the report, writes the
//! artefact. The maths is in `custflow-models`.

use std::path::PathBuf;
use std::time::Instant;

use anyhow::Context;
use clap::{Args, ValueEnum};
use custflow_models::fit::{fit_transactions, FitOptions};
use custflow_models::input::{self, CsvColumns};
use serde_json::json;

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub(crate) enum Format {
    /// CSV when the first line has a comma, else CDNOW.
    Auto,
    Cdnow,
    Csv,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub(crate) enum Unit {
    Day,
    Week,
}

/// Where transactions come from (`custflow fit`, `custflow train-churn`).
#[derive(Debug, Args)]
pub(crate) struct TransactionArgs {
    /// Transactions file (CDNOW text or CSV with a header).
    #[arg(long)]
    pub(crate) input: Option<PathBuf>,
    #[arg(long, value_enum, default_value_t = Format::Auto)]
    format: Format,
    /// CSV column of the customer id.
    #[arg(long, default_value = "customer_id")]
    customer_column: String,
    /// CSV column of the date (YYYY-MM-DD, YYYYMMDD, M/D/YYYY or RFC 3339).
    #[arg(long, default_value = "date")]
    date_column: String,
    /// CSV column of the net value.
    #[arg(long, default_value = "value")]
    value_column: String,
}

impl TransactionArgs {
    /// Reads and parses the file; every bad line is an error naming it.
    pub(crate) fn read(&self) -> anyhow::Result<input::Transactions> {
        let path = self.input.as_ref().context("--input FILE is required")?;
        let text =
            std::fs::read_to_string(path).with_context(|| format!("reading {}", path.display()))?;
        let csv = match self.format {
            Format::Csv => true,
            Format::Cdnow => false,
            Format::Auto => text.lines().next().is_some_and(|l| l.contains(',')),
        };
        let tx = if csv {
            let cols = CsvColumns {
                customer: self.customer_column.clone(),
                date: self.date_column.clone(),
                value: self.value_column.clone(),
            };
            input::parse_csv(&text, &cols)
        } else {
            input::parse_cdnow(&text)
        }
        .with_context(|| format!("parsing {}", path.display()))?;
        anyhow::ensure!(!tx.is_empty(), "{} has no transactions", path.display());
        Ok(tx)
    }
}

/// Options of `custflow fit`.
#[derive(Debug, Args)]
pub(crate) struct FitArgs {
    #[command(flatten)]
    transactions: TransactionArgs,
    /// Last day of the calibration period (inclusive); default: the last transaction day.
    #[arg(long)]
    calibration_end: Option<String>,
    /// Last day of the holdout period (inclusive), scored to pick the champion.
    #[arg(long)]
    holdout_end: Option<String>,
    /// Time unit of the fitted parameters.
    #[arg(long, value_enum, default_value_t = Unit::Day)]
    unit: Unit,
    /// Skip the Pareto/NBD challenger.
    #[arg(long)]
    no_pareto: bool,
    /// Where to write the artefact (JSON); default data/models/<version>.json.
    #[arg(long)]
    output: Option<PathBuf>,
    /// Seed of k-means.
    #[arg(long, default_value_t = 42)]
    seed: u64,
    /// Days ahead that the served `churn_probability` speaks of (no purchase in them).
    #[arg(long, default_value_t = 90.0)]
    churn_horizon_days: f64,
}

pub(crate) fn day(s: &str, what: &str) -> anyhow::Result<i64> {
    input::parse_day(s).with_context(|| format!("--{what} {s:?} is not a date (use YYYY-MM-DD)"))
}

pub(crate) fn run(args: &FitArgs, json_out: bool) -> anyhow::Result<()> {
    let tx = args.transactions.read()?;
    let last = tx
        .rows()
        .iter()
        .map(|t| t.1)
        .max()
        .context("the input has no transactions")?;
    let cal_end = args
        .calibration_end
        .as_deref()
        .map(|s| day(s, "calibration-end"))
        .transpose()?
        .unwrap_or(last);
    let holdout_end = args
        .holdout_end
        .as_deref()
        .map(|s| day(s, "holdout-end"))
        .transpose()?;
    if let Some(h) = holdout_end {
        anyhow::ensure!(h > cal_end, "--holdout-end must be after --calibration-end");
    }
    anyhow::ensure!(
        args.churn_horizon_days >= 1.0,
        "--churn-horizon-days must be at least 1"
    );
    let now = custflow_schemas::time::now_ms();
    let version = format!("m{}", now);
    let opts = FitOptions {
        calibration_end_day: cal_end,
        holdout_end_day: holdout_end,
        unit_days: match args.unit {
            Unit::Day => 1.0,
            Unit::Week => 7.0,
        },
        version: version.clone(),
        created_at_ms: now,
        seed: args.seed,
        pareto: !args.no_pareto,
        churn_horizon_days: args.churn_horizon_days,
    };
    eprintln!("fitting on {} transactions …", tx.len());
    let started = Instant::now();
    let outcome = fit_transactions(&tx, &opts)?;
    let seconds = started.elapsed().as_secs_f64();
    let a = &outcome.artefact;
    let path = args
        .output
        .clone()
        .unwrap_or_else(|| PathBuf::from(format!("data/models/{version}.json")));
    if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
        std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
    }
    std::fs::write(&path, serde_json::to_vec_pretty(a)?)
        .with_context(|| format!("writing {}", path.display()))?;

    let b = a.bgnbd.params;
    let g = a.gamma_gamma.params;
    let mut models = json!({
        "bgnbd": {"params": {"r": b.r, "alpha": b.alpha, "a": b.a, "b": b.b}, "log_likelihood": a.bgnbd.log_likelihood},
        "gamma_gamma": {"params": {"p": g.p, "q": g.q, "gamma": g.gamma}, "log_likelihood": a.gamma_gamma.log_likelihood},
    });
    if let Some(p) = &a.pareto_nbd {
        let q = p.params;
        models["pareto_nbd"] = json!({"params": {"r": q.r, "alpha": q.alpha, "s": q.s, "beta": q.beta}, "log_likelihood": p.log_likelihood});
    }
    let summary = json!({
        "customers": a.training.customers,
        "fit_seconds": seconds,
        "models": models,
        "champion": a.champion.as_str(),
        "holdout": outcome.holdout,
        "clusters": a.kmeans.as_ref().map(|k| k.names.len()),
        "artefact": path.display().to_string(),
        "version": a.version,
    });
    if json_out {
        println!("{summary}");
    } else {
        println!("customers      {}", a.training.customers);
        println!(
            "BG/NBD         r={:.4} alpha={:.4} a={:.4} b={:.4}  LL={:.2}",
            b.r, b.alpha, b.a, b.b, a.bgnbd.log_likelihood
        );
        if let Some(p) = &a.pareto_nbd {
            let q = p.params;
            println!(
                "Pareto/NBD     r={:.4} alpha={:.4} s={:.4} beta={:.4}  LL={:.2}",
                q.r, q.alpha, q.s, q.beta, p.log_likelihood
            );
        }
        println!(
            "Gamma-Gamma    p={:.4} q={:.4} gamma={:.4}",
            g.p, g.q, g.gamma
        );
        for (name, h) in &outcome.holdout {
            println!(
                "holdout {name:<10} MAE={:.4} RMSE={:.4} predicted={:.1} actual={:.0}",
                h.mae, h.rmse, h.predicted_total, h.actual_total
            );
        }
        println!("champion       {}", a.champion.as_str());
        println!("fit time       {seconds:.3} s");
        println!("artefact       {}", path.display());
    }
    Ok(())
}
