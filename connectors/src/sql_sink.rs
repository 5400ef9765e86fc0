//! The SQL sink: `customer-scores` → `customer_scores` (upserted only when the incoming
//! version is newer, so replays are no-ops), `customer_score_history` (SCD type 2 with
//! `valid_from`, `valid_to`, `is_current`) and `models`. SQLite by default, PostgreSQL by
//! URL; both through sqlx's `Any` driver with the same SQL.
//!
//! Times are epoch milliseconds (BIGINT) and flags are 0/1 INTEGERs, so both backends
//! store them the same way (sqlx's `Any` driver cannot read SQLite booleans).

use std::collections::BTreeMap;

use custflow_models::artefact::ModelArtefact;
use custflow_schemas::CustomerScore;
use sqlx::any::AnyPoolOptions;
use sqlx::{AnyPool, Row};

/// Errors of the sink; database errors may be retried.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("database: {0}")]
    Db(#[from] sqlx::Error),
    #[error("sink URL {0:?}: use sqlite://path or postgres://…")]
    Url(String),
    #[error("{0}")]
    Io(#[from] std::io::Error),
}

pub type Result<T, E = Error> = std::result::Result<T, E>;

const SCORE_COLUMNS: &str = "model_version, frequency, recency, age, monetary_value, p_alive, churn_probability, \
expected_orders_90d, expected_aov, clv_12m, value_tier, r_score, f_score, m_score, rfm_segment, cluster, at_risk";

/// The tables, created if missing.
const SCHEMA: &[&str] = &[
    "CREATE TABLE IF NOT EXISTS customer_scores (
        customer_id TEXT PRIMARY KEY, version BIGINT NOT NULL, as_of BIGINT NOT NULL,
        model_version TEXT NOT NULL, frequency DOUBLE PRECISION, recency DOUBLE PRECISION,
        age DOUBLE PRECISION, monetary_value DOUBLE PRECISION, p_alive DOUBLE PRECISION,
        churn_probability DOUBLE PRECISION, expected_orders_90d DOUBLE PRECISION,
        expected_aov DOUBLE PRECISION, clv_12m DOUBLE PRECISION, value_tier TEXT,
        r_score INTEGER, f_score INTEGER, m_score INTEGER, rfm_segment TEXT, cluster TEXT,
        at_risk INTEGER, updated_at BIGINT NOT NULL)",
    "CREATE TABLE IF NOT EXISTS customer_score_history (
        customer_id TEXT NOT NULL, version BIGINT NOT NULL, valid_from BIGINT NOT NULL,
        valid_to BIGINT, is_current INTEGER NOT NULL,
        model_version TEXT NOT NULL, frequency DOUBLE PRECISION, recency DOUBLE PRECISION,
        age DOUBLE PRECISION, monetary_value DOUBLE PRECISION, p_alive DOUBLE PRECISION,
        churn_probability DOUBLE PRECISION, expected_orders_90d DOUBLE PRECISION,
        expected_aov DOUBLE PRECISION, clv_12m DOUBLE PRECISION, value_tier TEXT,
        r_score INTEGER, f_score INTEGER, m_score INTEGER, rfm_segment TEXT, cluster TEXT,
        at_risk INTEGER, PRIMARY KEY (customer_id, version))",
    "CREATE INDEX IF NOT EXISTS customer_score_history_current ON customer_score_history (customer_id, is_current)",
    "CREATE TABLE IF NOT EXISTS models (
        version TEXT PRIMARY KEY, created_at BIGINT NOT NULL, champion TEXT NOT NULL,
        status TEXT NOT NULL, customers BIGINT NOT NULL, metrics TEXT NOT NULL, artefact TEXT NOT NULL)",
];

/// What a write did.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct WriteStats {
    /// Scores newer than the stored version: applied.
    pub applied: u64,
    /// Scores not newer than the stored version (replays, stale updates): skipped.
    pub skipped: u64,
}

/// A row of the history table.
#[derive(Debug, Clone, PartialEq, serde::Serialize)]
pub struct HistoryRow {
    pub customer_id: String,
    pub version: i64,
    pub valid_from: i64,
    pub valid_to: Option<i64>,
    pub is_current: bool,
    pub model_version: String,
    pub p_alive: f64,
    pub clv_12m: f64,
    pub value_tier: String,
    pub rfm_segment: String,
    pub cluster: Option<String>,
    pub at_risk: bool,
}

/// The sink's database.
#[derive(Clone)]
pub struct SqlSink {
    pool: AnyPool,
}

