//! `SpoolDirCsvSource`: CSV files dropped into `input.path` become events, streamed
//! record by record (never loaded whole), then moved to `finished.path` or `error.path`.
//!
//! A file's source partition is its name, size and modification time; its offset is the
//! byte position where reading resumes (always at a record boundary, and for the Online
//! Retail preset at an invoice boundary). Write files elsewhere and move them in: a file
//! that changes while it is read is a different file.

pub mod presets;

use std::collections::{BTreeMap, HashMap};
use std::fs::File;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant, SystemTime};

use csv::{ByteRecord, Position, Reader, ReaderBuilder};
use custflow_schemas::Event;
use regex::Regex;
use serde_json::{json, Value};

use crate::connect::task::{SourceTask, TaskContext, TaskFuture};
use crate::connect::{partition_key, Batch, ConnectorConfig, Error, PartitionKey, Tolerance};
use presets::{GenericColumns, RetailColumns, RetailRow, RowError};

/// Row format of the files (`csv.preset`).
#[derive(Debug, Clone)]
enum Preset {
    Cdnow,
    OnlineRetail,
    Generic {
        mapping: BTreeMap<String, String>,
        currency: String,
    },
}

/// Settings of a spool-dir connector.
#[derive(Debug, Clone)]
struct Settings {
    input: PathBuf,
    finished: PathBuf,
    error: PathBuf,
    pattern: Regex,
    halt_on_error: bool,
    min_age: Duration,
    poll_interval: Duration,
    preset: Preset,
    separator: u8,
}

impl Settings {
    /// The settings of a connector whose `input.path` folder exists.
    fn checked(c: &ConnectorConfig) -> Result<Self, Error> {
        let s = Self::parse(c)?;
        if !s.input.is_dir() {
            return Err(Error::invalid(
                "config.input.path",
                format!("{} is not a directory", s.input.display()),
            ));
        }
        Ok(s)
    }

    fn parse(c: &ConnectorConfig) -> Result<Self, Error> {
        let input = PathBuf::from(c.required("input.path")?);
        let pattern = c.get("input.file.pattern").unwrap_or(r"^.*\.(csv|txt)$");
        let pattern = Regex::new(pattern).map_err(|e| {
            Error::invalid("config.input.file.pattern", format!("not a regex: {e}"))
        })?;
        let preset = match c.get("csv.preset") {
            Some("cdnow") => Preset::Cdnow,
            Some("online-retail") => Preset::OnlineRetail,
            None => {
                let mapping: BTreeMap<String, String> = c
                    .config
                    .iter()
                    .filter_map(|(k, v)| {
                        k.strip_prefix("csv.column.")
                            .map(|f| (f.to_owned(), v.clone()))
                    })
                    .collect();
                for f in mapping.keys() {
                    if !presets::GENERIC_FIELDS.contains(&f.as_str()) {
                        return Err(Error::invalid(
                            format!("config.csv.column.{f}"),
                            format!("not a field; one of {}", presets::GENERIC_FIELDS.join(", ")),
                        ));
                    }
                }
                for f in ["customer_id", "occurred_at", "total"] {
                    if !mapping.contains_key(f) {
                        return Err(Error::invalid(
                            format!("config.csv.column.{f}"),
                            "is required without csv.preset (cdnow, online-retail)",
                        ));
                    }
                }
                Preset::Generic {
                    mapping,
                    currency: c.get("csv.currency").unwrap_or("USD").to_owned(),
                }
            }
            Some(p) => {
                return Err(Error::invalid(
                    "config.csv.preset",
                    format!("{p:?} is not cdnow or online-retail"),
                ))
            }
        };
        let separator = match c.get("csv.separator") {
            None => b',',
            Some("\\t") | Some("tab") => b'\t',
            Some(s) if s.len() == 1 => s.as_bytes()[0],
            Some(s) => {
                return Err(Error::invalid(
                    "config.csv.separator",
                    format!("{s:?} is not one character"),
                ))
            }
        };
        Ok(Self {
            finished: c
                .get("finished.path")
                .map_or_else(|| input.join("finished"), PathBuf::from),
            error: c
                .get("error.path")
                .map_or_else(|| input.join("error"), PathBuf::from),
            input,
            pattern,
            halt_on_error: c.flag("halt.on.error", true)?,
            min_age: Duration::from_millis(c.number("file.minimum.age.ms", 0)?),
            poll_interval: Duration::from_millis(c.number("poll.interval.ms", 1000)?),
            preset,
            separator,
        })
    }
}

