//! The SQL sink: `customer-scores` → `customer_scores` (upserted only when the incoming
//! version is newer, so replays are no-ops), `customer_score_history` (SCD type 2 with
//! `valid_from`, `valid_to`, `is_current`), `models`, and `sales_rollups` (the sales
//! rollups' current values, upserted). SQLite by default, PostgreSQL by URL; both through
//! sqlx's `Any` driver with the same SQL, except PostgreSQL's score writes (`pg`).
//!
//! Times are epoch milliseconds (BIGINT) and flags are 0/1 INTEGERs, so both backends
//! store them the same way (sqlx's `Any` driver cannot read SQLite booleans).

use std::collections::BTreeMap;

use custflow_feature_store::model::ModelDecision;
use custflow_feature_store::sales::RollupRow;
use custflow_models::artefact::ModelArtefact;
use custflow_schemas::CustomerScore;
use sqlx::any::AnyPoolOptions;
use sqlx::postgres::PgPool;
use sqlx::{AnyPool, Row};

mod pg;

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
expected_orders_90d, expected_aov, clv_12m, value_tier, r_score, f_score, m_score, rfm_segment, cluster, at_risk, \
retention_target, expected_retention_profit";

/// The tables, created if missing.
const SCHEMA: &[&str] = &[
    "CREATE TABLE IF NOT EXISTS customer_scores (
        customer_id TEXT PRIMARY KEY, version BIGINT NOT NULL, as_of BIGINT NOT NULL,
        model_version TEXT NOT NULL, frequency DOUBLE PRECISION, recency DOUBLE PRECISION,
        age DOUBLE PRECISION, monetary_value DOUBLE PRECISION, p_alive DOUBLE PRECISION,
        churn_probability DOUBLE PRECISION, expected_orders_90d DOUBLE PRECISION,
        expected_aov DOUBLE PRECISION, clv_12m DOUBLE PRECISION, value_tier TEXT,
        r_score INTEGER, f_score INTEGER, m_score INTEGER, rfm_segment TEXT, cluster TEXT,
        at_risk INTEGER, updated_at BIGINT NOT NULL, retention_target INTEGER,
        expected_retention_profit DOUBLE PRECISION)",
    "CREATE TABLE IF NOT EXISTS customer_score_history (
        customer_id TEXT NOT NULL, version BIGINT NOT NULL, valid_from BIGINT NOT NULL,
        valid_to BIGINT, is_current INTEGER NOT NULL,
        model_version TEXT NOT NULL, frequency DOUBLE PRECISION, recency DOUBLE PRECISION,
        age DOUBLE PRECISION, monetary_value DOUBLE PRECISION, p_alive DOUBLE PRECISION,
        churn_probability DOUBLE PRECISION, expected_orders_90d DOUBLE PRECISION,
        expected_aov DOUBLE PRECISION, clv_12m DOUBLE PRECISION, value_tier TEXT,
        r_score INTEGER, f_score INTEGER, m_score INTEGER, rfm_segment TEXT, cluster TEXT,
        at_risk INTEGER, retention_target INTEGER, expected_retention_profit DOUBLE PRECISION,
        PRIMARY KEY (customer_id, version))",
    "DROP INDEX IF EXISTS customer_score_history_current",
    "CREATE TABLE IF NOT EXISTS models (
        version TEXT PRIMARY KEY, created_at BIGINT NOT NULL, champion TEXT NOT NULL,
        status TEXT NOT NULL, customers BIGINT NOT NULL, metrics TEXT NOT NULL, artefact TEXT NOT NULL)",
    // Every decision of the model job, promoted or kept, with its reason and what the
    // comparison with the model in use found (JSON).
    "CREATE TABLE IF NOT EXISTS model_decisions (
        version TEXT PRIMARY KEY, decided_at BIGINT NOT NULL, promoted INTEGER NOT NULL,
        reason TEXT NOT NULL, previous TEXT, customers BIGINT NOT NULL, metrics TEXT NOT NULL,
        comparison TEXT)",
    "CREATE TABLE IF NOT EXISTS sales_rollups (
        grain TEXT NOT NULL, period TEXT NOT NULL, dimension TEXT NOT NULL, value TEXT NOT NULL,
        period_start BIGINT NOT NULL, revenue DOUBLE PRECISION NOT NULL, orders BIGINT NOT NULL,
        aov DOUBLE PRECISION NOT NULL, customers BIGINT NOT NULL, discount DOUBLE PRECISION NOT NULL,
        discounted_orders BIGINT NOT NULL, refunds DOUBLE PRECISION NOT NULL,
        refund_count BIGINT NOT NULL, net_revenue DOUBLE PRECISION NOT NULL,
        updated_at BIGINT NOT NULL, PRIMARY KEY (grain, period, dimension, value))",
    // Small facts of the deployment that must outlive Redis (for example the demo's
    // backfill plan).
    "CREATE TABLE IF NOT EXISTS custflow_meta (name TEXT PRIMARY KEY, value TEXT NOT NULL)",
];

