//! SQL over recent history: the last `api.sql.retention_ms` (24 h) of rollups, alert
//! transitions, anomaly episodes, SLA reports and health changes, kept in memory as Arrow record
//! batches and queried with DataFusion at `POST /api/v1/sql`.
//!
//! Rows are buffered per table and frozen into a record batch every [`BATCH_ROWS`]; a query sees
//! the frozen batches and the open rows. Batches older than the retention (by event time, from
//! the newest record) and the oldest batches past `max_rows` per table are dropped and counted.
//! Only queries run: DDL, DML and statements (`SET`, `CREATE`, `COPY`, ...) are refused.
//! Strings are dictionary-encoded, so a 24-hour table of repeating series names stays small.

use std::collections::{BTreeMap, VecDeque};
use std::sync::{Arc, Mutex, PoisonError};

use datafusion::arrow::array::{
    Array, ArrayRef, AsArray, BooleanArray, BooleanBuilder, Float64Builder, StringDictionaryBuilder,
    TimestampMillisecondBuilder,
};
use datafusion::arrow::compute::{cast, filter_record_batch};
use datafusion::arrow::datatypes::{DataType, Field, Int32Type, Schema, SchemaRef, TimeUnit, TimestampMillisecondType};
use datafusion::arrow::record_batch::RecordBatch;
use datafusion::arrow::util::display::{ArrayFormatter, FormatOptions};
use datafusion::datasource::MemTable;
use datafusion::execution::context::SQLOptions;
use datafusion::prelude::SessionContext;
use dwcp_operators::alerts::AlertTransition;
use dwcp_operators::anomaly::operator::AnomalyRecord;
use dwcp_operators::derived::{HealthChange, SlaRecord};
use dwcp_operators::prom::Sample;
use serde_json::{json, Value};

use super::prom::ApiError;

/// Rows per frozen record batch.
pub const BATCH_ROWS: usize = 8192;

/// A column's type.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    /// A timestamp, ms, UTC.
    Time,
    /// A string (dictionary-encoded).
    Str,
    /// A float.
    F64,
    /// A boolean.
    Bool,
}

impl Kind {
    /// The SQL type name.
    pub fn sql(self) -> &'static str {
        match self {
            Kind::Time => "TIMESTAMP",
            Kind::Str => "VARCHAR",
            Kind::F64 => "DOUBLE",
            Kind::Bool => "BOOLEAN",
        }
    }
}

#[derive(Debug, Clone)]
enum Cell {
    Time(i64),
    Str(String),
    F64(f64),
    Bool(bool),
    Null,
}

struct Table {
    name: &'static str,
    columns: &'static [(&'static str, Kind)],
    schema: SchemaRef,
    /// (oldest and newest time in the batch, the batch).
    batches: VecDeque<((i64, i64), RecordBatch)>,
    rows: usize,
    open: Vec<Vec<Cell>>,
    open_times: (i64, i64),
}

const TZ: &str = "+00:00";