/// Row positions: where a record starts and where the next one starts.
#[derive(Debug, Clone, Copy)]
struct Span {
    start: u64,
    end: u64,
    line: u64,
}

/// How a file's rows are read.
enum Rows {
    Cdnow,
    Retail {
        cols: RetailColumns,
        /// The invoice being collected: its rows (with their spans) and raw records.
        group: Vec<(Result<RetailRow, RowError>, Span, ByteRecord)>,
    },
    Generic(GenericColumns),
}

/// The file being read.
struct OpenFile {
    path: PathBuf,
    name: String,
    partition: PartitionKey,
    reader: Reader<File>,
    rows: Rows,
    size: u64,
    pos: u64,
    line: u64,
    records: u64,
    started: Instant,
    last_log: Instant,
}

/// What happens to a finished file once its final offset is committed.
#[derive(Debug, Clone)]
struct Ending {
    path: PathBuf,
    to: PathBuf,
}

/// A spool-dir task: reads the files assigned to it (by a hash of the name), one at a
/// time, in name order.
pub struct SpoolDirTask {
    ctx: TaskContext,
    s: Settings,
    current: Option<OpenFile>,
    /// Files whose end was produced and awaits its commit before the move.
    ending: HashMap<PartitionKey, Ending>,
    files_done: u64,
    record: ByteRecord,
}

impl SpoolDirTask {
    /// Checks the settings and that `input.path` is a folder (the worker reads it).
    pub fn validate(c: &ConnectorConfig) -> Result<(), Error> {
        Settings::checked(c).map(|_| ())
    }

    pub fn start(c: &ConnectorConfig, ctx: TaskContext) -> Result<Self, Error> {
        let s = Settings::checked(c)?;
        for dir in [&s.finished, &s.error] {
            std::fs::create_dir_all(dir).map_err(|e| Error::io(dir, e))?;
        }
        Ok(Self {
            ctx,
            s,
            current: None,
            ending: HashMap::new(),
            files_done: 0,
            record: ByteRecord::new(),
        })
    }

    pub fn poll_interval(&self) -> Duration {
        self.s.poll_interval
    }

    pub fn progress(&self) -> Value {
        match &self.current {
            Some(f) => {
                let secs = f.started.elapsed().as_secs_f64().max(1e-3);
                json!({
                    "file": f.name,
                    "bytes": f.pos,
                    "size": f.size,
                    "percent": if f.size == 0 { 100.0 } else { (f.pos as f64 / f.size as f64 * 1000.0).round() / 10.0 },
                    "records": f.records,
                    "records_per_sec": (f.records as f64 / secs).round(),
                    "files_done": self.files_done,
                })
            }
            None => json!({"file": null, "files_done": self.files_done}),
        }
    }

    /// The next file of this task, oldest name first.
    fn next_file(&self) -> Result<Option<PathBuf>, Error> {
        let dir = &self.s.input;
        let mut names = Vec::new();
        for entry in std::fs::read_dir(dir).map_err(|e| Error::io(dir, e))? {
            let entry = entry.map_err(|e| Error::io(dir, e))?;
            let Ok(name) = entry.file_name().into_string() else {
                continue;
            };
            if !self.s.pattern.is_match(&name) {
                continue;
            }
            let tasks = self.ctx.common.tasks_max as u64;
            if crate::connect::fnv(name.as_bytes()) % tasks != self.ctx.task as u64 {
                continue;
            }
            let Ok(meta) = entry.metadata() else { continue };
            if !meta.is_file() {
                continue;
            }
            let age = meta
                .modified()
                .ok()
                .and_then(|m| SystemTime::now().duration_since(m).ok())
                .unwrap_or_default();
            if age < self.s.min_age {
                continue;
            }
            names.push(name);
        }
        names.sort();
        for name in names {
            let path = dir.join(&name);
            if self.ending.values().any(|e| e.path == path) {
                continue;
            }
            return Ok(Some(path));
        }
        Ok(None)
    }

