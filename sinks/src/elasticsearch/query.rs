//! The queries the monitoring API exposes over the store: a trace by id; traces by region,
//! service, minimum duration, error and time range; logs by level, region, time range, search
//! term and limit; the logs of one trace. Each builds an Elasticsearch/OpenSearch query DSL body
//! (`bool` filters with `term` and `range`, `match` for the search term) and runs it.

use serde::{Deserialize, Serialize};
use serde_json::{json, Value};

use super::encoder::rfc3339;

/// A search for traces: every field optional.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct TraceQuery {
    /// A region any span of the trace ran in.
    pub region: Option<String>,
    /// A service any span of the trace belongs to.
    pub service: Option<String>,
    /// Spans at least this long, ms.
    pub min_duration_ms: Option<u64>,
    /// Only traces with (or without) an error span.
    pub error: Option<bool>,
    /// Start of the time range, Unix ms (inclusive).
    pub start_ms: Option<u64>,
    /// End of the time range, Unix ms (exclusive).
    pub end_ms: Option<u64>,
    /// Trace ids at most (default 20).
    pub limit: Option<usize>,
}

/// A search for log records: every field optional.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct LogQuery {
    /// Lowest severity number (9 INFO, 13 WARN, 17 ERROR).
    pub min_severity: Option<i32>,
    /// Region.
    pub region: Option<String>,
    /// Start of the time range, Unix ms (inclusive).
    pub start_ms: Option<u64>,
    /// End of the time range, Unix ms (exclusive).
    pub end_ms: Option<u64>,
    /// Full-text search in the body.
    pub search: Option<String>,
    /// Only records of this trace.
    pub trace_id: Option<String>,
    /// Records at most (default 100).
    pub limit: Option<usize>,
}

/// The query body for spans matching `q` (callers take the distinct trace ids).
pub fn traces_body(q: &TraceQuery) -> Value {
    let mut filter = Vec::new();
    if let Some(r) = &q.region {
        filter.push(json!({"term": {"region": r}}));
    }
    if let Some(s) = &q.service {
        filter.push(json!({"term": {"process.serviceName": s}}));
    }
    if let Some(d) = q.min_duration_ms {
        filter.push(json!({"range": {"duration": {"gte": d * 1000}}}));
    }
    if let Some(e) = q.error {
        filter.push(json!({"term": {"error": e}}));
    }
    if q.start_ms.is_some() || q.end_ms.is_some() {
        let mut r = serde_json::Map::new();
        if let Some(s) = q.start_ms {
            r.insert("gte".into(), json!(s));
        }
        if let Some(e) = q.end_ms {
            r.insert("lt".into(), json!(e));
        }
        filter.push(json!({"range": {"startTimeMillis": r}}));
    }
    json!({"query": {"bool": {"filter": filter}}, "sort": [{"startTime": {"order": "desc"}}], "size": 10_000})
}

/// The query body for log records matching `q`.
pub fn logs_body(q: &LogQuery) -> Value {
    let mut filter = Vec::new();
    let mut must = Vec::new();
    if let Some(s) = q.min_severity {
        filter.push(json!({"range": {"severity_number": {"gte": s}}}));
    }
    if let Some(r) = &q.region {
        filter.push(json!({"term": {"region": r}}));
    }
    if let Some(t) = &q.trace_id {
        filter.push(json!({"term": {"trace_id": t}}));
    }
    if q.start_ms.is_some() || q.end_ms.is_some() {
        let mut r = serde_json::Map::new();
        if let Some(s) = q.start_ms {
            r.insert("gte".into(), json!(rfc3339(s * 1_000_000)));
        }
        if let Some(e) = q.end_ms {
            r.insert("lt".into(), json!(rfc3339(e * 1_000_000)));
        }
        filter.push(json!({"range": {"@timestamp": r}}));
    }
    if let Some(s) = &q.search {
        must.push(json!({"match": {"body": s}}));
    }
    json!({
        "query": {"bool": {"filter": filter, "must": must}},
        "sort": [{"@timestamp": {"order": "desc"}}],
        "size": q.limit.unwrap_or(100)
    })
}

/// Runs queries against the store.
#[derive(Debug, Clone)]
pub struct EsQuery {
    client: reqwest::Client,
    url: String,
    logs: String,
    spans: String,
}

impl EsQuery {
    /// A query client for the indices of `logs_prefix` and `spans_prefix`.
    pub fn new(url: &str, logs_prefix: &str, spans_prefix: &str) -> Self {
        EsQuery {
            client: reqwest::Client::new(),
            url: url.trim_end_matches('/').into(),
            logs: format!("{logs_prefix}-*"),
            spans: format!("{spans_prefix}-*"),
        }
    }

    /// A query client for a sink's configuration: its URL, index prefixes, auth and CA.
    ///
    /// # Errors
    /// As [`super::service::http_client`].
    pub fn from_config(config: &super::EsConfig) -> Result<Self, String> {
        Ok(EsQuery {
            client: super::service::http_client(config)?,
            url: config.url.trim_end_matches('/').into(),
            logs: format!("{}-*", config.logs_index_prefix),
            spans: format!("{}-*", config.spans_index_prefix),
        })
    }

    async fn search(&self, index: &str, body: &Value) -> Result<Vec<Value>, String> {
        let r = self
            .client
            .post(format!("{}/{index}/_search", self.url))
            .json(body)
            .send()
            .await
            .map_err(|e| e.to_string())?;
        let status = r.status();
        let v: Value = r.json().await.map_err(|e| e.to_string())?;
        if !status.is_success() {
            return Err(format!("{status}: {v}"));
        }
        Ok(v["hits"]["hits"]
            .as_array()
            .map(|h| h.iter().map(|x| x["_source"].clone()).collect())
            .unwrap_or_default())
    }

    /// Every span of one trace, in Jaeger's format, by start time.
    ///
    /// # Errors
    /// The store's error.
    pub async fn trace(&self, trace_id: &str) -> Result<Vec<Value>, String> {
        let body = json!({"query": {"term": {"traceID": trace_id}}, "sort": [{"startTime": {"order": "asc"}}], "size": 10_000});
        self.search(&self.spans, &body).await
    }

    /// Trace ids matching `q`, newest first.
    ///
    /// # Errors
    /// The store's error.
    pub async fn traces(&self, q: &TraceQuery) -> Result<Vec<String>, String> {
        let spans = self.search(&self.spans, &traces_body(q)).await?;
        let mut ids: Vec<String> = Vec::new();
        for s in spans {
            if let Some(id) = s["traceID"].as_str() {
                if !ids.iter().any(|x| x == id) {
                    ids.push(id.to_string());
                }
            }
        }
        ids.truncate(q.limit.unwrap_or(20));
        Ok(ids)
    }

    /// Log records matching `q`, newest first.
    ///
    /// # Errors
    /// The store's error.
    pub async fn logs(&self, q: &LogQuery) -> Result<Vec<Value>, String> {
        self.search(&self.logs, &logs_body(q)).await
    }

    /// The log records of one trace.
    ///
    /// # Errors
    /// The store's error.
    pub async fn logs_of_trace(&self, trace_id: &str) -> Result<Vec<Value>, String> {
        self.logs(&LogQuery {
            trace_id: Some(trace_id.into()),
            ..Default::default()
        })
        .await
    }
}