/// SQLite: at most one current row per customer, enforced; the partial index also finds
/// the rows a batch closes without scanning the history. PostgreSQL closes rows by primary
/// key instead and has no such index: there, each history insert checked the unique
/// index's entries of the rows its own transaction had just closed, which halved the
/// sink's rate.
const CURRENT_INDEX: &str = "customer_score_history_one_current";

/// The columns of `sales_rollups`, as named in [`RollupRow`].
const SALES_COLUMNS: [&str; 15] = [
    "grain",
    "period",
    "dimension",
    "value",
    "period_start",
    "revenue",
    "orders",
    "aov",
    "customers",
    "discount",
    "discounted_orders",
    "refunds",
    "refund_count",
    "net_revenue",
    "updated_at",
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
    dialect: Dialect,
    /// PostgreSQL: the connections score writes copy through.
    pg: Option<PgPool>,
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
        let (dialect, pg) = if sqlite {
            sqlx::query(&format!(
                "CREATE UNIQUE INDEX IF NOT EXISTS {CURRENT_INDEX}
                 ON customer_score_history (customer_id) WHERE is_current = 1"
            ))
            .execute(&pool)
            .await?;
            (Dialect::Sqlite, None)
        } else {
            sqlx::query(&format!("DROP INDEX IF EXISTS {CURRENT_INDEX}"))
                .execute(&pool)
                .await?;
            let pg = pg::connect(&url, Dialect::Postgres.transactions() as u32).await?;
            (Dialect::Postgres, Some(pg))
        };
        add_columns(&pool, dialect).await?;
        Ok(Self { pool, dialect, pg })
    }

    pub fn pool(&self) -> &AnyPool {
        &self.pool
    }

    /// Upserts sales rollup rows (their current values: replays and repeats are no-ops)
    /// in one statement.
    pub async fn upsert_sales(&self, rows: &[RollupRow]) -> Result<()> {
        if rows.is_empty() {
            return Ok(());
        }
        #[derive(serde::Serialize)]
        struct Stamped<'a> {
            #[serde(flatten)]
            row: &'a RollupRow,
            updated_at: i64,
        }
        let now = custflow_schemas::time::now_ms();
        let json: Vec<Stamped<'_>> = rows
            .iter()
            .map(|row| Stamped {
                row,
                updated_at: now,
            })
            .collect();
        let cols = SALES_COLUMNS.join(", ");
        let update = SALES_COLUMNS[4..]
            .iter()
            .map(|c| format!("{c} = excluded.{c}"))
            .collect::<Vec<_>>()
            .join(", ");
        let select = match self.dialect {
            Dialect::Sqlite => {
                let fields = SALES_COLUMNS
                    .iter()
                    .map(|c| format!("json_extract(value, '$.{c}')"))
                    .collect::<Vec<_>>()
                    .join(", ");
                format!("SELECT {fields} FROM json_each(?) WHERE true")
            }
            Dialect::Postgres => {
                format!("SELECT {cols} FROM json_populate_recordset(NULL::sales_rollups, $1::json)")
            }
        };
        sqlx::query(&format!(
            "INSERT INTO sales_rollups ({cols}) {select}
             ON CONFLICT (grain, period, dimension, value) DO UPDATE SET {update}"
        ))
        .bind(serde_json::to_string(&json).unwrap_or_default())
        .execute(&self.pool)
        .await?;
        Ok(())
    }

    /// Applies scores atomically per customer: per customer in version order, a score newer
    /// than the stored one replaces it and closes the current history row. A batch costs
    /// four set-based statements (per 500 customers on SQLite), not one per score.
    pub async fn write_scores(&self, scores: &[CustomerScore]) -> Result<WriteStats> {
        let mut by_customer: BTreeMap<&str, Vec<&CustomerScore>> = BTreeMap::new();
        for s in scores {
            by_customer
                .entry(s.customer_id.as_str())
                .or_default()
                .push(s);
        }
        let now = custflow_schemas::time::now_ms();
        let customers: Vec<(&str, Vec<&CustomerScore>)> = by_customer.into_iter().collect();
        let per_group = customers.len().div_ceil(self.dialect.transactions()).max(1);
        let results = futures::future::try_join_all(
            customers
                .chunks(per_group)
                .map(|group| self.write_group(group, now)),
        )
        .await?;
        Ok(results
            .into_iter()
            .fold(WriteStats::default(), |a, b| WriteStats {
                applied: a.applied + b.applied,
                skipped: a.skipped + b.skipped,
            }))
    }

    /// [`Self::write_scores`] for some customers, in one transaction.
    async fn write_group(&self, customers: &[Applied<'_>], now: i64) -> Result<WriteStats> {
        let mut stats = WriteStats::default();
        if let Some(pg) = &self.pg {
            let mut tx = pg.begin().await?;
            let ids: Vec<&str> = customers.iter().map(|(c, _)| *c).collect();
            let stored = pg::stored_versions(&mut tx, &ids).await?;
            let applied = newer_than_stored(customers, &stored, &mut stats);
            if !applied.is_empty() {
                pg::apply(&mut tx, &applied, &stored, now).await?;
            }
            tx.commit().await?;
            return Ok(stats);
        }
        let mut tx = self.pool.begin().await?;
        for chunk in customers.chunks(SQLITE_ROWS_PER_STATEMENT) {
            let ids: Vec<&str> = chunk.iter().map(|(c, _)| *c).collect();
            let stored = stored_versions(&mut tx, &ids).await?;
            let applied = newer_than_stored(chunk, &stored, &mut stats);
            if applied.is_empty() {
                continue;
            }
            let closing: Vec<(&str, i64)> = applied
                .iter()
                .filter(|(c, _)| stored.contains_key(*c))
                .map(|(c, list)| (*c, list[0].as_of))
                .collect();
            if !closing.is_empty() {
                close_current(&mut tx, &closing).await?;
            }
            insert_history(&mut tx, &applied).await?;
            upsert_current(&mut tx, &applied, now).await?;
        }
        tx.commit().await?;
        Ok(stats)
    }

    /// Deletes the current scores and the whole score history of `customers` (their
    /// erasure: a tombstone on the score topic), in one transaction; returns the rows
    /// deleted. Deleting a customer that has no rows is not an error.
    pub async fn erase(&self, customers: &[&str]) -> Result<u64> {
        if customers.is_empty() {
            return Ok(0);
        }
        let mut deleted = 0;
        let mut tx = self.pool.begin().await?;
        for chunk in customers.chunks(500) {
            for table in ["customer_scores", "customer_score_history"] {
                let done = match self.dialect {
                    Dialect::Sqlite => {
                        let sql = format!(
                            "DELETE FROM {table} WHERE customer_id IN ({})",
                            marks(chunk.len())
                        );
                        let mut q = sqlx::query(&sql);
                        for c in chunk {
                            q = q.bind(*c);
                        }
                        q.execute(&mut *tx).await?
                    }
                    Dialect::Postgres => {
                        let sql = format!(
                            "DELETE FROM {table} WHERE customer_id IN \
                             (SELECT json_array_elements_text($1::json))"
                        );
                        sqlx::query(&sql)
                            .bind(serde_json::to_string(chunk).unwrap_or_default())
                            .execute(&mut *tx)
                            .await?
                    }
                };
                deleted += done.rows_affected();
            }
        }
        tx.commit().await?;
        Ok(deleted)
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

    /// Records a decision of the model job (a known version is left as it is).
    pub async fn record_decision(&self, d: &ModelDecision) -> Result<()> {
        sqlx::query(
            "INSERT INTO model_decisions
               (version, decided_at, promoted, reason, previous, customers, metrics, comparison)
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8) ON CONFLICT (version) DO NOTHING",
        )
        .bind(&d.version)
        .bind(d.decided_at_ms)
        .bind(i32::from(d.promoted))
        .bind(&d.reason)
        .bind(d.previous.clone())
        .bind(d.customers as i64)
        .bind(serde_json::to_string(&d.metrics).unwrap_or_default())
        .bind(
            d.comparison
                .as_ref()
                .and_then(|c| serde_json::to_string(c).ok()),
        )
        .execute(&self.pool)
        .await?;
        Ok(())
    }

    /// The newest `limit` decisions recorded, newest first: (version, promoted, reason).
    pub async fn decisions(&self, limit: i64) -> Result<Vec<(String, bool, String)>> {
        let rows = sqlx::query(
            "SELECT version, promoted, reason FROM model_decisions ORDER BY decided_at DESC LIMIT $1",
        )
        .bind(limit)
        .fetch_all(&self.pool)
        .await?;
        Ok(rows
            .iter()
            .map(|r| (r.get(0), r.get::<i32, _>(1) != 0, r.get(2)))
            .collect())
    }

    /// The artefact of the model recorded as champion last, if any: what was in use
    /// when Redis lost its data.
    pub async fn champion(&self) -> Result<Option<ModelArtefact>> {
        let row = sqlx::query(
            "SELECT artefact FROM models WHERE status = $1 ORDER BY created_at DESC LIMIT 1",
        )
        .bind("champion")
        .fetch_optional(&self.pool)
        .await?;
        Ok(row.and_then(|r| serde_json::from_str(&r.get::<String, _>(0)).ok()))
    }

    /// A value kept under `name` in `custflow_meta`.
    pub async fn meta(&self, name: &str) -> Result<Option<String>> {
        let row = sqlx::query("SELECT value FROM custflow_meta WHERE name = $1")
            .bind(name)
            .fetch_optional(&self.pool)
            .await?;
        Ok(row.map(|r| r.get::<String, _>(0)))
    }

    /// Keeps `value` under `name` in `custflow_meta` (replacing what was there).
    pub async fn set_meta(&self, name: &str, value: &str) -> Result<()> {
        sqlx::query(
            "INSERT INTO custflow_meta (name, value) VALUES ($1, $2)
             ON CONFLICT (name) DO UPDATE SET value = excluded.value",
        )
        .bind(name)
        .bind(value)
        .execute(&self.pool)
        .await?;
        Ok(())
    }

    /// Forgets what was kept under `name` in `custflow_meta`.
    pub async fn delete_meta(&self, name: &str) -> Result<()> {
        sqlx::query("DELETE FROM custflow_meta WHERE name = $1")
            .bind(name)
            .execute(&self.pool)
            .await?;
        Ok(())
    }

    /// Row counts of the three tables (for status lines and tests).
    pub async fn counts(&self) -> Result<(i64, i64, i64, i64)> {
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
            one("SELECT COUNT(*) FROM sales_rollups").await?,
        ))
    }
}