    /// Opens a file at its committed offset. `Ok(None)` when it was already finished
    /// (only its move is left).
    fn open(&mut self, path: PathBuf, batch: &mut Batch) -> Result<(), Error> {
        let meta = std::fs::metadata(&path).map_err(|e| Error::io(&path, e))?;
        let name = path
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_default();
        let mtime = meta
            .modified()
            .ok()
            .and_then(|m| m.duration_since(SystemTime::UNIX_EPOCH).ok())
            .map_or(0, |d| d.as_millis());
        let partition = partition_key(
            &self.ctx.common.name,
            &json!({"file": name, "size": meta.len(), "mtime": mtime}),
        );
        let committed = self.ctx.offsets.get(&*partition).cloned();
        if committed.as_ref().and_then(|o| o.get("done")) == Some(&Value::Bool(true)) {
            // Finished before a restart; only the move was left.
            let to = if committed.as_ref().and_then(|o| o.get("status")) == Some(&json!("error")) {
                &self.s.error
            } else {
                &self.s.finished
            };
            self.end(
                batch,
                partition,
                &path,
                to.clone(),
                committed.unwrap_or(Value::Null),
            );
            return Ok(());
        }
        let file = File::open(&path).map_err(|e| Error::io(&path, e))?;
        let mut b = ReaderBuilder::new();
        // Records end at `\n` (a `\r` before it is trimmed with the field): with CRLF as
        // the terminator the reader would place each record's start, and its line
        // number, on the previous record's `\n`.
        b.buffer_capacity(1 << 20)
            .flexible(true)
            .terminator(csv::Terminator::Any(b'\n'));
        match &self.s.preset {
            // One field per line: the CDNOW parser splits on whitespace itself.
            Preset::Cdnow => b.has_headers(false).delimiter(b'\x01').quoting(false),
            _ => b.has_headers(true).delimiter(self.s.separator),
        };
        let mut reader = b.from_reader(file);
        let rows = match &self.s.preset {
            Preset::Cdnow => Ok(Rows::Cdnow),
            Preset::OnlineRetail => reader
                .byte_headers()
                .map_err(|e| e.to_string())
                .and_then(|h| RetailColumns::from_header(h).map_err(|e| e.to_string()))
                .map(|cols| Rows::Retail {
                    cols,
                    group: Vec::new(),
                }),
            Preset::Generic { mapping, currency } => reader
                .byte_headers()
                .map_err(|e| e.to_string())
                .and_then(|h| {
                    GenericColumns::from_header(h, mapping, currency).map_err(|e| e.to_string())
                })
                .map(Rows::Generic),
        };
        let rows = match rows {
            Ok(r) => r,
            Err(reason) => {
                return self.file_error(batch, partition, &path, 0, &format!("{name}: {reason}"))
            }
        };
        let (mut pos, mut line) = (reader.position().byte(), reader.position().line());
        if let Some(o) = committed {
            let at = o.get("pos").and_then(Value::as_u64).unwrap_or(0);
            let l = o.get("line").and_then(Value::as_u64).unwrap_or(1);
            if at > pos {
                let mut p = Position::new();
                p.set_byte(at).set_line(l).set_record(0);
                reader.seek(p).map_err(|e| Error::Io {
                    path: path.display().to_string(),
                    source: std::io::Error::other(e.to_string()),
                })?;
                (pos, line) = (at, l);
            }
        }
        tracing::info!(file = %name, from = pos, size = meta.len(), "reading");
        self.current = Some(OpenFile {
            path,
            name,
            partition,
            reader,
            rows,
            size: meta.len(),
            pos,
            line,
            records: 0,
            started: Instant::now(),
            last_log: Instant::now(),
        });
        Ok(())
    }

