//! Prometheus's HTTP API over the window: `/api/v1/query`, `/api/v1/query_range`,
//! `/api/v1/series`, `/api/v1/labels`, `/api/v1/label/<name>/values`, in Prometheus's shapes
//! (`{"status":"success","data":{"resultType":...,"result":[...]}}`, values as strings,
//! timestamps as seconds), so Grafana can use a worker as a Prometheus datasource.

use std::collections::BTreeSet;

use dwcp_operators::promql::{self, Labels, Series, Value};
use dwcp_operators::rules::SeriesStore;
use dwcp_operators::selector::Selector;
use serde_json::{json, Map};

/// Prometheus's limit on points per series of a range query.
const MAX_POINTS: i64 = 11_000;

/// An API error: HTTP status, Prometheus `errorType`, message.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ApiError {
    /// HTTP status code.
    pub status: u16,
    /// `bad_data`, `execution`, `unavailable`, `unauthorized`, `forbidden`, `not_found`.
    pub kind: &'static str,
    /// What was wrong.
    pub message: String,
}

impl ApiError {
    /// 400 `bad_data`.
    pub fn bad_data(message: impl Into<String>) -> Self {
        ApiError {
            status: 400,
            kind: "bad_data",
            message: message.into(),
        }
    }

    /// The JSON body Prometheus sends with an error.
    pub fn body(&self) -> serde_json::Value {
        json!({"status": "error", "errorType": self.kind, "error": self.message})
    }
}

/// The request's parameters, from the query string and a form body, in order.
pub type Params = Vec<(String, String)>;

fn param<'a>(p: &'a Params, name: &str) -> Option<&'a str> {
    p.iter().find(|(k, _)| k == name).map(|(_, v)| v.as_str())
}

/// A time parameter: RFC 3339 or Unix seconds with a fraction, to ms.
///
/// # Errors
/// `invalid parameter "time": cannot parse "x" to a valid timestamp`, as Prometheus says it.
pub fn parse_time(name: &str, s: &str) -> Result<i64, ApiError> {
    let bad = || {
        ApiError::bad_data(format!(
            "invalid parameter \"{name}\": cannot parse \"{s}\" to a valid timestamp"
        ))
    };
    let ms = if let Ok(secs) = s.parse::<f64>() {
        if !secs.is_finite() {
            return Err(bad());
        }
        #[allow(clippy::cast_possible_truncation)]
        let ms = (secs * 1000.0).round() as i64;
        ms
    } else {
        chrono::DateTime::parse_from_rfc3339(s)
            .map(|t| t.timestamp_millis())
            .map_err(|_| bad())?
    };
    // Far enough for any data (±73 million years), near enough that offsets, ranges and steps
    // added to it cannot overflow.
    Ok(ms.clamp(-MAX_TIME_MS, MAX_TIME_MS))
}

/// Times are clamped to ±this many ms.
const MAX_TIME_MS: i64 = i64::MAX / 4;

/// A duration parameter: seconds with a fraction, or a Prometheus duration (`15s`, `1m30s`), to ms.
///
/// # Errors
/// `invalid parameter "step": cannot parse "x" to a valid duration`.
pub fn parse_step(name: &str, s: &str) -> Result<i64, ApiError> {
    let bad = || {
        ApiError::bad_data(format!(
            "invalid parameter \"{name}\": cannot parse \"{s}\" to a valid duration"
        ))
    };
    if let Ok(secs) = s.parse::<f64>() {
        if !secs.is_finite() || secs < 0.0 {
            return Err(bad());
        }
        #[allow(clippy::cast_possible_truncation)]
        return Ok((secs * 1000.0).round() as i64);
    }
    dwcp_operators::rules::parse_duration(s).ok_or_else(bad)
}

fn required<'a>(p: &'a Params, name: &str) -> Result<&'a str, ApiError> {
    param(p, name).ok_or_else(|| ApiError::bad_data(format!("invalid parameter \"{name}\": missing")))
}

/// A value as Prometheus writes it: shortest form, `+Inf`, `-Inf`, `NaN`.
pub fn format_value(v: f64) -> String {
    if v.is_nan() {
        "NaN".into()
    } else if v == f64::INFINITY {
        "+Inf".into()
    } else if v == f64::NEG_INFINITY {
        "-Inf".into()
    } else {
        format!("{v}")
    }
}

/// A timestamp as Prometheus writes it: seconds, with the milliseconds when there are any.
pub fn format_time(t_ms: i64) -> serde_json::Value {
    if t_ms % 1000 == 0 {
        json!(t_ms / 1000)
    } else {
        #[allow(clippy::cast_precision_loss)]
        let secs = t_ms as f64 / 1000.0;
        json!(secs)
    }
}

fn metric(l: &Labels) -> serde_json::Value {
    serde_json::Value::Object(l.iter().map(|(k, v)| (k.clone(), json!(v))).collect::<Map<_, _>>())
}

fn matrix(mut series: Vec<Series>) -> serde_json::Value {
    series.sort_by(|a, b| a.labels.cmp(&b.labels));
    let result: Vec<_> = series
        .iter()
        .filter(|s| !s.samples.is_empty())
        .map(|s| {
            let values: Vec<_> = s
                .samples
                .iter()
                .map(|(t, v)| json!([format_time(*t), format_value(*v)]))
                .collect();
            json!({"metric": metric(&s.labels), "values": values})
        })
        .collect();
    json!({"resultType": "matrix", "result": result})
}