/// Rows per multi-row statement on SQLite: 23 parameters each stays under its 32,766.
const SQLITE_ROWS_PER_STATEMENT: usize = 500;

/// A customer and its scores to apply, in version order.
type Applied<'a> = (&'a str, Vec<&'a CustomerScore>);

/// Per customer, the scores newer than what is stored, in version order (counted in
/// `stats` as applied, the rest as skipped).
fn newer_than_stored<'a>(
    customers: &[Applied<'a>],
    stored: &BTreeMap<String, i64>,
    stats: &mut WriteStats,
) -> Vec<Applied<'a>> {
    let mut applied = Vec::new();
    for (customer, list) in customers {
        let mut newer = list.clone();
        newer.sort_by_key(|s| s.version);
        newer.dedup_by_key(|s| s.version);
        let floor = stored.get(*customer).copied().unwrap_or(i64::MIN);
        newer.retain(|s| s.version > floor);
        stats.skipped += (list.len() - newer.len()) as u64;
        stats.applied += newer.len() as u64;
        if !newer.is_empty() {
            applied.push((*customer, newer));
        }
    }
    applied
}

/// How set-based statements get their rows. SQLite: multi-row `VALUES` with anonymous
/// `?` placeholders (it looks numbered ones up by a linear scan, which made a 500-row
/// insert take 180 ms instead of 1.5 ms). PostgreSQL: score writes copy their rows
/// (`pg`); the rest pass one JSON parameter expanded by `json_populate_recordset`, which
/// costs about what a plain `INSERT … SELECT` does, where 11,000 bind parameters per
/// statement did not.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Dialect {
    Sqlite,
    Postgres,
}

