//! Grafana's HTTP API, as documented: dashboards (`POST /api/dashboards/db`, overwrite, into a
//! folder made with `POST /api/folders` when `GET /api/folders/<uid>` says 404) and annotations
//! (`POST /api/annotations`, `PATCH /api/annotations/<id>` to end one). Every request carries
//! `Authorization: Bearer <service-account token>`.
//!
//! The annotator turns alert transitions and anomaly episodes into annotations tagged `dwcp`,
//! `alert` or `anomaly`, the alert or metric name, `region:<region>` and `severity:<severity>`:
//! an alert's annotation starts when it fires and is ended (a region annotation) when it
//! resolves; an episode is one region annotation from its start to its end.

use std::collections::HashMap;
use std::time::Duration;

use dwcp_operators::alerts::{AlertState, AlertTransition};
use dwcp_operators::anomaly::operator::AnomalyRecord;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use serde_json::{json, Value};
use tokio::sync::mpsc;

use crate::telemetry::{labels, Labels};

/// A Grafana API client.
#[derive(Debug, Clone)]
pub struct GrafanaClient {
    http: reqwest::Client,
    url: String,
    token: Option<String>,
}

/// Attempts per request (5xx and connection errors are retried, 4xx are not).
const ATTEMPTS: u32 = 3;

impl GrafanaClient {
    /// A client for `url` (`http://grafana:3000`).
    ///
    /// # Errors
    /// When the HTTP client cannot be built.
    pub fn new(url: &str, token: Option<String>, timeout: Duration) -> Result<Self, String> {
        let http = reqwest::Client::builder()
            .timeout(timeout)
            .user_agent(concat!("dwcp-monitor/", env!("CARGO_PKG_VERSION")))
            .build()
            .map_err(|e| e.to_string())?;
        Ok(GrafanaClient {
            http,
            url: url.trim_end_matches('/').to_string(),
            token,
        })
    }

    /// Sends a request, retrying 5xx and connection errors; the JSON answer of a 2xx.
    async fn call(&self, method: reqwest::Method, path: &str, body: Option<&Value>) -> Result<(u16, Value), String> {
        let mut last = String::new();
        for attempt in 0..ATTEMPTS {
            if attempt > 0 {
                tokio::time::sleep(Duration::from_millis(200 << attempt)).await;
            }
            let mut req = self.http.request(method.clone(), format!("{}{path}", self.url));
            if let Some(t) = &self.token {
                req = req.bearer_auth(t);
            }
            if let Some(b) = body {
                req = req.json(b);
            }
            match req.send().await {
                Ok(r) => {
                    let status = r.status().as_u16();
                    let text = r.text().await.unwrap_or_default();
                    let v: Value = serde_json::from_str(&text).unwrap_or(Value::String(text));
                    if status < 500 {
                        return Ok((status, v));
                    }
                    last = format!("{method} {path}: {status}: {v}");
                }
                Err(e) => last = format!("{method} {path}: {e}"),
            }
        }
        Err(last)
    }

    async fn expect_ok(&self, method: reqwest::Method, path: &str, body: Option<&Value>) -> Result<Value, String> {
        let (status, v) = self.call(method.clone(), path, body).await?;
        if (200..300).contains(&status) {
            Ok(v)
        } else {
            Err(format!("{method} {path}: {status}: {v}"))
        }
    }

    /// Makes folder `uid` (title `DWCP`) unless it exists.
    ///
    /// # Errors
    /// Grafana's answer when it is neither found nor created.
    pub async fn ensure_folder(&self, uid: &str) -> Result<(), String> {
        let (status, v) = self
            .call(reqwest::Method::GET, &format!("/api/folders/{uid}"), None)
            .await?;
        match status {
            200 => Ok(()),
            404 => self
                .expect_ok(
                    reqwest::Method::POST,
                    "/api/folders",
                    Some(&json!({"uid": uid, "title": "DWCP"})),
                )
                .await
                .map(|_| ()),
            _ => Err(format!("GET /api/folders/{uid}: {status}: {v}")),
        }
    }