impl Table {
    fn new(name: &'static str, columns: &'static [(&'static str, Kind)]) -> Self {
        let fields: Vec<Field> = columns
            .iter()
            .map(|(n, k)| {
                let t = match k {
                    Kind::Time => DataType::Timestamp(TimeUnit::Millisecond, Some(TZ.into())),
                    Kind::Str => DataType::Dictionary(Box::new(DataType::Int32), Box::new(DataType::Utf8)),
                    Kind::F64 => DataType::Float64,
                    Kind::Bool => DataType::Boolean,
                };
                // The first column, the record's time, is never null.
                Field::new(*n, t, *n != columns[0].0)
            })
            .collect();
        Table {
            name,
            columns,
            schema: Arc::new(Schema::new(fields)),
            batches: VecDeque::new(),
            rows: 0,
            open: Vec::new(),
            open_times: (i64::MAX, i64::MIN),
        }
    }

    fn push(&mut self, row: Vec<Cell>) {
        if let Some(Cell::Time(t)) = row.first() {
            self.open_times = (self.open_times.0.min(*t), self.open_times.1.max(*t));
        }
        self.open.push(row);
        if self.open.len() >= BATCH_ROWS {
            self.freeze();
        }
    }

    fn build(&self, rows: &[Vec<Cell>]) -> Option<RecordBatch> {
        let mut arrays: Vec<ArrayRef> = Vec::with_capacity(self.columns.len());
        for (c, (_, kind)) in self.columns.iter().enumerate() {
            let cells = rows.iter().map(|r| r.get(c).unwrap_or(&Cell::Null));
            let array: ArrayRef = match kind {
                Kind::Time => {
                    let mut b = TimestampMillisecondBuilder::with_capacity(rows.len()).with_timezone(TZ);
                    cells.for_each(|x| b.append_option(if let Cell::Time(t) = x { Some(*t) } else { None }));
                    Arc::new(b.finish())
                }
                Kind::Str => {
                    let mut b = StringDictionaryBuilder::<Int32Type>::new();
                    cells.for_each(|x| match x {
                        Cell::Str(s) => {
                            b.append_value(s);
                        }
                        _ => b.append_null(),
                    });
                    Arc::new(b.finish())
                }
                Kind::F64 => {
                    let mut b = Float64Builder::with_capacity(rows.len());
                    cells.for_each(|x| b.append_option(if let Cell::F64(v) = x { Some(*v) } else { None }));
                    Arc::new(b.finish())
                }
                Kind::Bool => {
                    let mut b = BooleanBuilder::with_capacity(rows.len());
                    cells.for_each(|x| b.append_option(if let Cell::Bool(v) = x { Some(*v) } else { None }));
                    Arc::new(b.finish())
                }
            };
            arrays.push(array);
        }
        match RecordBatch::try_new(self.schema.clone(), arrays) {
            Ok(b) => Some(b),
            Err(e) => {
                tracing::error!(table = self.name, error = %e, "history rows could not be frozen");
                None
            }
        }
    }

    fn freeze(&mut self) {
        if self.open.is_empty() {
            return;
        }
        let rows = std::mem::take(&mut self.open);
        if let Some(b) = self.build(&rows) {
            self.rows += b.num_rows();
            self.batches.push_back((self.open_times, b));
        }
        self.open_times = (i64::MAX, i64::MIN);
    }

    /// Drops batches wholly older than `min_t` and the oldest past `max_rows`; rows dropped.
    fn trim(&mut self, min_t: i64, max_rows: usize) -> (u64, u64) {
        let (mut aged, mut over) = (0u64, 0u64);
        while let Some(((_, newest), b)) = self.batches.front() {
            let n = b.num_rows();
            if *newest < min_t {
                aged += n as u64;
            } else if self.rows + self.open.len() > max_rows {
                over += n as u64;
            } else {
                break;
            }
            self.rows -= n;
            self.batches.pop_front();
        }
        (aged, over)
    }

    /// The batches, with the rows older than `min_t` filtered out, so the retention is exact
    /// whatever the batch boundaries.
    fn snapshot(&self, min_t: i64) -> Vec<RecordBatch> {
        let mut out: Vec<RecordBatch> = Vec::with_capacity(self.batches.len() + 1);
        let mut add = |oldest: i64, b: RecordBatch| {
            if oldest >= min_t {
                out.push(b);
                return;
            }
            let keep: BooleanArray = b
                .column(0)
                .as_primitive::<TimestampMillisecondType>()
                .iter()
                .map(|t| Some(t.is_some_and(|t| t >= min_t)))
                .collect();
            match filter_record_batch(&b, &keep) {
                Ok(f) if f.num_rows() > 0 => out.push(f),
                Ok(_) => {}
                Err(e) => tracing::error!(table = self.name, error = %e, "history batch could not be filtered"),
            }
        };
        for ((oldest, _), b) in &self.batches {
            add(*oldest, b.clone());
        }
        if let Some(b) = self.build(&self.open) {
            if b.num_rows() > 0 {
                add(self.open_times.0, b);
            }
        }
        out
    }
}

const ROLLUPS: &[(&str, Kind)] = &[
    ("time", Kind::Time),
    ("metric", Kind::Str),
    ("region", Kind::Str),
    ("labels", Kind::Str),
    ("value", Kind::F64),
];
const ALERTS: &[(&str, Kind)] = &[
    ("time", Kind::Time),
    ("alertname", Kind::Str),
    ("state", Kind::Str),
    ("severity", Kind::Str),
    ("region", Kind::Str),
    ("value", Kind::F64),
    ("active_since", Kind::Time),
    ("labels", Kind::Str),
    ("annotations", Kind::Str),
    ("fingerprint", Kind::Str),
    ("rule_group", Kind::Str),
];
const ANOMALIES: &[(&str, Kind)] = &[
    ("time", Kind::Time),
    ("end_time", Kind::Time),
    ("peak_time", Kind::Time),
    ("metric", Kind::Str),
    ("region", Kind::Str),
    ("series", Kind::Str),
    ("score", Kind::F64),
    ("value", Kind::F64),
    ("expected", Kind::F64),
    ("band", Kind::F64),
    ("detectors", Kind::Str),
];
const SLA: &[(&str, Kind)] = &[
    ("time", Kind::Time),
    ("sla", Kind::Str),
    ("kind", Kind::Str),
    ("region", Kind::Str),
    ("target", Kind::F64),
    ("compliance", Kind::F64),
    ("month_compliance", Kind::F64),
    ("compliant", Kind::Bool),
    ("budget_remaining", Kind::F64),
    ("budget_remaining_seconds", Kind::F64),
    ("burn_5m", Kind::F64),
    ("burn_1h", Kind::F64),
    ("burn_6h", Kind::F64),
    ("burn_3d", Kind::F64),
    ("alert", Kind::Str),
];
const HEALTH: &[(&str, Kind)] = &[
    ("time", Kind::Time),
    ("region", Kind::Str),
    ("score", Kind::F64),
    ("healthy", Kind::Bool),
    ("trend", Kind::Str),
];

/// The tables and their columns, for the API document and the README.
pub const TABLES: &[(&str, &[(&str, Kind)])] = &[
    ("rollups", ROLLUPS),
    ("alerts", ALERTS),
    ("anomalies", ANOMALIES),
    ("sla", SLA),
    ("health", HEALTH),
];

/// Rows dropped from the history, by reason.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct HistoryStats {
    /// Rows held.
    pub rows: u64,
    /// Rows older than the retention, dropped.
    pub aged_out: u64,
    /// Rows dropped because a table was past `max_rows`.
    pub over_limit: u64,
}

struct Tables {
    tables: Vec<Table>,
    newest: i64,
    stats: HistoryStats,
}

/// The in-memory history.
pub struct History {
    inner: Mutex<Tables>,
    retention_ms: i64,
    max_rows: usize,
    max_result_rows: usize,
}

fn ms(ns: u64) -> i64 {
    i64::try_from(ns / 1_000_000).unwrap_or(i64::MAX)
}

fn s(v: &str) -> Cell {
    Cell::Str(v.to_string())
}

fn opt(v: Option<&String>) -> Cell {
    v.map_or(Cell::Null, |x| Cell::Str(x.clone()))
}

fn name_of<T: serde::Serialize>(x: &T) -> Cell {
    match serde_json::to_value(x) {
        Ok(Value::String(v)) => Cell::Str(v),
        _ => Cell::Null,
    }
}

fn json_of(m: &BTreeMap<String, String>) -> Cell {
    Cell::Str(serde_json::to_string(m).unwrap_or_default())
}

impl History {
    /// A history of `retention_ms`, at most `max_rows` per table; queries answer at most
    /// `max_result_rows` rows.
    pub fn new(retention_ms: u64, max_rows: usize, max_result_rows: usize) -> Self {
        History {
            inner: Mutex::new(Tables {
                tables: TABLES.iter().map(|(n, c)| Table::new(n, c)).collect(),
                newest: i64::MIN,
                stats: HistoryStats::default(),
            }),
            retention_ms: i64::try_from(retention_ms).unwrap_or(i64::MAX),
            max_rows,
            max_result_rows,
        }
    }