impl Dialect {
    /// Transactions a batch is split into, over disjoint customers and run at once.
    /// PostgreSQL: two use both of its cores; each is atomic and replays are no-ops, so
    /// the caller (which commits offsets only after all succeed) may retry the batch.
    /// SQLite has one writer.
    fn transactions(self) -> usize {
        match self {
            Dialect::Sqlite => 1,
            Dialect::Postgres => 2,
        }
    }
}

/// `?, ?, …` for `n` parameters.
fn marks(n: usize) -> String {
    vec!["?"; n].join(", ")
}

/// `(?, …), (…)`: `rows` tuples of `width` parameters.
fn tuples(rows: usize, width: usize) -> String {
    vec![format!("({})", marks(width)); rows].join(", ")
}

type Tx<'c> = sqlx::Transaction<'c, sqlx::Any>;

/// Columns added after the first release, added to tables created before them.
const ADDED_COLUMNS: &[(&str, &str, &str)] = &[
    ("customer_scores", "retention_target", "INTEGER"),
    (
        "customer_scores",
        "expected_retention_profit",
        "DOUBLE PRECISION",
    ),
    ("customer_score_history", "retention_target", "INTEGER"),
    (
        "customer_score_history",
        "expected_retention_profit",
        "DOUBLE PRECISION",
    ),
];

