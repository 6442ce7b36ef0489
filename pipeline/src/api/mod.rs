//! The monitoring API on the worker's HTTP port: PromQL over the in-memory window in
//! Prometheus's shapes (a worker is a Prometheus datasource for Grafana), alerts, region health,
//! SLAs, network telemetry, capacity forecasts, and traces and logs from the Elasticsearch sink's
//! store. The document at `/openapi.json` lists every route; it is built from [`ROUTES`], the
//! same table the router is checked against.
//!
//! API keys (`api.keys`) carry scopes: `metrics`, `traces` (traces and logs) and `admin` (every
//! scope). With no keys configured the API is open, as Prometheus's is. A missing or unknown key
//! is a 401, a key without the route's scope a 403, both with a JSON error. Keys are compared in
//! constant time and never logged.

pub mod prom;
pub mod sql;
pub mod window;

use std::sync::Arc;

use axum::extract::{FromRequest, MatchedPath, Path, Request, State};
use axum::http::{header, HeaderMap, HeaderValue, Method, StatusCode};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use axum::routing::{get, MethodRouter};
use axum::{Json, Router};
use dwcp_operators::alerts::AlertTransition;
use dwcp_operators::derived::DerivedView;
use dwcp_sinks::elasticsearch::{EsQuery, LogQuery, TraceQuery};
use serde::{Deserialize, Serialize};
use serde_json::json;
use tokio::sync::watch;

use crate::telemetry::{labels, Telemetry};
use prom::{ApiError, Params};
use window::MetricsWindow;

/// What a key may read.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Scope {
    /// PromQL, alerts, health, SLAs, network, capacity.
    Metrics,
    /// Traces and logs.
    Traces,
    /// Everything.
    Admin,
}

impl Scope {
    fn as_str(self) -> &'static str {
        match self {
            Scope::Metrics => "metrics",
            Scope::Traces => "traces",
            Scope::Admin => "admin",
        }
    }
}

/// A key with its secret resolved.
#[derive(Clone)]
pub struct ApiKey {
    /// Its name, for messages (the secret never appears in them).
    pub name: String,
    /// The secret.
    pub key: String,
    /// What it may read.
    pub scopes: Vec<Scope>,
}

impl std::fmt::Debug for ApiKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ApiKey")
            .field("name", &self.name)
            .field("key", &"***")
            .field("scopes", &self.scopes)
            .finish()
    }
}

/// What the handlers read.
pub struct ApiState {
    /// The PromQL window, when `api.enabled`.
    pub window: Option<Arc<MetricsWindow>>,
    /// The SQL history, when `api.sql.enabled`.
    pub history: Option<Arc<sql::History>>,
    /// Prometheus 2 window bounds (`rules.prometheus_version: 2`).
    pub closed_ranges: bool,
    /// SLAs, health, network, capacity as of the last closed minute.
    pub derived: watch::Receiver<Arc<DerivedView>>,
    /// Alerts pending or firing.
    pub alerts: watch::Receiver<Arc<Vec<AlertTransition>>>,
    /// The trace and log store, when the Elasticsearch sink is configured.
    pub es: Option<EsQuery>,
    /// Keys; empty: the API is open.
    pub keys: Vec<ApiKey>,
    /// Request counts.
    pub telemetry: Arc<Telemetry>,
}

/// One route: path (axum syntax), the scope it needs, a summary and its query parameters
/// `(name, description, required)`.
pub struct Route {
    /// Path, `{name}` for a path parameter.
    pub path: &'static str,
    /// Also answers POST with a form body (Prometheus's query endpoints do).
    pub post: bool,
    /// The scope a key needs; `None`: no key needed.
    pub scope: Option<Scope>,
    /// What it returns.
    pub summary: &'static str,
    /// Query parameters.
    pub params: &'static [(&'static str, &'static str, bool)],
}

const TIME: &str = "RFC 3339 or Unix seconds";