fn success(data: serde_json::Value) -> serde_json::Value {
    json!({"status": "success", "data": data})
}

fn parse_query(p: &Params) -> Result<promql::Expr, ApiError> {
    let q = required(p, "query")?;
    promql::parse(q).map_err(|e| ApiError::bad_data(format!("invalid parameter \"query\": {e}")))
}

fn execution(e: String) -> ApiError {
    ApiError {
        status: 422,
        kind: "execution",
        message: e,
    }
}

/// `/api/v1/query`: `query`, `time` (default `now_ms`).
///
/// # Errors
/// Bad parameters (400) or an evaluation error (422).
pub fn instant(
    store: &SeriesStore,
    closed_ranges: bool,
    p: &Params,
    now_ms: i64,
) -> Result<serde_json::Value, ApiError> {
    let expr = parse_query(p)?;
    let t = param(p, "time").map_or(Ok(now_ms), |s| parse_time("time", s))?;
    let value = store.engine(closed_ranges).instant(&expr, t).map_err(execution)?;
    let data = match value {
        Value::Scalar(x) => json!({"resultType": "scalar", "result": [format_time(t), format_value(x)]}),
        Value::String(s) => json!({"resultType": "string", "result": [format_time(t), s]}),
        Value::Vector(v) => {
            let result: Vec<_> = v
                .iter()
                .map(|e| json!({"metric": metric(&e.labels), "value": [format_time(t), format_value(e.value)]}))
                .collect();
            json!({"resultType": "vector", "result": result})
        }
        Value::Matrix(m) => matrix(m),
    };
    Ok(success(data))
}

/// `/api/v1/query_range`: `query`, `start`, `end`, `step`.
///
/// # Errors
/// Bad parameters (400) or an evaluation error (422).
pub fn range(store: &SeriesStore, closed_ranges: bool, p: &Params) -> Result<serde_json::Value, ApiError> {
    let expr = parse_query(p)?;
    let start = parse_time("start", required(p, "start")?)?;
    let end = parse_time("end", required(p, "end")?)?;
    let step = parse_step("step", required(p, "step")?)?;
    if end < start {
        return Err(ApiError::bad_data(
            "invalid parameter \"end\": end timestamp must not be before start time",
        ));
    }
    if step <= 0 {
        return Err(ApiError::bad_data(
            "invalid parameter \"step\": zero or negative query resolution step widths are not accepted. Try a positive integer",
        ));
    }
    if (end - start) / step > MAX_POINTS {
        return Err(ApiError::bad_data(
            "exceeded maximum resolution of 11,000 points per timeseries. Try decreasing the query resolution (?step=XX)",
        ));
    }
    let mut engine = store.engine(closed_ranges);
    // A wide query splits its steps between the cores (the answer is the same).
    engine.threads = std::thread::available_parallelism().map_or(1, std::num::NonZero::get);
    let series = engine.range(&expr, start, end, step).map_err(execution)?;
    Ok(success(matrix(series)))
}

/// The series selected by every `match[]` (all series without one), with a sample in
/// `[start, end]` when those are given.
fn selected<'a>(store: &'a SeriesStore, p: &Params, need_match: bool) -> Result<Vec<&'a Series>, ApiError> {
    let mut selectors = Vec::new();
    for (k, v) in p {
        if k == "match[]" {
            selectors.push(
                Selector::parse(v).map_err(|e| ApiError::bad_data(format!("invalid parameter \"match[]\": {e}")))?,
            );
        }
    }
    if need_match && selectors.is_empty() {
        return Err(ApiError::bad_data("no match[] parameter provided"));
    }
    let start = param(p, "start").map(|s| parse_time("start", s)).transpose()?;
    let end = param(p, "end").map(|s| parse_time("end", s)).transpose()?;
    Ok(store
        .series()
        .iter()
        .filter(|s| selectors.is_empty() || selectors.iter().any(|m| m.matches_labels(&s.labels)))
        .filter(|s| {
            s.samples
                .iter()
                .any(|(t, _)| start.is_none_or(|a| *t >= a) && end.is_none_or(|b| *t <= b))
        })
        .collect())
}

/// `/api/v1/series`: label sets matching `match[]`.
///
/// # Errors
/// No or an invalid `match[]`, invalid times.
pub fn series(store: &SeriesStore, p: &Params) -> Result<serde_json::Value, ApiError> {
    let mut sets: Vec<&Labels> = selected(store, p, true)?.into_iter().map(|s| &*s.labels).collect();
    sets.sort();
    Ok(success(json!(sets.into_iter().map(metric).collect::<Vec<_>>())))
}

/// `/api/v1/labels`: label names.
///
/// # Errors
/// An invalid `match[]` or time.
pub fn labels(store: &SeriesStore, p: &Params) -> Result<serde_json::Value, ApiError> {
    let names: BTreeSet<&str> = selected(store, p, false)?
        .into_iter()
        .flat_map(|s| s.labels.keys().map(String::as_str))
        .collect();
    Ok(success(json!(names)))
}

/// `/api/v1/label/<name>/values`.
///
/// # Errors
/// An invalid `match[]` or time.
pub fn label_values(store: &SeriesStore, name: &str, p: &Params) -> Result<serde_json::Value, ApiError> {
    let values: BTreeSet<&str> = selected(store, p, false)?
        .into_iter()
        .filter_map(|s| s.labels.get(name).map(String::as_str))
        .collect();
    Ok(success(json!(values)))
}