async fn add_columns(pool: &AnyPool, dialect: Dialect) -> Result<()> {
    for (table, column, kind) in ADDED_COLUMNS {
        match dialect {
            Dialect::Postgres => {
                sqlx::query(&format!(
                    "ALTER TABLE {table} ADD COLUMN IF NOT EXISTS {column} {kind}"
                ))
                .execute(pool)
                .await?;
            }
            Dialect::Sqlite => {
                let (n,): (i64,) = sqlx::query_as(&format!(
                    "SELECT COUNT(*) FROM pragma_table_info('{table}') WHERE name = '{column}'"
                ))
                .fetch_one(pool)
                .await?;
                if n == 0 {
                    sqlx::query(&format!("ALTER TABLE {table} ADD COLUMN {column} {kind}"))
                        .execute(pool)
                        .await?;
                }
            }
        }
    }
    Ok(())
}

/// The stored versions of `ids`.
async fn stored_versions(tx: &mut Tx<'_>, ids: &[&str]) -> Result<BTreeMap<String, i64>> {
    let sql = format!(
        "SELECT customer_id, version FROM customer_scores WHERE customer_id IN ({})",
        marks(ids.len())
    );
    let mut q = sqlx::query(&sql);
    for c in ids {
        q = q.bind(*c);
    }
    let rows = q.fetch_all(&mut **tx).await?;
    Ok(rows
        .iter()
        .map(|r| (r.get::<String, _>(0), r.get::<i64, _>(1)))
        .collect())
}