impl SqlSink {
    /// Connects (creating a SQLite file and its folder when needed) and creates the tables.
    pub async fn connect(url: &str) -> Result<Self> {
        sqlx::any::install_default_drivers();
        let url = if let Some(path) = url.strip_prefix("sqlite://") {
            let path = path.split('?').next().unwrap_or(path);
            if let Some(dir) = std::path::Path::new(path)
                .parent()
                .filter(|d| !d.as_os_str().is_empty())
            {
                std::fs::create_dir_all(dir)?;
            }
            format!("sqlite://{path}?mode=rwc")
        } else if url.starts_with("postgres://") || url.starts_with("postgresql://") {
            url.to_owned()
        } else {
            return Err(Error::Url(url.to_owned()));
        };
        let sqlite = url.starts_with("sqlite");
        let pool = AnyPoolOptions::new()
            .max_connections(4)
            .after_connect(move |conn, _| {
                Box::pin(async move {
                    if sqlite {
                        // Writers wait for each other instead of failing with "locked".
                        sqlx::query("PRAGMA busy_timeout = 10000")
                            .execute(&mut *conn)
                            .await?;
                    }
                    Ok(())
                })
            })
            .connect(&url)
            .await?;
        if sqlite {
            sqlx::query("PRAGMA journal_mode = WAL")
                .execute(&pool)
                .await?;
        }
        for stmt in SCHEMA {
            sqlx::query(stmt).execute(&pool).await?;
        }
        Ok(Self { pool })
    }

    pub fn pool(&self) -> &AnyPool {
        &self.pool
    }

