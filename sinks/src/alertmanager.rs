//! Alertmanager v2 (`POST /api/v2/alerts`), as Prometheus sends to it.
//!
//! - A firing alert is posted at once and re-posted every `resend_interval_ms` while it fires,
//!   with `endsAt` four resend intervals ahead (so Alertmanager resolves it by itself if the
//!   worker disappears), and `startsAt` when it became active.
//! - A resolved alert is posted once with `endsAt` = now and forgotten.
//! - Pending alerts are not sent (Prometheus does not send them either).
//! - A failed post is retried three times with a growing pause, then counted and logged; the
//!   next resend carries every firing alert again.
//!
//! - With several workers, an alert moves with its rule group's partition: the worker losing it
//!   forgets it ([`AlertmanagerSink::forget`], no post), the one taking it over posts it firing
//!   at once (its state restored), and re-posts it from then on.
//!
//! One [`AlertmanagerSink`] per Alertmanager: each gets every alert, as with Prometheus's
//! `alertmanagers` list (an Alertmanager cluster deduplicates).

use std::collections::BTreeMap;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use dwcp_operators::alerts::{AlertState, AlertTransition};
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::gauge::Gauge;
use serde::{Deserialize, Serialize};
use tokio::sync::mpsc;
use tokio::task::JoinHandle;

pub use crate::prometheus::remote_write::BuildError;
use crate::prometheus::remote_write::{with_ca_file, Auth, TlsConfig};

/// One Alertmanager.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AlertmanagerConfig {
    /// Base URL, e.g. `http://alertmanager:9093` (`/api/v2/alerts` is appended).
    pub url: String,
    /// Name in logs and metrics; default host:port.
    #[serde(default)]
    pub name: Option<String>,
    /// Re-post firing alerts this often, ms.
    #[serde(default = "default_resend")]
    pub resend_interval_ms: u64,
    /// Request timeout, ms.
    #[serde(default = "default_timeout")]
    pub timeout_ms: u64,
    /// Credentials.
    #[serde(default)]
    pub auth: Option<Auth>,
    /// TLS settings.
    #[serde(default)]
    pub tls: Option<TlsConfig>,
}

fn default_resend() -> u64 {
    60_000
}
fn default_timeout() -> u64 {
    10_000
}

impl AlertmanagerConfig {
    /// A config with defaults for `url`.
    pub fn new(url: &str) -> Self {
        AlertmanagerConfig {
            url: url.to_string(),
            name: None,
            resend_interval_ms: default_resend(),
            timeout_ms: default_timeout(),
            auth: None,
            tls: None,
        }
    }

    /// The name in logs and metrics.
    pub fn display_name(&self) -> String {
        self.name.clone().unwrap_or_else(|| {
            self.url
                .split("://")
                .nth(1)
                .unwrap_or(&self.url)
                .split('/')
                .next()
                .unwrap_or_default()
                .to_string()
        })
    }
}

/// Counters of one Alertmanager.
#[derive(Debug, Clone, Default)]
pub struct AlertmanagerStats {
    /// Alerts posted successfully (each alert in each post).
    pub posted: Counter,
    /// Posts that failed after their retries.
    pub failed: Counter,
    /// Alerts firing, re-posted every interval.
    pub firing: Gauge,
}

/// The sender task's handle.
pub struct AlertmanagerSink {
    tx: mpsc::Sender<Handover>,
    task: JoinHandle<()>,
}

/// What the sender task is handed.
enum Handover {
    /// State changes, in order.
    Transitions(Vec<AlertTransition>),
    /// Alerts another worker has taken over: no longer re-posted from here.
    Forget(Vec<u64>),
}

/// The JSON Alertmanager's v2 API takes.
#[derive(Debug, Serialize)]
#[serde(rename_all = "camelCase")]
struct PostableAlert<'a> {
    labels: &'a BTreeMap<String, String>,
    annotations: &'a BTreeMap<String, String>,
    starts_at: String,
    ends_at: String,
}