/// Every route of the API.
pub const ROUTES: &[Route] = &[
    Route {
        path: "/api/v1/query",
        post: true,
        scope: Some(Scope::Metrics),
        summary: "PromQL instant query over the in-memory window (Prometheus's shape)",
        params: &[("query", "PromQL expression", true), ("time", TIME, false)],
    },
    Route {
        path: "/api/v1/query_range",
        post: true,
        scope: Some(Scope::Metrics),
        summary: "PromQL range query over the in-memory window (Prometheus's shape)",
        params: &[
            ("query", "PromQL expression", true),
            ("start", TIME, true),
            ("end", TIME, true),
            ("step", "seconds or a duration (15s)", true),
        ],
    },
    Route {
        path: "/api/v1/sql",
        post: true,
        scope: Some(Scope::Metrics),
        summary: "SQL (DataFusion) over the last 24 h of rollups, alerts, anomalies, sla and health records; \
                  `{\"columns\":[{name,type}],\"rows\":[[...]],\"truncated\":bool}`",
        params: &[(
            "query",
            "one SELECT statement (also a form field or a JSON body {\"query\": ...})",
            true,
        )],
    },
    Route {
        path: "/api/v1/series",
        post: true,
        scope: Some(Scope::Metrics),
        summary: "Label sets of the series matching the selectors",
        params: &[
            ("match[]", "series selector (repeatable)", true),
            ("start", TIME, false),
            ("end", TIME, false),
        ],
    },
    Route {
        path: "/api/v1/labels",
        post: true,
        scope: Some(Scope::Metrics),
        summary: "Label names",
        params: &[
            ("match[]", "series selector (repeatable)", false),
            ("start", TIME, false),
            ("end", TIME, false),
        ],
    },
    Route {
        path: "/api/v1/label/{name}/values",
        post: false,
        scope: Some(Scope::Metrics),
        summary: "Values of one label",
        params: &[
            ("match[]", "series selector (repeatable)", false),
            ("start", TIME, false),
            ("end", TIME, false),
        ],
    },
    Route {
        path: "/api/v1/status/buildinfo",
        post: false,
        scope: Some(Scope::Metrics),
        summary: "The worker's version",
        params: &[],
    },
    Route {
        path: "/api/v1/alerts",
        post: false,
        scope: Some(Scope::Metrics),
        summary: "Alerts pending or firing (Prometheus's shape), from rules and SLA burn rates",
        params: &[
            ("state", "pending or firing", false),
            ("severity", "the severity label", false),
        ],
    },
    Route {
        path: "/api/v1/regions/health",
        post: false,
        scope: Some(Scope::Metrics),
        summary: "Health score, trend and factors per region",
        params: &[("region", "one region", false)],
    },
    Route {
        path: "/api/v1/sla",
        post: false,
        scope: Some(Scope::Metrics),
        summary: "The latest SLA report per SLA and region (compliance, error budget, burn rates)",
        params: &[
            ("sla", "one SLA by name", false),
            ("region", "a region or global", false),
        ],
    },
    Route {
        path: "/api/v1/network",
        post: false,
        scope: Some(Scope::Metrics),
        summary: "Region-pair network telemetry (latency, jitter, loss, throughput, tunnel)",
        params: &[
            ("region", "the sending region", false),
            ("peer_region", "the receiving region", false),
        ],
    },
    Route {
        path: "/api/v1/capacity",
        post: false,
        scope: Some(Scope::Metrics),
        summary: "Capacity forecasts per resource and region, and bottlenecks",
        params: &[("region", "one region", false), ("resource", "one resource", false)],
    },
    Route {
        path: "/api/v1/traces",
        post: false,
        scope: Some(Scope::Traces),
        summary: "Trace ids by region, service, minimum duration, error and time, newest first",
        params: &[
            ("region", "a region any span ran in", false),
            ("service", "a service any span belongs to", false),
            ("min_duration_ms", "spans at least this long", false),
            ("error", "true or false", false),
            ("start", TIME, false),
            ("end", TIME, false),
            ("limit", "trace ids at most (20)", false),
        ],
    },
    Route {
        path: "/api/v1/traces/{id}",
        post: false,
        scope: Some(Scope::Traces),
        summary: "Every span of one trace (Jaeger's span format), by start time",
        params: &[],
    },
    Route {
        path: "/api/v1/traces/{id}/logs",
        post: false,
        scope: Some(Scope::Traces),
        summary: "The log records of one trace",
        params: &[],
    },
    Route {
        path: "/api/v1/logs",
        post: false,
        scope: Some(Scope::Traces),
        summary: "Log records by severity, region, time, search term and trace, newest first",
        params: &[
            (
                "min_severity",
                "lowest severity number (9 INFO, 13 WARN, 17 ERROR)",
                false,
            ),
            ("region", "one region", false),
            ("start", TIME, false),
            ("end", TIME, false),
            ("search", "full-text search in the body", false),
            ("trace_id", "one trace", false),
            ("limit", "records at most (100)", false),
        ],
    },
    Route {
        path: "/openapi.json",
        post: false,
        scope: None,
        summary: "This document",
        params: &[],
    },
];

