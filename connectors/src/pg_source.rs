//! `PostgresSource`: new rows of a table become events, read incrementally by a
//! `(timestamp, id)` watermark.
//!
//! The rule that gives no gaps and no duplicates: a poll first takes a bound, the earlier
//! of `now() − timestamp.delay.interval.ms` and the start of the oldest transaction still
//! open in the database (`pg_stat_activity.xact_start`), then reads rows with
//! `timestamp < bound` and `(timestamp, id)` after the watermark, in that order. A row
//! whose timestamp comes from its own transaction (`DEFAULT now()`, `now()`,
//! `clock_timestamp()` or any time not before the transaction began) is therefore read
//! only after its transaction committed, however late that is, and never skipped. Rows
//! written with a timestamp older than the transaction that writes them ("backdated") are
//! only safe within `timestamp.delay.interval.ms`. Seeing other sessions' transactions
//! needs the same role, a superuser, or `pg_read_all_stats`.

use std::collections::BTreeMap;
use std::time::Duration;

use custflow_schemas::{json, EventKind};
use serde_json::{json, Map, Value};
use sqlx::postgres::PgConnection;
use sqlx::{Connection, Row};

use crate::connect::task::{SourceTask, TaskContext, TaskFuture};
use crate::connect::{partition_key, Batch, ConnectorConfig, Error, PartitionKey, Tolerance};
use crate::spooldir::presets::{parse_datetime, stable_ulid};

