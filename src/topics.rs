//! `custflow topics`: creates the contract's missing topics and lists them.

use std::time::Duration;

use anyhow::Context;

use crate::config::Resolved;

/// Creates missing topics; the error says how to start a broker.
pub(crate) async fn ensure(config: &Resolved) -> anyhow::Result<Vec<custflow_kafka::TopicState>> {
    custflow_kafka::ensure_topics_replicated(
        &config.brokers,
        &config.topics(),
        config.replication_factor,
        Duration::from_secs(15),
    )
    .await
    .with_context(|| {
        format!(
            "is the broker running at {}? start it with scripts/stack.sh up",
            config.brokers
        )
    })
}

pub(crate) async fn run(config: &Resolved) -> anyhow::Result<()> {
    let states = ensure(config).await?;
    if !config.json {
        for s in &states {
            println!(
                "{:<28} {:>3} partitions{}",
                s.name,
                s.partitions,
                if s.created { "  (created)" } else { "" }
            );
        }
    }
    if config.json {
        let summary = serde_json::json!({
            "topics": states.iter().map(|s| serde_json::json!({"name": s.name, "partitions": s.partitions, "created": s.created})).collect::<Vec<_>>(),
            "created": states.iter().filter(|s| s.created).count(),
        });
        println!("{summary}");
    }
    Ok(())
}