/// The request's parameters: the query string, and a form body on POST.
pub struct Form(pub Params);

impl<S: Send + Sync> FromRequest<S> for Form {
    type Rejection = Response;

    async fn from_request(req: Request, _state: &S) -> Result<Self, Self::Rejection> {
        let mut params: Params = req
            .uri()
            .query()
            .map(|q| form_urlencoded::parse(q.as_bytes()).into_owned().collect())
            .unwrap_or_default();
        let is_form = req
            .headers()
            .get(header::CONTENT_TYPE)
            .and_then(|v| v.to_str().ok())
            .is_some_and(|v| v.starts_with("application/x-www-form-urlencoded"));
        let is_json = req
            .headers()
            .get(header::CONTENT_TYPE)
            .and_then(|v| v.to_str().ok())
            .is_some_and(|v| v.starts_with("application/json"));
        if req.method() == Method::POST && (is_form || is_json) {
            let body = axum::body::to_bytes(req.into_body(), 1 << 20)
                .await
                .map_err(|e| error(&ApiError::bad_data(format!("request body: {e}"))))?;
            if is_form {
                params.extend(form_urlencoded::parse(&body).into_owned());
            } else {
                let v: serde_json::Value = serde_json::from_slice(&body)
                    .map_err(|e| error(&ApiError::bad_data(format!("request body is not JSON: {e}"))))?;
                if let Some(m) = v.as_object() {
                    params.extend(
                        m.iter()
                            .filter_map(|(k, v)| v.as_str().map(|s| (k.clone(), s.to_string()))),
                    );
                }
            }
        }
        Ok(Form(params))
    }
}

