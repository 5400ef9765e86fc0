//! `custflow features <id>` (from Redis, computed as of now or `--as-of`) and
//! `custflow scores <id>` (point in time, from the score history table).

use anyhow::Context;
use clap::Args;
use custflow_connectors::sql_sink::SqlSink;
use custflow_feature_store::features::{compute, DEFAULT_AT_RISK_DAYS};
use custflow_feature_store::model::ModelHandle;
use custflow_feature_store::state::CustomerState;
use custflow_http::features::{lookup_body, parse_as_of};
use redis::AsyncCommands;

use crate::config::Resolved;

/// A customer and an optional instant.
#[derive(Debug, Args)]
pub(crate) struct LookupArgs {
    /// Customer id.
    id: String,
    /// Instant: a date (`1997-09-30`, the end of that day in UTC), RFC 3339 or epoch
    /// milliseconds; default now.
    #[arg(long)]
    as_of: Option<String>,
}

pub(crate) async fn features(config: &Resolved, args: &LookupArgs) -> anyhow::Result<()> {
    let as_of = parse_as_of(args.as_of.as_deref(), "as_of")
        .map_err(|e| anyhow::anyhow!("--as-of: {}", e.message))?;
    let (mut conn, keys) = crate::app::redis_connection(config).await?;
    let ready: bool = conn.exists(keys.state_ready()).await?;
    // The same answer as the API's lookups while the processors build the features.
    anyhow::ensure!(ready, "{}", custflow_http::features::not_ready().message);
    let raw = custflow_feature_store::keys::read_states(&mut conn, &keys, &[args.id.as_str()])
        .await?
        .pop()
        .flatten();
    let raw = raw.with_context(|| format!("no customer {:?} in this deployment", args.id))?;
    let state = CustomerState::decode(&raw).context("the stored state is unreadable")?;
    if state.is_blank() {
        anyhow::bail!("no customer {:?} in this deployment (erased)", args.id);
    }
    let model = ModelHandle::default();
    model.refresh(&mut conn, &keys).await?;
    let f = compute(&state, as_of, DEFAULT_AT_RISK_DAYS);
    let body = lookup_body(&args.id, &f, model.current().as_deref(), None);
    if config.json {
        println!("{body}");
    } else {
        println!("{}", serde_json::to_string_pretty(&body)?);
    }
    Ok(())
}

pub(crate) async fn scores(config: &Resolved, args: &LookupArgs) -> anyhow::Result<()> {
    let at = match &args.as_of {
        None => None,
        Some(s) => Some(
            parse_as_of(Some(s), "as_of").map_err(|e| anyhow::anyhow!("--as-of: {}", e.message))?,
        ),
    };
    let sink = SqlSink::connect(&config.sink)
        .await
        .with_context(|| format!("opening {}", config.sink))?;
    let row = sink.score_at(&args.id, at).await?;
    let row = row.with_context(|| match at {
        Some(t) => format!(
            "no score of {:?} valid at {}",
            args.id,
            custflow_schemas::time::format_rfc3339(t)
        ),
        None => format!("no score of {:?} in {}", args.id, config.sink),
    })?;
    let v = serde_json::to_value(&row)?;
    if config.json {
        println!("{v}");
    } else {
        println!("{}", serde_json::to_string_pretty(&v)?);
    }
    Ok(())
}