    /// Applies scores in one transaction: per customer in version order, a score newer
    /// than the stored one replaces it and closes the current history row.
    pub async fn write_scores(&self, scores: &[CustomerScore]) -> Result<WriteStats> {
        let mut by_customer: BTreeMap<&str, Vec<&CustomerScore>> = BTreeMap::new();
        for s in scores {
            by_customer
                .entry(s.customer_id.as_str())
                .or_default()
                .push(s);
        }
        let now = custflow_schemas::time::now_ms();
        let mut stats = WriteStats::default();
        let mut tx = self.pool.begin().await?;
        for (customer, mut list) in by_customer {
            list.sort_by_key(|s| s.version);
            let stored: Option<i64> =
                sqlx::query("SELECT version FROM customer_scores WHERE customer_id = $1")
                    .bind(customer)
                    .fetch_optional(&mut *tx)
                    .await?
                    .map(|r| r.get::<i64, _>(0));
            let mut current = stored.unwrap_or(i64::MIN);
            for s in list {
                if s.version <= current {
                    stats.skipped += 1;
                    continue;
                }
                current = s.version;
                stats.applied += 1;
                let upsert = format!(
                    "INSERT INTO customer_scores (customer_id, version, as_of, {SCORE_COLUMNS}, updated_at)
                     VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14, $15, $16, $17, $18, $19, $20, $21)
                     ON CONFLICT (customer_id) DO UPDATE SET version = excluded.version, as_of = excluded.as_of,
                       model_version = excluded.model_version, frequency = excluded.frequency, recency = excluded.recency,
                       age = excluded.age, monetary_value = excluded.monetary_value, p_alive = excluded.p_alive,
                       churn_probability = excluded.churn_probability, expected_orders_90d = excluded.expected_orders_90d,
                       expected_aov = excluded.expected_aov, clv_12m = excluded.clv_12m, value_tier = excluded.value_tier,
                       r_score = excluded.r_score, f_score = excluded.f_score, m_score = excluded.m_score,
                       rfm_segment = excluded.rfm_segment, cluster = excluded.cluster, at_risk = excluded.at_risk,
                       updated_at = excluded.updated_at
                     WHERE excluded.version > customer_scores.version"
                );
                bind_score(
                    sqlx::query(&upsert)
                        .bind(customer)
                        .bind(s.version)
                        .bind(s.as_of),
                    s,
                )
                .bind(now)
                .execute(&mut *tx)
                .await?;
                sqlx::query(
                    "UPDATE customer_score_history SET valid_to = $1, is_current = $2
                     WHERE customer_id = $3 AND is_current = $4 AND version < $5",
                )
                .bind(s.as_of)
                .bind(0)
                .bind(customer)
                .bind(1)
                .bind(s.version)
                .execute(&mut *tx)
                .await?;
                let insert = format!(
                    "INSERT INTO customer_score_history (customer_id, version, valid_from, valid_to, is_current, {SCORE_COLUMNS})
                     VALUES ($1, $2, $3, NULL, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14, $15, $16, $17, $18, $19, $20, $21)
                     ON CONFLICT (customer_id, version) DO NOTHING"
                );
                bind_score(
                    sqlx::query(&insert)
                        .bind(customer)
                        .bind(s.version)
                        .bind(s.as_of)
                        .bind(1),
                    s,
                )
                .execute(&mut *tx)
                .await?;
            }
        }
        tx.commit().await?;
        Ok(stats)
    }

    /// The customer's scores valid at `at_ms` (the current ones when `None`).
    pub async fn score_at(&self, customer: &str, at_ms: Option<i64>) -> Result<Option<HistoryRow>> {
        let cols = "customer_id, version, valid_from, valid_to, is_current, model_version, p_alive, clv_12m, \
                    value_tier, rfm_segment, cluster, at_risk";
        let row = match at_ms {
            None => {
                sqlx::query(&format!("SELECT {cols} FROM customer_score_history WHERE customer_id = $1 AND is_current = $2"))
                    .bind(customer)
                    .bind(1)
                    .fetch_optional(&self.pool)
                    .await?
            }
            Some(t) => {
                sqlx::query(&format!(
                    "SELECT {cols} FROM customer_score_history WHERE customer_id = $1 AND valid_from <= $2
                     AND (valid_to IS NULL OR valid_to > $3) ORDER BY version DESC LIMIT 1"
                ))
                .bind(customer)
                .bind(t)
                .bind(t)
                .fetch_optional(&self.pool)
                .await?
            }
        };
        Ok(row.map(|r| HistoryRow {
            customer_id: r.get(0),
            version: r.get(1),
            valid_from: r.get(2),
            valid_to: r.get(3),
            is_current: r.get::<i32, _>(4) != 0,
            model_version: r.get(5),
            p_alive: r.get(6),
            clv_12m: r.get(7),
            value_tier: r.get(8),
            rfm_segment: r.get(9),
            cluster: r.get(10),
            at_risk: r.get::<i32, _>(11) != 0,
        }))
    }

    /// Records a model artefact as champion (retiring the previous champion); a known
    /// version is left as it is. Returns whether it was new.
    pub async fn record_model(&self, a: &ModelArtefact) -> Result<bool> {
        let mut tx = self.pool.begin().await?;
        let exists = sqlx::query("SELECT 1 FROM models WHERE version = $1")
            .bind(&a.version)
            .fetch_optional(&mut *tx)
            .await?;
        if exists.is_some() {
            return Ok(false);
        }
        sqlx::query("UPDATE models SET status = $1 WHERE status = $2")
            .bind("retired")
            .bind("champion")
            .execute(&mut *tx)
            .await?;
        sqlx::query(
            "INSERT INTO models (version, created_at, champion, status, customers, metrics, artefact)
             VALUES ($1, $2, $3, $4, $5, $6, $7)",
        )
        .bind(&a.version)
        .bind(a.created_at_ms)
        .bind(a.champion.as_str())
        .bind("champion")
        .bind(a.training.customers as i64)
        .bind(serde_json::to_string(&a.metrics).unwrap_or_default())
        .bind(serde_json::to_string(a).unwrap_or_default())
        .execute(&mut *tx)
        .await?;
        tx.commit().await?;
        Ok(true)
    }

    /// Row counts of the three tables (for status lines and tests).
    pub async fn counts(&self) -> Result<(i64, i64, i64)> {
        let one = |sql: &'static str| async move {
            sqlx::query(sql)
                .fetch_one(&self.pool)
                .await
                .map(|r| r.get::<i64, _>(0))
        };
        Ok((
            one("SELECT COUNT(*) FROM customer_scores").await?,
            one("SELECT COUNT(*) FROM customer_score_history").await?,
            one("SELECT COUNT(*) FROM models").await?,
        ))
    }
}

type AnyQuery<'q> = sqlx::query::Query<'q, sqlx::Any, sqlx::any::AnyArguments<'q>>;

fn bind_score<'q>(q: AnyQuery<'q>, s: &'q CustomerScore) -> AnyQuery<'q> {
    q.bind(&s.model_version)
        .bind(s.frequency)
        .bind(s.recency)
        .bind(s.age)
        .bind(s.monetary_value)
        .bind(s.p_alive)
        .bind(s.churn_probability)
        .bind(s.expected_orders_90d)
        .bind(s.expected_aov)
        .bind(s.clv_12m)
        .bind(&s.value_tier)
        .bind(s.r_score)
        .bind(s.f_score)
        .bind(s.m_score)
        .bind(&s.rfm_segment)
        .bind(s.cluster.as_deref())
        .bind(i32::from(s.at_risk))
}