    /// Creates or overwrites a dashboard; Grafana's answer (`uid`, `url`, `version`).
    ///
    /// # Errors
    /// Grafana's status and message.
    pub async fn push_dashboard(&self, dashboard: &Value, folder_uid: Option<&str>) -> Result<Value, String> {
        let mut d = dashboard.clone();
        d["id"] = Value::Null;
        let mut body = json!({
            "dashboard": d,
            "overwrite": true,
            "message": concat!("dwcp-monitor ", env!("CARGO_PKG_VERSION")),
        });
        if let Some(f) = folder_uid {
            body["folderUid"] = json!(f);
        }
        self.expect_ok(reqwest::Method::POST, "/api/dashboards/db", Some(&body))
            .await
    }

    /// Pushes every generated dashboard (into `folder_uid`, made if missing); their uids.
    ///
    /// # Errors
    /// The first failure.
    pub async fn push_all(&self, folder_uid: Option<&str>) -> Result<Vec<String>, String> {
        let boards = super::boards();
        super::check(&boards)?;
        if let Some(f) = folder_uid {
            self.ensure_folder(f).await?;
        }
        let mut uids = Vec::new();
        for b in &boards {
            self.push_dashboard(&super::render(b), folder_uid).await?;
            uids.push(b.uid.to_string());
        }
        Ok(uids)
    }

    /// Posts an annotation; its id.
    ///
    /// # Errors
    /// Grafana's status and message.
    pub async fn annotate(&self, a: &Value) -> Result<u64, String> {
        let v = self
            .expect_ok(reqwest::Method::POST, "/api/annotations", Some(a))
            .await?;
        v["id"]
            .as_u64()
            .ok_or_else(|| format!("POST /api/annotations: no id in {v}"))
    }

    /// Replaces annotation `id`'s fields with those of `body` (`PATCH /api/annotations/<id>`).
    ///
    /// # Errors
    /// Grafana's status and message.
    pub async fn update_annotation(&self, id: u64, body: &Value) -> Result<(), String> {
        self.expect_ok(reqwest::Method::PATCH, &format!("/api/annotations/{id}"), Some(body))
            .await
            .map(|_| ())
    }

    /// Ends annotation `id` at `time_end_ms`.
    ///
    /// # Errors
    /// Grafana's status and message.
    pub async fn end_annotation(&self, id: u64, time_end_ms: u64) -> Result<(), String> {
        self.update_annotation(id, &json!({"timeEnd": time_end_ms})).await
    }
}

fn ms(ns: u64) -> u64 {
    ns / 1_000_000
}

/// The annotation of an alert that started firing.
pub fn alert_annotation(a: &AlertTransition) -> Value {
    let mut tags = vec!["dwcp".to_string(), "alert".to_string(), a.alertname().to_string()];
    for key in ["region", "severity"] {
        if let Some(v) = a.labels.get(key) {
            tags.push(format!("{key}:{v}"));
        }
    }
    let summary = a.annotations.get("summary").cloned().unwrap_or_else(|| a.expr.clone());
    json!({
        "time": ms(a.active_since.unwrap_or(a.event_time)),
        "tags": tags,
        "text": format!("{} firing: {summary} (value {})", a.alertname(), super::super::api::prom::format_value(a.value)),
    })
}