    fn add(&self, table: usize, rows: impl Iterator<Item = Vec<Cell>>) {
        let mut g = self.inner.lock().unwrap_or_else(PoisonError::into_inner);
        let mut newest = g.newest;
        for r in rows {
            if let Some(Cell::Time(t)) = r.first() {
                newest = newest.max(*t);
            }
            g.tables[table].push(r);
        }
        g.newest = newest;
    }

    /// Rollups of the cross-region aggregation (`dwcp:latency:p95:10s{region=...}`).
    pub fn rollups(&self, samples: &[Sample]) {
        self.add(
            0,
            samples
                .iter()
                .filter(|x| x.value.to_bits() != dwcp_operators::prom::STALE_NAN_BITS)
                .map(|x| {
                    let labels: BTreeMap<String, String> = x
                        .labels
                        .iter()
                        .filter(|(k, _)| &**k != "__name__" && &**k != "region")
                        .map(|(k, v)| (k.to_string(), v.to_string()))
                        .collect();
                    vec![
                        Cell::Time(x.timestamp_ms),
                        s(x.name()),
                        x.label("region").map_or(Cell::Null, s),
                        json_of(&labels),
                        Cell::F64(x.value),
                    ]
                }),
        );
    }

    /// Alert transitions.
    pub fn alerts(&self, alerts: &[AlertTransition]) {
        self.add(
            1,
            alerts.iter().map(|a| {
                vec![
                    Cell::Time(ms(a.event_time)),
                    s(a.alertname()),
                    s(a.state.as_str()),
                    opt(a.labels.get("severity")),
                    opt(a.labels.get("region")),
                    Cell::F64(a.value),
                    a.active_since.map_or(Cell::Null, |t| Cell::Time(ms(t))),
                    json_of(&a.labels),
                    json_of(&a.annotations),
                    Cell::Str(format!("{:016x}", a.fingerprint)),
                    s(&a.group),
                ]
            }),
        );
    }