fn error(e: &ApiError) -> Response {
    let status = StatusCode::from_u16(e.status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
    let mut r = (status, Json(e.body())).into_response();
    if e.status == 401 {
        r.headers_mut()
            .insert(header::WWW_AUTHENTICATE, HeaderValue::from_static("Bearer"));
    }
    r
}

fn reply(r: Result<serde_json::Value, ApiError>) -> Response {
    match r {
        Ok(v) => Json(v).into_response(),
        Err(e) => error(&e),
    }
}

fn success(data: impl Serialize) -> Response {
    Json(json!({"status": "success", "data": data})).into_response()
}

/// Constant-time equality of two secrets (their lengths are not secret).
fn same(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

/// Checks the request's key for `need`.
///
/// # Errors
/// 401 without a key or with an unknown one, 403 when the key lacks the scope.
pub fn authorize(keys: &[ApiKey], headers: &HeaderMap, need: Scope) -> Result<(), ApiError> {
    if keys.is_empty() {
        return Ok(());
    }
    let bearer = headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer ").or_else(|| v.strip_prefix("bearer ")));
    let given = bearer.or_else(|| headers.get("x-api-key").and_then(|v| v.to_str().ok()));
    let Some(given) = given.map(str::trim) else {
        return Err(ApiError {
            status: 401,
            kind: "unauthorized",
            message: "missing API key: send `Authorization: Bearer <key>` or `X-API-Key: <key>`".into(),
        });
    };
    // Every key is compared, so the time taken does not tell which one matched.
    let mut found = None;
    for k in keys {
        if same(k.key.as_bytes(), given.as_bytes()) {
            found = Some(k);
        }
    }
    let Some(key) = found else {
        return Err(ApiError {
            status: 401,
            kind: "unauthorized",
            message: "unknown API key".into(),
        });
    };
    if key.scopes.contains(&need) || key.scopes.contains(&Scope::Admin) {
        Ok(())
    } else {
        Err(ApiError {
            status: 403,
            kind: "forbidden",
            message: format!("API key `{}` lacks the `{}` scope", key.name, need.as_str()),
        })
    }
}

async fn guard(State((s, need)): State<(Arc<ApiState>, Option<Scope>)>, req: Request, next: Next) -> Response {
    let endpoint = req
        .extensions()
        .get::<MatchedPath>()
        .map_or_else(|| "other".to_string(), |p| p.as_str().to_string());
    let response = match need.map_or(Ok(()), |n| authorize(&s.keys, req.headers(), n)) {
        Ok(()) => next.run(req).await,
        Err(e) => error(&e),
    };
    s.telemetry
        .api_requests
        .get_or_create(&labels([("endpoint", &endpoint), ("code", response.status().as_str())]))
        .inc();
    response
}

fn now_ms() -> i64 {
    i64::try_from(crate::topology::now_nanos() / 1_000_000).unwrap_or(i64::MAX)
}

/// Runs a PromQL-window call on a blocking thread.
async fn on_window(
    s: &ApiState,
    f: impl FnOnce(&dwcp_operators::rules::SeriesStore, bool) -> Result<serde_json::Value, ApiError> + Send + 'static,
) -> Response {
    let Some(w) = s.window.clone() else {
        return error(&ApiError {
            status: 503,
            kind: "unavailable",
            message: "the PromQL window is disabled (api.enabled: false)".into(),
        });
    };
    let closed = s.closed_ranges;
    match tokio::task::spawn_blocking(move || f(&w.read(), closed)).await {
        Ok(r) => reply(r),
        Err(e) => error(&ApiError {
            status: 500,
            kind: "internal",
            message: format!("query failed: {e}"),
        }),
    }
}

async fn query(State(s): State<Arc<ApiState>>, Form(p): Form) -> Response {
    let now = now_ms();
    on_window(&s, move |st, closed| prom::instant(st, closed, &p, now)).await
}

async fn query_range(State(s): State<Arc<ApiState>>, Form(p): Form) -> Response {
    on_window(&s, move |st, closed| prom::range(st, closed, &p)).await
}

async fn series(State(s): State<Arc<ApiState>>, Form(p): Form) -> Response {
    on_window(&s, move |st, _| prom::series(st, &p)).await
}

async fn label_names(State(s): State<Arc<ApiState>>, Form(p): Form) -> Response {
    on_window(&s, move |st, _| prom::labels(st, &p)).await
}

async fn label_values(State(s): State<Arc<ApiState>>, Path(name): Path<String>, Form(p): Form) -> Response {
    on_window(&s, move |st, _| prom::label_values(st, &name, &p)).await
}

async fn buildinfo() -> Response {
    success(json!({
        "version": env!("CARGO_PKG_VERSION"),
        "application": "dwcp-monitor",
        "revision": "",
        "branch": "",
        "buildUser": "",
        "buildDate": "",
        "goVersion": "",
    }))
}

fn get_param<'a>(p: &'a Params, name: &str) -> Option<&'a str> {
    p.iter()
        .find(|(k, _)| k == name)
        .map(|(_, v)| v.as_str())
        .filter(|v| !v.is_empty())
}