/// Closes the current history row of each `(customer, valid_to)`.
async fn close_current(tx: &mut Tx<'_>, closing: &[(&str, i64)]) -> Result<()> {
    let cases = vec!["WHEN ? THEN ?"; closing.len()].join(" ");
    let sql = format!(
        "UPDATE customer_score_history SET valid_to = CASE customer_id {cases} END, is_current = ?
         WHERE is_current = ? AND customer_id IN ({})",
        marks(closing.len())
    );
    let mut q = sqlx::query(&sql);
    for (c, at) in closing {
        q = q.bind(*c).bind(*at);
    }
    q = q.bind(0).bind(1);
    for (c, _) in closing {
        q = q.bind(*c);
    }
    q.execute(&mut **tx).await?;
    Ok(())
}

/// One history row per new score; all but each customer's last are already closed.
async fn insert_history(tx: &mut Tx<'_>, applied: &[Applied<'_>]) -> Result<()> {
    let rows: Vec<(&str, &CustomerScore, Option<i64>)> = applied
        .iter()
        .flat_map(|(c, list)| {
            list.iter().enumerate().map(move |(i, s)| {
                let valid_to = list.get(i + 1).map(|next| next.as_of);
                (*c, *s, valid_to)
            })
        })
        .collect();
    for part in rows.chunks(SQLITE_ROWS_PER_STATEMENT) {
        let sql = format!(
            "INSERT INTO customer_score_history (customer_id, version, valid_from, valid_to, is_current, {SCORE_COLUMNS})
             VALUES {} ON CONFLICT (customer_id, version) DO NOTHING",
            tuples(part.len(), 24)
        );
        let mut q = sqlx::query(&sql);
        for (c, s, valid_to) in part {
            q = bind_score(
                q.bind(*c)
                    .bind(s.version)
                    .bind(s.as_of)
                    .bind(*valid_to)
                    .bind(i32::from(valid_to.is_none())),
                s,
            );
        }
        q.execute(&mut **tx).await?;
    }
    Ok(())
}

/// Replaces a stored current score, unless it is newer.
const ON_CONFLICT: &str = "ON CONFLICT (customer_id) DO UPDATE SET version = excluded.version, as_of = excluded.as_of,
       model_version = excluded.model_version, frequency = excluded.frequency, recency = excluded.recency,
       age = excluded.age, monetary_value = excluded.monetary_value, p_alive = excluded.p_alive,
       churn_probability = excluded.churn_probability, expected_orders_90d = excluded.expected_orders_90d,
       expected_aov = excluded.expected_aov, clv_12m = excluded.clv_12m, value_tier = excluded.value_tier,
       r_score = excluded.r_score, f_score = excluded.f_score, m_score = excluded.m_score,
       rfm_segment = excluded.rfm_segment, cluster = excluded.cluster, at_risk = excluded.at_risk,
       retention_target = excluded.retention_target,
       expected_retention_profit = excluded.expected_retention_profit, updated_at = excluded.updated_at
     WHERE excluded.version > customer_scores.version";

/// Each customer's newest score into `customer_scores`, unless a newer one is stored.
async fn upsert_current(tx: &mut Tx<'_>, applied: &[Applied<'_>], now: i64) -> Result<()> {
    let sql = format!(
        "INSERT INTO customer_scores (customer_id, version, as_of, {SCORE_COLUMNS}, updated_at)
         VALUES {} {ON_CONFLICT}",
        tuples(applied.len(), 23)
    );
    let mut q = sqlx::query(&sql);
    for (c, list) in applied {
        let s = list[list.len() - 1];
        q = bind_score(q.bind(*c).bind(s.version).bind(s.as_of), s).bind(now);
    }
    q.execute(&mut **tx).await?;
    Ok(())
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
        .bind(i32::from(s.retention_target))
        .bind(s.expected_retention_profit)
}