    /// A file cannot be read as a whole (bad header): fatal with `halt.on.error`, else it
    /// goes to `error.path`.
    fn file_error(
        &mut self,
        batch: &mut Batch,
        partition: PartitionKey,
        path: &Path,
        pos: u64,
        reason: &str,
    ) -> Result<(), Error> {
        tracing::warn!(file = %path.display(), reason, "file error");
        if self.s.halt_on_error {
            batch.fatal = Some(reason.to_owned());
        } else {
            let offset = json!({"pos": pos, "done": true, "status": "error", "reason": reason});
            self.end(batch, partition, path, self.s.error.clone(), offset);
        }
        Ok(())
    }

    fn end(
        &mut self,
        batch: &mut Batch,
        partition: PartitionKey,
        path: &Path,
        dir: PathBuf,
        offset: Value,
    ) {
        let to = dir.join(path.file_name().unwrap_or_default());
        self.ending.insert(
            partition.clone(),
            Ending {
                path: path.to_owned(),
                to,
            },
        );
        batch.ends.push((partition, offset));
        self.current = None;
    }

    pub fn poll(&mut self, max: usize) -> Result<Batch, Error> {
        let mut batch = Batch::default();
        if self.current.is_none() {
            let Some(path) = self.next_file()? else {
                return Ok(batch);
            };
            self.open(path, &mut batch)?;
            if self.current.is_none() {
                return Ok(batch);
            }
        }
        let tolerance = self.ctx.common.tolerance;
        let mut record = std::mem::take(&mut self.record);
        let result = self.read_rows(&mut batch, &mut record, max, tolerance);
        self.record = record;
        result?;
        Ok(batch)
    }

    fn read_rows(
        &mut self,
        batch: &mut Batch,
        rec: &mut ByteRecord,
        max: usize,
        tolerance: Tolerance,
    ) -> Result<(), Error> {
        let Some(mut f) = self.current.take() else {
            return Ok(());
        };
        let mut rows = std::mem::replace(&mut f.rows, Rows::Cdnow);
        let eof = read_some(&self.ctx, &mut f, &mut rows, batch, rec, max, tolerance);
        f.rows = rows;
        let eof = match eof {
            Ok(eof) => eof,
            Err(e) => {
                self.current = Some(f);
                return Err(e);
            }
        };
        if batch.fatal.is_some() || !eof {
            if f.last_log.elapsed() >= Duration::from_secs(5) {
                f.last_log = Instant::now();
                let pct = if f.size == 0 {
                    100.0
                } else {
                    f.pos as f64 / f.size as f64 * 100.0
                };
                tracing::info!(file = %f.name, percent = format!("{pct:.1}"), records = f.records, "reading");
            }
            self.current = Some(f);
            return Ok(());
        }
        let secs = f.started.elapsed().as_secs_f64();
        tracing::info!(file = %f.name, records = f.records, secs, "file finished");
        let offset = json!({"pos": f.pos, "line": f.line, "done": true, "status": "finished"});
        self.files_done += 1;
        self.end(
            batch,
            f.partition.clone(),
            &f.path,
            self.s.finished.clone(),
            offset,
        );
        Ok(())
    }

    /// Moves files whose final offsets are committed.
    pub fn committed(&mut self, ends: &[(PartitionKey, Value)]) -> Result<(), Error> {
        for (p, _) in ends {
            let Some(e) = self.ending.remove(p) else {
                continue;
            };
            if let Err(err) = std::fs::rename(&e.path, &e.to) {
                // Another file system: copy, then remove.
                std::fs::copy(&e.path, &e.to)
                    .and_then(|_| std::fs::remove_file(&e.path))
                    .map_err(|_| Error::io(&e.path, err))?;
            }
            tracing::info!(file = %e.path.display(), to = %e.to.display(), "moved");
        }
        Ok(())
    }
}