/// Alerts in Prometheus's `/api/v1/alerts` shape.
pub fn alerts_body(alerts: &[AlertTransition], p: &Params) -> serde_json::Value {
    let state = get_param(p, "state");
    let severity = get_param(p, "severity");
    let list: Vec<_> = alerts
        .iter()
        .filter(|a| state.is_none_or(|s| a.state.as_str() == s))
        .filter(|a| severity.is_none_or(|s| a.labels.get("severity").is_some_and(|v| v == s)))
        .map(|a| {
            json!({
                "labels": a.labels,
                "annotations": a.annotations,
                "state": a.state.as_str(),
                "activeAt": a.active_since.map(dwcp_sinks::alertmanager::rfc3339),
                "value": prom::format_value(a.value),
                "fingerprint": format!("{:016x}", a.fingerprint),
            })
        })
        .collect();
    json!({"alerts": list})
}

async fn alerts(State(s): State<Arc<ApiState>>, Form(p): Form) -> Response {
    let a = s.alerts.borrow().clone();
    success(alerts_body(&a, &p))
}

async fn regions_health(State(s): State<Arc<ApiState>>, Form(p): Form) -> Response {
    let v = s.derived.borrow().clone();
    let region = get_param(&p, "region");
    let out: Vec<_> = v
        .health
        .iter()
        .filter(|(r, _)| region.is_none_or(|x| x == r))
        .map(|(r, h)| json!({"region": r, "health": h}))
        .collect();
    success(out)
}

async fn sla(State(s): State<Arc<ApiState>>, Form(p): Form) -> Response {
    let v = s.derived.borrow().clone();
    let (name, region) = (get_param(&p, "sla"), get_param(&p, "region"));
    let out: Vec<_> = v
        .sla
        .iter()
        .filter(|r| name.is_none_or(|x| x == r.sla) && region.is_none_or(|x| x == r.region))
        .collect();
    success(out)
}

async fn network(State(s): State<Arc<ApiState>>, Form(p): Form) -> Response {
    let v = s.derived.borrow().clone();
    let (region, peer) = (get_param(&p, "region"), get_param(&p, "peer_region"));
    let out: Vec<_> = v
        .network
        .iter()
        .filter(|x| region.is_none_or(|r| r == x.region) && peer.is_none_or(|r| r == x.peer_region))
        .collect();
    success(out)
}

async fn capacity(State(s): State<Arc<ApiState>>, Form(p): Form) -> Response {
    let v = s.derived.borrow().clone();
    let (region, resource) = (get_param(&p, "region"), get_param(&p, "resource"));
    let forecasts: Vec<_> = v
        .capacity
        .iter()
        .filter(|x| region.is_none_or(|r| r == x.region) && resource.is_none_or(|r| r == x.resource))
        .collect();
    success(json!({"forecasts": forecasts, "bottlenecks": v.bottlenecks}))
}

fn store(s: &ApiState) -> Result<&EsQuery, ApiError> {
    s.es.as_ref().ok_or_else(|| ApiError {
        status: 503,
        kind: "unavailable",
        message: "traces and logs are read from the Elasticsearch sink, and sinks.elasticsearch is not configured"
            .into(),
    })
}

fn store_error(e: String) -> ApiError {
    ApiError {
        status: 502,
        kind: "unavailable",
        message: format!("the trace and log store answered: {e}"),
    }
}

fn number<T: std::str::FromStr>(p: &Params, name: &str) -> Result<Option<T>, ApiError> {
    get_param(p, name)
        .map(|v| {
            v.parse()
                .map_err(|_| ApiError::bad_data(format!("invalid parameter \"{name}\": `{v}` is not a number")))
        })
        .transpose()
}

fn time_ms(p: &Params, name: &str) -> Result<Option<u64>, ApiError> {
    get_param(p, name)
        .map(|v| prom::parse_time(name, v).map(|t| u64::try_from(t).unwrap_or(0)))
        .transpose()
}

fn trace_query(p: &Params) -> Result<TraceQuery, ApiError> {
    let error = match get_param(p, "error") {
        None => None,
        Some("true") => Some(true),
        Some("false") => Some(false),
        Some(v) => {
            return Err(ApiError::bad_data(format!(
                "invalid parameter \"error\": `{v}`: expected true or false"
            )))
        }
    };
    Ok(TraceQuery {
        region: get_param(p, "region").map(String::from),
        service: get_param(p, "service").map(String::from),
        min_duration_ms: number(p, "min_duration_ms")?,
        error,
        start_ms: time_ms(p, "start")?,
        end_ms: time_ms(p, "end")?,
        limit: number(p, "limit")?,
    })
}