/// Why a table row is not an event: its dead-letter reason.
#[derive(Debug, thiserror::Error)]
enum RowError {
    #[error("row is not JSON: {0}")]
    Json(#[from] serde_json::Error),
    #[error("row is not an object")]
    NotObject,
    #[error(transparent)]
    Event(#[from] custflow_schemas::Error),
}

fn sql(e: sqlx::Error) -> Error {
    Error::Sql(e.to_string())
}

/// Quotes a possibly schema-qualified identifier (`public.orders` → `"public"."orders"`).
fn quote(ident: &str) -> String {
    ident
        .split('.')
        .map(|p| format!("\"{}\"", p.replace('"', "\"\"")))
        .collect::<Vec<_>>()
        .join(".")
}

#[derive(Debug, Clone)]
struct Settings {
    url: String,
    table: String,
    ts_col: String,
    id_col: String,
    kind: EventKind,
    /// Event field → column, for columns named differently.
    renames: BTreeMap<String, String>,
    currency: String,
    delay_ms: u64,
    poll_interval: Duration,
}

impl Settings {
    fn parse(c: &ConnectorConfig) -> Result<Self, Error> {
        let kind_name = c.get("event.type").unwrap_or("order");
        let kind = EventKind::parse(kind_name).ok_or_else(|| {
            Error::invalid(
                "config.event.type",
                format!("{kind_name:?} is not customer, order or activity"),
            )
        })?;
        let url = c.required("connection.url")?.to_owned();
        if !url.starts_with("postgres://") && !url.starts_with("postgresql://") {
            return Err(Error::invalid(
                "config.connection.url",
                "must be a postgres:// URL",
            ));
        }
        Ok(Self {
            url,
            table: c.required("table")?.to_owned(),
            ts_col: c.required("timestamp.column")?.to_owned(),
            id_col: c.required("id.column")?.to_owned(),
            kind,
            renames: c
                .config
                .iter()
                .filter_map(|(k, v)| k.strip_prefix("column.").map(|f| (f.to_owned(), v.clone())))
                .collect(),
            currency: c.get("currency").unwrap_or("USD").to_owned(),
            delay_ms: c.number("timestamp.delay.interval.ms", 0)?,
            poll_interval: Duration::from_millis(c.number("poll.interval.ms", 1000)?),
        })
    }
}

/// A Postgres source task (one per connector: a table is one source partition).
pub struct PgTask {
    ctx: TaskContext,
    s: Settings,
    conn: PgConnection,
    partition: PartitionKey,
    ts_type: String,
    id_type: String,
    /// Text forms of the last `(timestamp, id)` read.
    watermark: Option<(String, String)>,
    rows: u64,
}

impl PgTask {
    pub fn validate(c: &ConnectorConfig) -> Result<(), Error> {
        Settings::parse(c).map(|_| ())
    }

    pub async fn start(c: &ConnectorConfig, ctx: TaskContext) -> Result<Self, Error> {
        let s = Settings::parse(c)?;
        let mut conn = PgConnection::connect(&s.url).await.map_err(sql)?;
        sqlx::query("SET TIME ZONE 'UTC'")
            .execute(&mut conn)
            .await
            .map_err(sql)?;
        let mut types = Vec::new();
        for col in [&s.ts_col, &s.id_col] {
            let table = &s.table;
            let t: Option<String> = sqlx::query_scalar(
                "SELECT format_type(a.atttypid, a.atttypmod) FROM pg_attribute a \
                 WHERE a.attrelid = to_regclass($1) AND a.attname = $2 AND NOT a.attisdropped",
            )
            .bind(table)
            .bind(col)
            .fetch_optional(&mut conn)
            .await
            .map_err(sql)?;
            types.push(t.ok_or_else(|| {
                Error::invalid(
                    "config.table",
                    format!("table {table} has no column {col:?} (or does not exist)"),
                )
            })?);
        }
        let partition = partition_key(&ctx.common.name, &json!({"table": s.table}));
        let watermark = ctx.offsets.get(&*partition).and_then(|o| {
            Some((
                o.get("ts")?.as_str()?.to_owned(),
                o.get("id")?.as_str()?.to_owned(),
            ))
        });
        let id_type = types.pop().unwrap_or_default();
        let ts_type = types.pop().unwrap_or_default();
        Ok(Self {
            ctx,
            s,
            conn,
            partition,
            ts_type,
            id_type,
            watermark,
            rows: 0,
        })
    }

    pub fn poll_interval(&self) -> Duration {
        self.s.poll_interval
    }

    pub fn progress(&self) -> Value {
        json!({
            "table": self.s.table,
            "rows": self.rows,
            "watermark": self.watermark.as_ref().map(|(ts, id)| json!({"ts": ts, "id": id})),
        })
    }

    pub async fn poll(&mut self, max: usize) -> Result<Batch, Error> {
        let mut batch = Batch::default();
        // The bound comes first, in its own statement: a transaction that commits after
        // it started before it, so its rows are not below the bound.
        let bound: String = sqlx::query_scalar(
            "SELECT LEAST(now() - make_interval(secs => $1::float8 / 1000), \
               COALESCE((SELECT min(xact_start) FROM pg_stat_activity \
                          WHERE datname = current_database() AND pid <> pg_backend_pid() \
                            AND xact_start IS NOT NULL AND backend_type = 'client backend'), \
                        'infinity'::timestamptz))::text",
        )
        .bind(self.s.delay_ms as f64)
        .fetch_one(&mut self.conn)
        .await
        .map_err(sql)?;
        let (t, ts, id) = (
            quote(&self.s.table),
            quote(&self.s.ts_col),
            quote(&self.s.id_col),
        );
        let after = if self.watermark.is_some() {
            format!(
                "AND (t.{ts}, t.{id}) > ($3::{}, $4::{})",
                self.ts_type, self.id_type
            )
        } else {
            String::new()
        };
        let q = format!(
            "SELECT to_jsonb(t)::text AS row, t.{ts}::text AS wts, t.{id}::text AS wid, \
                    (extract(epoch FROM t.{ts}) * 1000)::bigint AS wms \
             FROM {t} t WHERE t.{ts} < $1::timestamptz {after} \
             ORDER BY t.{ts}, t.{id} LIMIT $2"
        );
        let mut query = sqlx::query(&q).bind(&bound).bind(max as i64);
        if let Some((wts, wid)) = &self.watermark {
            query = query.bind(wts).bind(wid);
        }
        let rows = query.fetch_all(&mut self.conn).await.map_err(sql)?;
        for row in rows {
            let text: String = row.try_get("row").map_err(sql)?;
            let wts: String = row.try_get("wts").map_err(sql)?;
            let wid: String = row.try_get("wid").map_err(sql)?;
            let wms: Option<i64> = row.try_get("wms").map_err(sql)?;
            let offset = json!({"ts": wts, "id": wid});
            let rid = format!("{wts}|{wid}");
            let location = format!("{} {}={wid}", self.s.table, self.s.id_col);
            batch.bytes += text.len() as u64;
            let converted = self.convert(&text, wms.unwrap_or(0), &wid);
            let record = converted
                .map_err(|e| e.to_string())
                .and_then(|event| self.ctx.event_record(&event, &self.partition, rid.clone()));
            match record {
                Ok(r) => batch.records.push(r),
                Err(reason) => match self.ctx.common.tolerance {
                    Tolerance::None => {
                        batch.fatal = Some(format!("{location}: {reason}"));
                        break;
                    }
                    Tolerance::All => batch.records.push(self.ctx.policy.dead_letter(
                        text.as_bytes(),
                        None,
                        &reason,
                        &location,
                        (self.partition.clone(), rid),
                    )),
                },
            }
            self.rows += 1;
            batch.offsets = vec![(self.partition.clone(), offset)];
            self.watermark = Some((wts, wid));
        }
        Ok(batch)
    }

    /// A row (as JSON) to an event: columns renamed to fields, ids as strings,
    /// timestamps without a zone read as UTC, defaults for what a table rarely has.
    fn convert(&self, text: &str, ms: i64, id: &str) -> Result<custflow_schemas::Event, RowError> {
        let Value::Object(mut m) = serde_json::from_str::<Value>(text)? else {
            return Err(RowError::NotObject);
        };
        let mut out = Map::new();
        for (field, col) in &self.s.renames {
            if let Some(v) = m.remove(col) {
                out.insert(field.clone(), v);
            }
        }
        for (k, v) in m {
            out.entry(k).or_insert(v);
        }
        for f in [
            "event_id",
            "order_id",
            "customer_id",
            "location_id",
            "channel",
            "currency",
            "discount_code",
            "country",
        ] {
            if let Some(Value::Number(n)) = out.get(f) {
                let s = n.to_string();
                out.insert(f.into(), Value::String(s));
            }
        }
        for f in ["occurred_at", "signup_at"] {
            if let Some(Value::String(s)) = out.get(f) {
                if custflow_schemas::time::parse_rfc3339(s).is_none() {
                    if let Some(ms) = parse_datetime(s) {
                        out.insert(f.into(), json!(ms));
                    }
                }
            }
        }
        out.entry("event_id")
            .or_insert_with(|| json!(stable_ulid(ms, &[self.s.table.as_bytes(), id.as_bytes()])));
        if self.s.kind == EventKind::Order {
            out.entry("order_id").or_insert_with(|| json!(id));
            out.entry("status").or_insert_with(|| json!("placed"));
            out.entry("currency")
                .or_insert_with(|| json!(self.s.currency));
            out.entry("items").or_insert_with(|| json!([]));
        }
        Ok(json::read(self.s.kind, &Value::Object(out))?)
    }
}
impl SourceTask for PgTask {
    fn poll(&mut self, max: usize) -> TaskFuture<'_, Batch> {
        Box::pin(PgTask::poll(self, max))
    }

    fn progress(&self) -> Value {
        PgTask::progress(self)
    }

    fn poll_interval(&self) -> Duration {
        PgTask::poll_interval(self)
    }
}