/// Reads rows of the open file into the batch until it holds `max` records, the file
/// ends (`Ok(true)`) or a row is fatal.
#[allow(clippy::too_many_arguments)]
fn read_some(
    ctx: &TaskContext,
    f: &mut OpenFile,
    rows: &mut Rows,
    batch: &mut Batch,
    rec: &mut ByteRecord,
    max: usize,
    tolerance: Tolerance,
) -> Result<bool, Error> {
    let start_pos = f.pos;
    let mut eof = false;
    // Where reading resumes after everything this batch holds (a row, or an invoice).
    let mut resume: Option<(u64, u64)> = None;
    while batch.records.len() < max && batch.fatal.is_none() {
        let more = f.reader.read_byte_record(rec).map_err(|e| Error::Io {
            path: f.path.display().to_string(),
            source: std::io::Error::other(e.to_string()),
        })?;
        if !more {
            eof = true;
            break;
        }
        let p = rec.position().cloned().unwrap_or_else(Position::new);
        let next = f.reader.position().clone();
        let span = Span {
            start: p.byte(),
            end: next.byte(),
            line: p.line(),
        };
        let blank = rec.len() <= 1
            && rec
                .get(0)
                .is_none_or(|f| f.iter().all(u8::is_ascii_whitespace));
        if blank {
            f.pos = span.end;
            f.line = next.line();
            resume = Some((f.pos, f.line));
            continue;
        }
        match rows {
            Rows::Cdnow => {
                let line = std::str::from_utf8(rec.get(0).unwrap_or_default())
                    .map_err(|_| RowError::Line("line is not UTF-8".to_owned()));
                let order_id = format!("{}:{}", f.name, span.line);
                let parts: [&[u8]; 2] = [f.name.as_bytes(), &span.start.to_le_bytes()];
                match line.and_then(|l| presets::cdnow_order(l, &order_id, &parts)) {
                    Ok(None) => {}
                    Ok(Some(o)) => push_event(ctx, batch, f, rec, Event::Order(o), span, tolerance),
                    Err(reason) => {
                        let reason = reason.to_string();
                        push_bad(ctx, batch, f, rec, &reason, None, span, tolerance)
                    }
                }
            }
            Rows::Generic(cols) => {
                let order_id = format!("{}:{}", f.name, span.line);
                let parts: [&[u8]; 2] = [f.name.as_bytes(), &span.start.to_le_bytes()];
                match cols.order(rec, &order_id, &parts) {
                    Ok(o) => push_event(ctx, batch, f, rec, Event::Order(o), span, tolerance),
                    Err(reason) => {
                        let reason = reason.to_string();
                        push_bad(ctx, batch, f, rec, &reason, None, span, tolerance)
                    }
                }
            }
            Rows::Retail { cols, group } => {
                let invoice = cols.invoice(rec);
                if group
                    .first()
                    .is_some_and(|(_, _, r)| cols.invoice(r) != invoice)
                {
                    // The invoice before this row ends where this row starts.
                    flush_invoice(ctx, batch, f, std::mem::take(group), tolerance);
                    if batch.fatal.is_some() {
                        break;
                    }
                    resume = Some((span.start, span.line));
                }
                let row = presets::retail_row(rec, cols);
                if let (Err(reason), Tolerance::None) = (&row, tolerance) {
                    // A malformed row stops the task before the invoice it belongs to.
                    batch.fatal = Some(format!("{}:{}: {reason}", f.name, span.line));
                    break;
                }
                group.push((row, span, rec.clone()));
            }
        }
        f.pos = span.end;
        f.line = next.line();
        if batch.fatal.is_none() && !matches!(rows, Rows::Retail { .. }) {
            resume = Some((f.pos, f.line));
        }
    }
    if eof && batch.fatal.is_none() {
        if let Rows::Retail { group, .. } = rows {
            flush_invoice(ctx, batch, f, std::mem::take(group), tolerance);
        }
    }
    if let Some((pos, line)) = resume {
        batch
            .offsets
            .push((f.partition.clone(), json!({"pos": pos, "line": line})));
    }
    batch.bytes = f.pos.saturating_sub(start_pos);
    Ok(eof)
}

/// The raw bytes of a row for its dead letter (re-joined with commas).
fn raw_row(rec: &ByteRecord) -> Vec<u8> {
    let mut w = csv::WriterBuilder::new()
        .terminator(csv::Terminator::Any(b'\n'))
        .from_writer(Vec::new());
    let _ = w.write_byte_record(rec);
    w.into_inner().unwrap_or_default()
}