/// RFC 3339 UTC with milliseconds, from nanoseconds since the epoch.
pub fn rfc3339(nanos: u64) -> String {
    let secs = nanos / 1_000_000_000;
    let ms = (nanos / 1_000_000) % 1000;
    #[allow(clippy::cast_possible_wrap)]
    let (y, m, d) = dwcp_operators::civil_from_days((secs / 86_400) as i64);
    let s = secs % 86_400;
    format!(
        "{y:04}-{m:02}-{d:02}T{:02}:{:02}:{:02}.{ms:03}Z",
        s / 3600,
        (s / 60) % 60,
        s % 60
    )
}

fn wall_nanos() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| u64::try_from(d.as_nanos()).unwrap_or(u64::MAX))
}

struct Sender {
    client: reqwest::Client,
    url: String,
    name: String,
    auth: Option<Auth>,
    stats: AlertmanagerStats,
}

impl Sender {
    /// Posts `alerts`, retrying three times.
    async fn post(&self, alerts: &[PostableAlert<'_>]) {
        if alerts.is_empty() {
            return;
        }
        let mut pause = Duration::from_millis(500);
        for attempt in 1..=4 {
            let mut req = self.client.post(&self.url).json(alerts);
            req = match &self.auth {
                Some(Auth::Basic { username, password }) => req.basic_auth(username, Some(password)),
                Some(Auth::Bearer { token }) => req.bearer_auth(token),
                None => req,
            };
            let err = match req.send().await {
                Ok(r) if r.status().is_success() => {
                    self.stats.posted.inc_by(alerts.len() as u64);
                    return;
                }
                Ok(r) => {
                    let status = r.status();
                    let body = r.text().await.unwrap_or_default();
                    // A 4xx will not get better by retrying.
                    if status.is_client_error() {
                        tracing::error!(alertmanager = %self.name, %status, body = %body.trim(), "alerts rejected");
                        self.stats.failed.inc();
                        return;
                    }
                    format!("{status}: {}", body.trim())
                }
                Err(e) => e.to_string(),
            };
            if attempt == 4 {
                tracing::error!(alertmanager = %self.name, error = %err, alerts = alerts.len(), "alerts not delivered after 4 attempts; firing ones are re-sent at the next interval");
                self.stats.failed.inc();
                return;
            }
            tracing::warn!(alertmanager = %self.name, error = %err, attempt, "alert post failed; retrying");
            tokio::time::sleep(pause).await;
            pause *= 2;
        }
    }
}

impl AlertmanagerSink {
    /// Starts the sender task.
    ///
    /// # Errors
    /// When the client cannot be built (CA file).
    pub fn start(config: AlertmanagerConfig, stats: AlertmanagerStats) -> Result<Self, BuildError> {
        let builder = with_ca_file(
            reqwest::Client::builder()
                .timeout(Duration::from_millis(config.timeout_ms))
                .user_agent(concat!("dwcp-monitor/", env!("CARGO_PKG_VERSION"))),
            config.tls.as_ref(),
        )?;
        let sender = Sender {
            client: builder.build()?,
            url: format!("{}/api/v2/alerts", config.url.trim_end_matches('/')),
            name: config.display_name(),
            auth: config.auth.clone(),
            stats,
        };
        let (tx, rx) = mpsc::channel(1024);
        let resend = Duration::from_millis(config.resend_interval_ms.max(1));
        let task = tokio::spawn(run(sender, rx, resend));
        Ok(AlertmanagerSink { tx, task })
    }

    /// Hands over state changes (in order).
    pub async fn send(&self, transitions: Vec<AlertTransition>) {
        if transitions.is_empty() {
            return;
        }
        if self.tx.send(Handover::Transitions(transitions)).await.is_err() {
            tracing::error!("alertmanager sender is gone; alerts not sent");
        }
    }

    /// Stops re-posting the alerts with these fingerprints, without resolving them: their rule
    /// group's partition moved to another worker, which posts them from now on. Queued in order
    /// with the state changes handed over before and after (waiting for room like [`send`]).
    ///
    /// [`send`]: AlertmanagerSink::send
    pub async fn forget(&self, fingerprints: Vec<u64>) {
        if fingerprints.is_empty() {
            return;
        }
        if self.tx.send(Handover::Forget(fingerprints)).await.is_err() {
            tracing::error!("alertmanager sender is gone; alerts not forgotten");
        }
    }