    /// Anomaly episodes.
    pub fn anomalies(&self, records: &[AnomalyRecord]) {
        self.add(
            2,
            records.iter().map(|r| {
                let e = &r.episode;
                vec![
                    Cell::Time(ms(e.start)),
                    Cell::Time(ms(e.end)),
                    Cell::Time(ms(e.peak_time)),
                    opt(r.labels.get("__name__")),
                    opt(r.labels.get("region")),
                    Cell::Str(r.series()),
                    Cell::F64(e.peak_score),
                    Cell::F64(e.value),
                    Cell::F64(e.expected),
                    Cell::F64(e.band),
                    Cell::Str(e.detectors.join(",")),
                ]
            }),
        );
    }

    /// SLA reports.
    pub fn sla(&self, records: &[SlaRecord]) {
        self.add(
            3,
            records.iter().map(|r| {
                let burn = |w: &str| {
                    r.report
                        .burn_rates
                        .iter()
                        .find(|(n, _)| n == w)
                        .map_or(Cell::Null, |(_, v)| Cell::F64(*v))
                };
                vec![
                    Cell::Time(ms(r.period_end)),
                    s(&r.sla),
                    name_of(&r.kind),
                    s(&r.region),
                    Cell::F64(r.target),
                    Cell::F64(r.report.compliance),
                    Cell::F64(r.report.month_compliance),
                    Cell::Bool(r.report.compliant),
                    Cell::F64(r.report.budget_remaining),
                    Cell::F64(r.report.budget_remaining_seconds),
                    burn("5m"),
                    burn("1h"),
                    burn("6h"),
                    burn("3d"),
                    r.report.alert.as_ref().map_or(Cell::Null, name_of),
                ]
            }),
        );
    }

    /// Health changes.
    pub fn health(&self, changes: &[HealthChange]) {
        self.add(
            4,
            changes.iter().map(|h| {
                vec![
                    Cell::Time(ms(h.time)),
                    s(&h.region),
                    Cell::F64(h.health.score),
                    Cell::Bool(h.health.healthy),
                    name_of(&h.health.trend),
                ]
            }),
        );
    }

    /// Drops what the retention and the row limit no longer allow.
    pub fn trim(&self) {
        let mut g = self.inner.lock().unwrap_or_else(PoisonError::into_inner);
        if g.newest == i64::MIN {
            return;
        }
        let min_t = g.newest.saturating_sub(self.retention_ms);
        let (mut aged, mut over) = (0, 0);
        for t in &mut g.tables {
            let (a, o) = t.trim(min_t, self.max_rows);
            aged += a;
            over += o;
        }
        g.stats.aged_out += aged;
        g.stats.over_limit += over;
    }

    /// Rows held and dropped.
    pub fn stats(&self) -> HistoryStats {
        let g = self.inner.lock().unwrap_or_else(PoisonError::into_inner);
        HistoryStats {
            rows: g.tables.iter().map(|t| (t.rows + t.open.len()) as u64).sum(),
            ..g.stats
        }
    }