#[allow(clippy::too_many_arguments)]
fn push_event(
    ctx: &TaskContext,
    batch: &mut Batch,
    f: &mut OpenFile,
    rec: &ByteRecord,
    event: Event,
    span: Span,
    tolerance: Tolerance,
) {
    match ctx.event_record(&event, &f.partition, span.start.to_string()) {
        Ok(r) => {
            batch.records.push(r);
            f.records += 1;
        }
        Err(reason) => push_bad(
            ctx,
            batch,
            f,
            rec,
            &reason,
            Some(event.customer_id()),
            span,
            tolerance,
        ),
    }
}

/// A row that cannot become an event: a dead letter, or the task stops
/// (`errors.tolerance=none`; the offset stays before the row).
#[allow(clippy::too_many_arguments)]
fn push_bad(
    ctx: &TaskContext,
    batch: &mut Batch,
    f: &mut OpenFile,
    rec: &ByteRecord,
    reason: &str,
    key: Option<&str>,
    span: Span,
    tolerance: Tolerance,
) {
    let location = format!("{}:{}", f.name, span.line);
    match tolerance {
        Tolerance::None => batch.fatal = Some(format!("{location}: {reason}")),
        Tolerance::All => {
            batch.records.push(ctx.policy.dead_letter(
                &raw_row(rec),
                key,
                reason,
                &location,
                (f.partition.clone(), format!("r{}", span.start)),
            ));
            f.records += 1;
        }
    }
}

/// One invoice: rows without a customer (and, with `errors.tolerance=all`, rows that do
/// not fit) become dead letters, the rest one order; all carry the offset after the
/// invoice, so a restart never splits one.
fn flush_invoice(
    ctx: &TaskContext,
    batch: &mut Batch,
    f: &mut OpenFile,
    group: Vec<(Result<RetailRow, RowError>, Span, ByteRecord)>,
    tolerance: Tolerance,
) {
    let Some(first_span) = group.first().map(|(_, s, _)| *s) else {
        return;
    };
    let mut customer: Option<String> = None;
    let mut good = Vec::new();
    for (row, span, rec) in &group {
        let problem = match row {
            Err(reason) => Some(reason.clone()),
            Ok(r) => presets::retail_row_problem(r, customer.as_deref()),
        };
        match (problem, row) {
            (None, Ok(r)) => {
                customer.get_or_insert_with(|| r.customer.clone().unwrap_or_default());
                good.push(r.clone());
            }
            (Some(problem), _) => {
                let reason = problem.to_string();
                if problem == RowError::NoCustomer {
                    let location = format!("{}:{}", f.name, span.line);
                    batch.records.push(ctx.policy.dead_letter(
                        &raw_row(rec),
                        None,
                        &reason,
                        &location,
                        (f.partition.clone(), format!("r{}", span.start)),
                    ));
                    f.records += 1;
                } else {
                    push_bad(ctx, batch, f, rec, &reason, None, *span, tolerance);
                    if batch.fatal.is_some() {
                        return;
                    }
                }
            }
            (None, Err(_)) => {}
        }
    }
    let parts: [&[u8]; 2] = [f.name.as_bytes(), &first_span.start.to_le_bytes()];
    let Some(order) = presets::retail_order(
        &good,
        presets::stable_ulid(good.first().map_or(0, |r| r.at), &parts),
    ) else {
        return;
    };
    let Some((_, _, first_rec)) = group.first() else {
        return;
    };
    match ctx.event_record(
        &Event::Order(order),
        &f.partition,
        format!("o{}", first_span.start),
    ) {
        Ok(r) => {
            batch.records.push(r);
            f.records += 1;
        }
        Err(reason) => push_bad(
            ctx, batch, f, first_rec, &reason, None, first_span, tolerance,
        ),
    }
}
impl SourceTask for SpoolDirTask {
    /// Reads files with blocking I/O, on the runtime's thread (`block_in_place`).
    fn poll(&mut self, max: usize) -> TaskFuture<'_, Batch> {
        Box::pin(async move { tokio::task::block_in_place(|| SpoolDirTask::poll(self, max)) })
    }

    fn committed(&mut self, ends: &[(PartitionKey, Value)]) -> Result<(), Error> {
        SpoolDirTask::committed(self, ends)
    }

    fn progress(&self) -> Value {
        SpoolDirTask::progress(self)
    }

    fn poll_interval(&self) -> Duration {
        SpoolDirTask::poll_interval(self)
    }
}
