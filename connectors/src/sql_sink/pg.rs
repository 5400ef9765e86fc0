//! The SQL sink's score writes on PostgreSQL: each transaction copies its scores into a
//! temporary table with `COPY … FROM STDIN` (CSV) and applies them from there with three
//! set-based statements. Parsing a CSV copy once costs a third of what expanding the
//! same rows from JSON in each statement did.

use std::io::Write;

use custflow_schemas::CustomerScore;
use sqlx::postgres::{PgPool, PgPoolOptions};
use sqlx::{Executor, Postgres, Row};

use super::{Applied, Result, ON_CONFLICT, SCORE_COLUMNS};

/// The staging table of one connection: a transaction's new scores, emptied at commit.
/// `closes` is the stored version the customer's first new score closes.
const STAGE: &str = "CREATE TEMP TABLE IF NOT EXISTS score_stage (
    customer_id TEXT, version BIGINT, valid_from BIGINT, valid_to BIGINT, is_current INTEGER,
    closes BIGINT, model_version TEXT, frequency DOUBLE PRECISION, recency DOUBLE PRECISION,
    age DOUBLE PRECISION, monetary_value DOUBLE PRECISION, p_alive DOUBLE PRECISION,
    churn_probability DOUBLE PRECISION, expected_orders_90d DOUBLE PRECISION,
    expected_aov DOUBLE PRECISION, clv_12m DOUBLE PRECISION, value_tier TEXT, r_score INTEGER,
    f_score INTEGER, m_score INTEGER, rfm_segment TEXT, cluster TEXT, at_risk INTEGER,
    retention_target INTEGER, expected_retention_profit DOUBLE PRECISION)
    ON COMMIT DELETE ROWS";

/// Every statement of these connections finds its rows by key: a few thousand staged
/// rows, each looked up in the tables' primary keys. Left to itself, the planner (on
/// a temporary table it has no statistics of) hashed the whole history table for each
/// batch's close (and compiled that plan with JIT), so writes slowed as history grew.
///
/// The two statements that look rows up in the growing tables (the version lookup and
/// the close) are not kept prepared: PostgreSQL keeps the plan of a prepared statement
/// (one without parameters at once, one with them after five runs) until the table's
/// statistics change, which without autovacuum is never. Plans made while the tables were
/// empty scanned them: 7–8 s for a version lookup and 15 s for a close of 4,000 scores
/// once `run` had written 200,000 customers through the same connections.
///
/// Sequential scans are off too: even planned afresh, the close chose to scan the
/// history table and compare every staged row with every current row (17 million
/// comparisons, 2 s, for 669 closes) when the table's statistics, never refreshed
/// without autovacuum, said it held 119 current rows and it held 30,000. The staging
/// table has no index and is still scanned.
const PLAN: [&str; 4] = [
    "SET enable_hashjoin = off",
    "SET enable_mergejoin = off",
    "SET enable_seqscan = off",
    "SET jit = off",
];

/// A pool whose connections each have their staging table.
pub(super) async fn connect(url: &str, connections: u32) -> Result<PgPool> {
    Ok(PgPoolOptions::new()
        .max_connections(connections)
        .after_connect(|conn, _| {
            Box::pin(async move {
                conn.execute(STAGE).await?;
                for setting in PLAN {
                    conn.execute(setting).await?;
                }
                Ok(())
            })
        })
        .connect(url)
        .await?)
}

/// The stored versions of `ids`.
pub(super) async fn stored_versions(
    tx: &mut sqlx::Transaction<'_, Postgres>,
    ids: &[&str],
) -> Result<std::collections::BTreeMap<String, i64>> {
    let rows =
        sqlx::query("SELECT customer_id, version FROM customer_scores WHERE customer_id = ANY($1)")
            .bind(ids)
            .persistent(false)
            .fetch_all(&mut **tx)
            .await?;
    Ok(rows
        .iter()
        .map(|r| (r.get::<String, _>(0), r.get::<i64, _>(1)))
        .collect())
}