fn log_query(p: &Params) -> Result<LogQuery, ApiError> {
    Ok(LogQuery {
        min_severity: number(p, "min_severity")?,
        region: get_param(p, "region").map(String::from),
        start_ms: time_ms(p, "start")?,
        end_ms: time_ms(p, "end")?,
        search: get_param(p, "search").map(String::from),
        trace_id: get_param(p, "trace_id").map(String::from),
        limit: number(p, "limit")?,
    })
}

async fn traces(State(s): State<Arc<ApiState>>, Form(p): Form) -> Response {
    let r = async {
        let q = trace_query(&p)?;
        store(&s)?.traces(&q).await.map_err(store_error)
    };
    match r.await {
        Ok(ids) => success(ids),
        Err(e) => error(&e),
    }
}

async fn trace(State(s): State<Arc<ApiState>>, Path(id): Path<String>) -> Response {
    let r = async { store(&s)?.trace(&id).await.map_err(store_error) };
    match r.await {
        Ok(spans) if spans.is_empty() => error(&ApiError {
            status: 404,
            kind: "not_found",
            message: format!("no spans of trace {id} in the store"),
        }),
        Ok(spans) => success(json!({"traceID": id, "spans": spans})),
        Err(e) => error(&e),
    }
}

async fn trace_logs(State(s): State<Arc<ApiState>>, Path(id): Path<String>) -> Response {
    let r = async { store(&s)?.logs_of_trace(&id).await.map_err(store_error) };
    match r.await {
        Ok(logs) => success(logs),
        Err(e) => error(&e),
    }
}

async fn logs(State(s): State<Arc<ApiState>>, Form(p): Form) -> Response {
    let r = async {
        let q = log_query(&p)?;
        store(&s)?.logs(&q).await.map_err(store_error)
    };
    match r.await {
        Ok(l) => success(l),
        Err(e) => error(&e),
    }
}

async fn sql_query(State(s): State<Arc<ApiState>>, Form(p): Form) -> Response {
    let Some(h) = s.history.clone() else {
        return error(&ApiError {
            status: 503,
            kind: "unavailable",
            message: "SQL is disabled (api.sql.enabled: false)".into(),
        });
    };
    let Some(q) = get_param(&p, "query").map(String::from) else {
        return error(&ApiError::bad_data("invalid parameter \"query\": missing"));
    };
    reply(h.query(&q).await)
}

async fn openapi_json() -> Response {
    Json(openapi()).into_response()
}

/// The handler of a route.
fn handler(path: &str) -> Option<MethodRouter<Arc<ApiState>>> {
    Some(match path {
        "/api/v1/query" => get(query).post(query),
        "/api/v1/query_range" => get(query_range).post(query_range),
        "/api/v1/sql" => get(sql_query).post(sql_query),
        "/api/v1/series" => get(series).post(series),
        "/api/v1/labels" => get(label_names).post(label_names),
        "/api/v1/label/{name}/values" => get(label_values),
        "/api/v1/status/buildinfo" => get(buildinfo),
        "/api/v1/alerts" => get(alerts),
        "/api/v1/regions/health" => get(regions_health),
        "/api/v1/sla" => get(sla),
        "/api/v1/network" => get(network),
        "/api/v1/capacity" => get(capacity),
        "/api/v1/traces" => get(traces),
        "/api/v1/traces/{id}" => get(trace),
        "/api/v1/traces/{id}/logs" => get(trace_logs),
        "/api/v1/logs" => get(logs),
        "/openapi.json" => get(openapi_json),
        _ => return None,
    })
}