/// The annotation of an anomaly episode: critical at a peak score of 0.75 or more.
pub fn anomaly_annotation(r: &AnomalyRecord) -> Value {
    let e = &r.episode;
    let metric = r.labels.get("__name__").cloned().unwrap_or_default();
    let mut tags = vec!["dwcp".to_string(), "anomaly".to_string(), metric];
    if let Some(region) = r.labels.get("region") {
        tags.push(format!("region:{region}"));
    }
    tags.push(format!(
        "severity:{}",
        if e.peak_score >= 0.75 { "critical" } else { "warning" }
    ));
    json!({
        "time": ms(e.start),
        "timeEnd": ms(e.end.max(e.start)),
        "tags": tags,
        "text": format!(
            "Anomaly in {}: {} where {} ± {} was expected, score {:.2}, detectors {}",
            r.series(),
            e.value,
            e.expected,
            e.band,
            e.peak_score,
            e.detectors.join(", ")
        ),
    })
}

/// What the annotator is sent.
#[derive(Debug, Clone)]
pub enum Note {
    /// An alert changed state.
    Alert(AlertTransition),
    /// An anomaly episode opened or ended.
    Anomaly(Box<AnomalyRecord>),
}

/// Posts annotations off the router's path. The queue is bounded; a full queue drops the note
/// and counts it (`dwcp_grafana_annotations_total{result="dropped"}`).
#[derive(Debug, Clone)]
pub struct Annotator {
    tx: mpsc::Sender<Note>,
    results: Family<Labels, Counter>,
}

impl Annotator {
    /// Starts the task.
    pub fn start(client: GrafanaClient, results: Family<Labels, Counter>) -> (Self, tokio::task::JoinHandle<()>) {
        let (tx, mut rx) = mpsc::channel::<Note>(1024);
        let counts = results.clone();
        let task = tokio::spawn(async move {
            let mut open: HashMap<u64, u64> = HashMap::new();
            // Annotations of open anomaly episodes, by series and start.
            let mut episodes: HashMap<(String, u64), u64> = HashMap::new();
            let count = |r: &str| {
                counts.get_or_create(&labels([("result", r)])).inc();
            };
            while let Some(note) = rx.recv().await {
                match note {
                    Note::Alert(a) if a.state == AlertState::Firing => {
                        match client.annotate(&alert_annotation(&a)).await {
                            Ok(id) => {
                                open.insert(a.fingerprint, id);
                                count("posted");
                            }
                            Err(e) => {
                                tracing::warn!(alert = %a.alertname(), error = %e, "grafana annotation not posted");
                                count("failed");
                            }
                        }
                    }
                    Note::Alert(a) if matches!(a.state, AlertState::Resolved | AlertState::Inactive) => {
                        let Some(id) = open.remove(&a.fingerprint) else {
                            continue;
                        };
                        match client.end_annotation(id, ms(a.event_time)).await {
                            Ok(()) => count("updated"),
                            Err(e) => {
                                tracing::warn!(alert = %a.alertname(), error = %e, "grafana annotation not ended");
                                count("failed");
                            }
                        }
                    }
                    Note::Alert(_) => {}
                    // An episode is annotated when it opens and completed (end, peak) when it
                    // ends; one seen only ending (opened before a restart) is posted whole.
                    Note::Anomaly(r) => {
                        let key = (r.series(), r.episode.start);
                        let body = anomaly_annotation(&r);
                        match (r.closed, episodes.remove(&key)) {
                            (true, Some(id)) => match client.update_annotation(id, &body).await {
                                Ok(()) => count("updated"),
                                Err(e) => {
                                    tracing::warn!(series = %r.series(), error = %e, "grafana annotation not ended");
                                    count("failed");
                                }
                            },
                            (closed, _) => match client.annotate(&body).await {
                                Ok(id) => {
                                    if !closed {
                                        episodes.insert(key, id);
                                    }
                                    count("posted");
                                }
                                Err(e) => {
                                    tracing::warn!(series = %r.series(), error = %e, "grafana annotation not posted");
                                    count("failed");
                                }
                            },
                        }
                    }
                }
            }
        });
        (Annotator { tx, results }, task)
    }

    /// Queues a note.
    pub fn send(&self, note: Note) {
        if self.tx.try_send(note).is_err() {
            self.results.get_or_create(&labels([("result", "dropped")])).inc();
        }
    }
}