    /// Runs one query: `{"columns": [{name, type}], "rows": [[...]], "truncated": bool}`.
    ///
    /// # Errors
    /// 400 with DataFusion's message for a query it cannot plan (or that is not a query), 422
    /// when execution fails.
    pub async fn query(&self, sql: &str) -> Result<Value, ApiError> {
        let snapshot: Vec<(&'static str, SchemaRef, Vec<RecordBatch>)> = {
            let g = self.inner.lock().unwrap_or_else(PoisonError::into_inner);
            let min_t = g.newest.saturating_sub(self.retention_ms);
            g.tables
                .iter()
                .map(|t| (t.name, t.schema.clone(), t.snapshot(min_t)))
                .collect()
        };
        let ctx = SessionContext::new();
        for (name, schema, batches) in snapshot {
            let table = MemTable::try_new(schema, vec![batches])
                .map_err(|e| ApiError::bad_data(format!("table {name}: {e}")))?;
            ctx.register_table(name, Arc::new(table))
                .map_err(|e| ApiError::bad_data(format!("table {name}: {e}")))?;
        }
        let options = SQLOptions::new()
            .with_allow_ddl(false)
            .with_allow_dml(false)
            .with_allow_statements(false);
        let df = ctx
            .sql_with_options(sql, options)
            .await
            .map_err(|e| ApiError::bad_data(e.to_string()))?;
        let limit = self.max_result_rows;
        let df = df
            .limit(0, Some(limit + 1))
            .map_err(|e| ApiError::bad_data(e.to_string()))?;
        let schema = df.schema().inner().clone();
        let batches = df.collect().await.map_err(|e| ApiError {
            status: 422,
            kind: "execution",
            message: e.to_string(),
        })?;
        let columns: Vec<Value> = schema
            .fields()
            .iter()
            .map(|f| json!({"name": f.name(), "type": f.data_type().to_string()}))
            .collect();
        let mut rows = Vec::new();
        for b in &batches {
            let cols: Vec<Vec<Value>> = b.columns().iter().map(column_json).collect();
            for r in 0..b.num_rows() {
                rows.push(Value::Array(cols.iter().map(|c| c[r].clone()).collect()));
            }
        }
        let truncated = rows.len() > limit;
        rows.truncate(limit);
        Ok(json!({"status": "success", "data": {"columns": columns, "rows": rows, "truncated": truncated}}))
    }
}

/// One column as JSON values: numbers as numbers (NaN and infinities as null), booleans,
/// strings; timestamps and anything else as Arrow's display text.
fn column_json(col: &ArrayRef) -> Vec<Value> {
    use datafusion::arrow::datatypes::{
        Float32Type, Float64Type, Int16Type, Int64Type, Int8Type, UInt32Type, UInt64Type,
    };
    let n = col.len();
    let nullable = |i: usize, v: Value| if col.is_null(i) { Value::Null } else { v };
    let float = |x: f64| serde_json::Number::from_f64(x).map_or(Value::Null, Value::Number);
    match col.data_type() {
        DataType::Float64 => {
            let a = col.as_primitive::<Float64Type>();
            (0..n).map(|i| nullable(i, float(a.value(i)))).collect()
        }
        DataType::Float32 => {
            let a = col.as_primitive::<Float32Type>();
            (0..n).map(|i| nullable(i, float(f64::from(a.value(i))))).collect()
        }
        DataType::Int64 => {
            let a = col.as_primitive::<Int64Type>();
            (0..n).map(|i| nullable(i, json!(a.value(i)))).collect()
        }
        DataType::Int32 => {
            let a = col.as_primitive::<Int32Type>();
            (0..n).map(|i| nullable(i, json!(a.value(i)))).collect()
        }
        DataType::Int16 => {
            let a = col.as_primitive::<Int16Type>();
            (0..n).map(|i| nullable(i, json!(a.value(i)))).collect()
        }
        DataType::Int8 => {
            let a = col.as_primitive::<Int8Type>();
            (0..n).map(|i| nullable(i, json!(a.value(i)))).collect()
        }
        DataType::UInt64 => {
            let a = col.as_primitive::<UInt64Type>();
            (0..n).map(|i| nullable(i, json!(a.value(i)))).collect()
        }
        DataType::UInt32 => {
            let a = col.as_primitive::<UInt32Type>();
            (0..n).map(|i| nullable(i, json!(a.value(i)))).collect()
        }
        DataType::Boolean => {
            let a = col.as_boolean();
            (0..n).map(|i| nullable(i, json!(a.value(i)))).collect()
        }
        DataType::Utf8 => {
            let a = col.as_string::<i32>();
            (0..n).map(|i| nullable(i, json!(a.value(i)))).collect()
        }
        DataType::Dictionary(_, _) | DataType::LargeUtf8 | DataType::Utf8View => match cast(col, &DataType::Utf8) {
            Ok(c) => column_json(&c),
            Err(_) => display(col),
        },
        _ => display(col),
    }
}

fn display(col: &ArrayRef) -> Vec<Value> {
    let options = FormatOptions::default();
    match ArrayFormatter::try_new(col.as_ref(), &options) {
        Ok(f) => (0..col.len())
            .map(|i| {
                if col.is_null(i) {
                    Value::Null
                } else {
                    Value::String(f.value(i).to_string())
                }
            })
            .collect(),
        Err(_) => vec![Value::Null; col.len()],
    }
}