/// The API's routes, each behind its scope's key check.
pub fn router(state: Arc<ApiState>) -> Router {
    let mut r: Router<Arc<ApiState>> = Router::new();
    for route in ROUTES {
        let Some(h) = handler(route.path) else {
            // A route in the table without a handler is a programming error the tests catch.
            tracing::error!(path = route.path, "API route without a handler");
            continue;
        };
        let h = h.route_layer(axum::middleware::from_fn_with_state(
            (state.clone(), route.scope),
            guard,
        ));
        r = r.route(route.path, h);
    }
    r.with_state(state)
}

/// The OpenAPI 3.1 document of [`ROUTES`].
pub fn openapi() -> serde_json::Value {
    let mut paths = serde_json::Map::new();
    for route in ROUTES {
        let mut parameters: Vec<serde_json::Value> = route
            .params
            .iter()
            .map(|(name, description, required)| {
                json!({"name": name, "in": "query", "required": required, "description": description, "schema": {"type": "string"}})
            })
            .collect();
        for seg in route.path.split('/') {
            if let Some(name) = seg.strip_prefix('{').and_then(|s| s.strip_suffix('}')) {
                parameters.push(json!({"name": name, "in": "path", "required": true, "schema": {"type": "string"}}));
            }
        }
        let mut responses = json!({
            "200": {"description": "`{\"status\":\"success\",\"data\":...}`", "content": {"application/json": {"schema": {"$ref": "#/components/schemas/Success"}}}},
            "400": {"description": "bad parameters", "content": {"application/json": {"schema": {"$ref": "#/components/schemas/Error"}}}},
        });
        let mut op = json!({
            "summary": route.summary,
            "operationId": route.path.trim_start_matches('/').replace(['/', '{', '}'], "_").trim_matches('_').to_string(),
            "parameters": parameters,
        });
        if let Some(scope) = route.scope {
            op["security"] = json!([{"bearer": [scope.as_str()]}, {"apiKey": [scope.as_str()]}]);
            op["x-scope"] = json!(scope.as_str());
            responses["401"] = json!({"description": "missing or unknown API key", "content": {"application/json": {"schema": {"$ref": "#/components/schemas/Error"}}}});
            responses["403"] = json!({"description": "the key lacks the scope", "content": {"application/json": {"schema": {"$ref": "#/components/schemas/Error"}}}});
        }
        op["responses"] = responses;
        let mut item = json!({"get": op.clone()});
        if route.post {
            let mut post = op;
            post["operationId"] = json!(format!("{}_post", post["operationId"].as_str().unwrap_or("")));
            post["requestBody"] =
                json!({"content": {"application/x-www-form-urlencoded": {"schema": {"type": "object"}}}});
            item["post"] = post;
        }
        paths.insert(route.path.to_string(), item);
    }
    json!({
        "openapi": "3.1.0",
        "info": {
            "title": "dwcp-monitor monitoring API",
            "version": env!("CARGO_PKG_VERSION"),
            "description": "PromQL over the worker's in-memory window in Prometheus's shapes, alerts, region health, SLAs, network telemetry, capacity forecasts, traces and logs. Keys: `Authorization: Bearer <key>` or `X-API-Key: <key>`; scopes metrics, traces (traces and logs), admin (all)."
        },
        "paths": paths,
        "components": {
            "securitySchemes": {
                "bearer": {"type": "http", "scheme": "bearer"},
                "apiKey": {"type": "apiKey", "in": "header", "name": "X-API-Key"}
            },
            "schemas": {
                "Success": {"type": "object", "required": ["status", "data"], "properties": {"status": {"const": "success"}, "data": {}}},
                "Error": {"type": "object", "required": ["status", "errorType", "error"], "properties": {"status": {"const": "error"}, "errorType": {"type": "string"}, "error": {"type": "string"}}}
            }
        }
    })
}

/// A 404 in the API's error shape for unknown `/api/` paths.
pub async fn not_found() -> Response {
    error(&ApiError {
        status: 404,
        kind: "not_found",
        message: "no such endpoint; the routes are listed at /openapi.json".into(),
    })
}

#[cfg(test)]
mod tests;