    /// Stops after posting what was handed over.
    pub async fn close(self) {
        drop(self.tx);
        let _ = self.task.await;
    }
}

fn postable(a: &AlertTransition, ends: u64) -> PostableAlert<'_> {
    PostableAlert {
        labels: &a.labels,
        annotations: &a.annotations,
        starts_at: rfc3339(a.active_since.unwrap_or(a.event_time)),
        ends_at: rfc3339(ends),
    }
}

async fn run(sender: Sender, mut rx: mpsc::Receiver<Handover>, resend: Duration) {
    let mut firing: BTreeMap<u64, AlertTransition> = BTreeMap::new();
    let mut tick = tokio::time::interval(resend);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    tick.tick().await;
    let ends_ahead = u64::try_from(resend.as_nanos())
        .unwrap_or(u64::MAX / 8)
        .saturating_mul(4);
    loop {
        tokio::select! {
            handover = rx.recv() => {
                let batch = match handover {
                    None => break,
                    Some(Handover::Forget(fingerprints)) => {
                        for f in fingerprints {
                            firing.remove(&f);
                        }
                        sender.stats.firing.set(i64::try_from(firing.len()).unwrap_or(i64::MAX));
                        continue;
                    }
                    Some(Handover::Transitions(batch)) => batch,
                };
                let now = wall_nanos();
                let mut resolved = Vec::new();
                let mut fired = Vec::new();
                for t in batch {
                    match t.state {
                        AlertState::Firing => {
                            fired.push(t.fingerprint);
                            firing.insert(t.fingerprint, t);
                        }
                        AlertState::Resolved => {
                            firing.remove(&t.fingerprint);
                            fired.retain(|f| *f != t.fingerprint);
                            resolved.push(t);
                        }
                        AlertState::Pending | AlertState::Inactive => {}
                    }
                }
                let mut body: Vec<PostableAlert<'_>> = resolved.iter().map(|a| postable(a, now)).collect();
                body.extend(fired.iter().filter_map(|f| firing.get(f)).map(|a| postable(a, now.saturating_add(ends_ahead))));
                sender.post(&body).await;
            }
            _ = tick.tick() => {
                let ends = wall_nanos().saturating_add(ends_ahead);
                let body: Vec<PostableAlert<'_>> = firing.values().map(|a| postable(a, ends)).collect();
                sender.post(&body).await;
            }
        }
        sender.stats.firing.set(i64::try_from(firing.len()).unwrap_or(i64::MAX));
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::{Arc, Mutex};

    #[test]
    fn rfc3339_of_known_instants() {
        assert_eq!(rfc3339(0), "1970-01-01T00:00:00.000Z");
        assert_eq!(rfc3339(1_795_999_696_789_000_000), "2026-11-30T00:48:16.789Z");
        assert_eq!(rfc3339(951_782_400_000_000_000), "2000-02-29T00:00:00.000Z");
    }

    fn transition(state: AlertState, fp: u64) -> AlertTransition {
        AlertTransition {
            fingerprint: fp,
            state,
            labels: [
                ("alertname".to_string(), format!("A{fp}")),
                ("severity".into(), "warning".into()),
            ]
            .into(),
            annotations: [("summary".to_string(), "s".to_string())].into(),
            value: 1.0,
            active_since: Some(1_000_000_000_000),
            event_time: 2_000_000_000_000,
            group: "g".into(),
            expr: "x > 1".into(),
        }
    }

    type Bodies = Arc<Mutex<Vec<serde_json::Value>>>;

    /// A fake Alertmanager that answers 503 to the first `refuse` posts, then 200, recording
    /// each accepted body, and counting every call: the retry and resend behaviour no real
    /// Alertmanager can be made to show on demand.
    async fn fake_alertmanager(refuse: usize) -> (std::net::SocketAddr, Bodies, Arc<std::sync::atomic::AtomicUsize>) {
        let bodies: Bodies = Arc::default();
        let calls = Arc::new(std::sync::atomic::AtomicUsize::new(0));
        let (b, c) = (bodies.clone(), calls.clone());
        let app = axum::Router::new().route(
            "/api/v2/alerts",
            axum::routing::post(move |body: axum::Json<serde_json::Value>| {
                let (b, c) = (b.clone(), c.clone());
                async move {
                    if c.fetch_add(1, std::sync::atomic::Ordering::SeqCst) < refuse {
                        return axum::http::StatusCode::SERVICE_UNAVAILABLE;
                    }
                    b.lock().expect("lock").push(body.0);
                    axum::http::StatusCode::OK
                }
            }),
        );
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let addr = listener.local_addr().expect("addr");
        tokio::spawn(async move { axum::serve(listener, app).await });
        (addr, bodies, calls)
    }

    #[tokio::test]
    async fn posts_retries_resends_firing_and_resolves_once() {
        let (addr, bodies, calls) = fake_alertmanager(1).await;
        let mut cfg = AlertmanagerConfig::new(&format!("http://{addr}"));
        cfg.resend_interval_ms = 700;
        let stats = AlertmanagerStats::default();
        let sink = AlertmanagerSink::start(cfg, stats.clone()).expect("sink");
        sink.send(vec![
            transition(AlertState::Pending, 1),
            transition(AlertState::Firing, 2),
        ])
        .await;
        tokio::time::sleep(Duration::from_millis(1800)).await;
        sink.send(vec![transition(AlertState::Resolved, 2)]).await;
        sink.close().await;
        let bodies = bodies.lock().expect("lock").clone();
        // The first post got a 503 and was retried; then at least one resend; then the
        // resolution. Pending alert 1 never went out.
        assert!(bodies.len() >= 3, "{bodies:?}");
        assert!(calls.load(std::sync::atomic::Ordering::SeqCst) >= 4);
        for body in &bodies[..bodies.len() - 1] {
            assert_eq!(body[0]["labels"]["alertname"], "A2");
            assert_eq!(body[0]["startsAt"], "1970-01-01T00:16:40.000Z");
        }
        let last = &bodies[bodies.len() - 1][0];
        assert_eq!(last["labels"]["alertname"], "A2");
        // Resolved: endsAt is now, not four intervals ahead.
        let ends = last["endsAt"].as_str().expect("endsAt").to_string();
        assert!(ends <= rfc3339(wall_nanos()), "{ends}");
        assert!(bodies.iter().all(|b| b[0]["labels"]["alertname"] != "A1"));
        assert_eq!(stats.failed.get(), 0);
        assert_eq!(stats.firing.get(), 0);
    }

    /// An alert handed over to another worker is no longer re-posted here, and not resolved.
    #[tokio::test]
    async fn a_forgotten_alert_is_neither_resent_nor_resolved() {
        let (addr, bodies, _) = fake_alertmanager(0).await;
        let mut cfg = AlertmanagerConfig::new(&format!("http://{addr}"));
        cfg.resend_interval_ms = 200;
        let stats = AlertmanagerStats::default();
        let sink = AlertmanagerSink::start(cfg, stats.clone()).expect("sink");
        sink.send(vec![
            transition(AlertState::Firing, 1),
            transition(AlertState::Firing, 2),
        ])
        .await;
        tokio::time::sleep(Duration::from_millis(300)).await;
        sink.forget(vec![1]).await;
        tokio::time::sleep(Duration::from_millis(100)).await;
        let posted_before = bodies.lock().expect("lock").len();
        tokio::time::sleep(Duration::from_millis(700)).await;
        sink.close().await;
        let bodies = bodies.lock().expect("lock").clone();
        let names = |b: &serde_json::Value| -> Vec<String> {
            b.as_array()
                .expect("array")
                .iter()
                .map(|a| a["labels"]["alertname"].as_str().unwrap_or("").to_string())
                .collect()
        };
        assert_eq!(names(&bodies[0]), ["A1", "A2"]);
        assert!(bodies.len() >= posted_before + 2, "resent every 200 ms: {bodies:?}");
        for b in &bodies[posted_before..] {
            assert_eq!(names(b), ["A2"], "{bodies:?}");
        }
        assert_eq!(stats.firing.get(), 1);
    }
}