/// Writes `applied` (per customer, its scores newer than `stored`, in version order):
/// closes each customer's current history row, adds a history row per score (all but
/// the customer's last already closed) and upserts the newest into `customer_scores`.
pub(super) async fn apply(
    tx: &mut sqlx::Transaction<'_, Postgres>,
    applied: &[Applied<'_>],
    stored: &std::collections::BTreeMap<String, i64>,
    now: i64,
) -> Result<()> {
    let mut csv = Vec::with_capacity(applied.len() * 256);
    for (customer, list) in applied {
        for (i, s) in list.iter().enumerate() {
            let valid_to = list.get(i + 1).map(|next| next.as_of);
            let closes = if i == 0 {
                stored.get(*customer).copied()
            } else {
                None
            };
            row(&mut csv, customer, s, valid_to, closes);
        }
    }
    let mut copy = tx
        .copy_in_raw(&format!(
            "COPY score_stage (customer_id, version, valid_from, valid_to, is_current, closes, \
             {SCORE_COLUMNS}) FROM STDIN (FORMAT csv)"
        ))
        .await?;
    copy.send(csv).await?;
    copy.finish().await?;
    // By primary key: the current row's version is the one `customer_scores` holds.
    // Planned afresh each time (see `PLAN`).
    sqlx::query(
        "UPDATE customer_score_history h SET valid_to = s.valid_from, is_current = 0
         FROM score_stage s
         WHERE s.closes IS NOT NULL AND h.customer_id = s.customer_id AND h.version = s.closes
           AND h.is_current = 1",
    )
    .persistent(false)
    .execute(&mut **tx)
    .await?;
    sqlx::query(&format!(
        "INSERT INTO customer_score_history (customer_id, version, valid_from, valid_to, is_current, {SCORE_COLUMNS})
         SELECT customer_id, version, valid_from, valid_to, is_current, {SCORE_COLUMNS} FROM score_stage
         ON CONFLICT (customer_id, version) DO NOTHING"
    ))
    .execute(&mut **tx)
    .await?;
    sqlx::query(&format!(
        "INSERT INTO customer_scores (customer_id, version, as_of, {SCORE_COLUMNS}, updated_at)
         SELECT customer_id, version, valid_from, {SCORE_COLUMNS}, $1 FROM score_stage
         WHERE is_current = 1 {ON_CONFLICT}"
    ))
    .bind(now)
    .execute(&mut **tx)
    .await?;
    Ok(())
}

/// One CSV line of `score_stage`. Unquoted empty fields are NULL; text is always quoted
/// (so an empty string stays one); a non-finite number is NULL, as it was in JSON.
fn row(
    out: &mut Vec<u8>,
    customer: &str,
    s: &CustomerScore,
    valid_to: Option<i64>,
    closes: Option<i64>,
) {
    text(out, customer);
    // Writing to a Vec cannot fail.
    let _ = write!(out, ",{},{},", s.version, s.as_of);
    opt_int(out, valid_to);
    let _ = write!(out, ",{},", i32::from(valid_to.is_none()));
    opt_int(out, closes);
    out.push(b',');
    text(out, &s.model_version);
    for v in s.measures() {
        out.push(b',');
        float(out, v);
    }
    out.push(b',');
    text(out, &s.value_tier);
    let _ = write!(out, ",{},{},{},", s.r_score, s.f_score, s.m_score);
    text(out, &s.rfm_segment);
    out.push(b',');
    if let Some(c) = &s.cluster {
        text(out, c);
    }
    let _ = write!(
        out,
        ",{},{},",
        i32::from(s.at_risk),
        i32::from(s.retention_target)
    );
    float(out, s.expected_retention_profit);
    out.push(b'\n');
}

fn text(out: &mut Vec<u8>, s: &str) {
    out.push(b'"');
    for b in s.bytes() {
        if b == b'"' {
            out.push(b'"');
        }
        out.push(b);
    }
    out.push(b'"');
}

fn opt_int(out: &mut Vec<u8>, v: Option<i64>) {
    if let Some(v) = v {
        let _ = write!(out, "{v}");
    }
}

fn float(out: &mut Vec<u8>, v: f64) {
    if v.is_finite() {
        let _ = write!(out, "{v}");
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn csv_lines_quote_text_and_leave_nulls_empty() {
        let s = CustomerScore {
            customer_id: "c,1".into(),
            version: 7,
            as_of: 1_000,
            model_version: "m\"1".into(),
            frequency: 0.0,
            recency: 2.5,
            age: 0.0,
            monetary_value: 0.0,
            p_alive: f64::NAN,
            churn_probability: 0.0,
            expected_orders_90d: 0.0,
            expected_aov: 0.0,
            clv_12m: 0.0,
            value_tier: "top20".into(),
            r_score: 0,
            f_score: 0,
            m_score: 0,
            rfm_segment: "".into(),
            cluster: None,
            at_risk: true,
            retention_target: false,
            expected_retention_profit: 0.0,
        };
        let mut out = Vec::new();
        row(&mut out, "c,1", &s, None, Some(5));
        let line = String::from_utf8(out).unwrap();
        assert_eq!(
            line,
            "\"c,1\",7,1000,,1,5,\"m\"\"1\",0,2.5,0,0,,0,0,0,0,\"top20\",0,0,0,\"\",,1,0,0\n"
        );
    }
}
