//! The Grafana push and annotations against a local HTTP server that checks every request as
//! Grafana's HTTP API documents it (method, path, `Authorization: Bearer`, body), answers as
//! Grafana does, and records what it accepted.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::body::Bytes;
use axum::extract::State;
use axum::http::{HeaderMap, Method, StatusCode, Uri};
use axum::response::IntoResponse;
use axum::Json;
use dwcp_operators::alerts::{fingerprint, AlertState, AlertTransition};
use dwcp_pipeline::grafana::client::{Annotator, GrafanaClient, Note};
use serde_json::{json, Value};

const TOKEN: &str = "glsa_test_0123456789abcdef";

#[derive(Default)]
struct Grafana {
    /// (method, path, body) of each request that passed the checks.
    accepted: Vec<(String, String, Value)>,
    folders: Vec<String>,
    next_id: u64,
}

type Shared = Arc<Mutex<Grafana>>;

fn bad(msg: &str) -> axum::response::Response {
    (StatusCode::BAD_REQUEST, Json(json!({"message": msg}))).into_response()
}

/// Grafana's API, checked: the rules each endpoint's documentation states.
async fn grafana(
    State(g): State<Shared>,
    method: Method,
    uri: Uri,
    headers: HeaderMap,
    body: Bytes,
) -> axum::response::Response {
    if headers.get("authorization").and_then(|v| v.to_str().ok()) != Some(&format!("Bearer {TOKEN}")) {
        return (StatusCode::UNAUTHORIZED, Json(json!({"message": "Unauthorized"}))).into_response();
    }
    let path = uri.path().to_string();
    let body: Value = if body.is_empty() {
        Value::Null
    } else {
        if headers.get("content-type").and_then(|v| v.to_str().ok()) != Some("application/json") {
            return bad("content-type must be application/json");
        }
        match serde_json::from_slice(&body) {
            Ok(v) => v,
            Err(_) => return bad("bad request data"),
        }
    };
    let mut st = g.lock().expect("lock");
    let reply = match (method.as_str(), path.as_str()) {
        ("GET", p) if p.starts_with("/api/folders/") => {
            let uid = &p["/api/folders/".len()..];
            if st.folders.iter().any(|f| f == uid) {
                Json(json!({"uid": uid, "title": "DWCP"})).into_response()
            } else {
                (
                    StatusCode::NOT_FOUND,
                    Json(json!({"message": "folder not found", "status": "not-found"})),
                )
                    .into_response()
            }
        }
        ("POST", "/api/folders") => {
            let (Some(uid), Some(_title)) = (body["uid"].as_str(), body["title"].as_str()) else {
                return bad("uid and title required");
            };
            st.folders.push(uid.to_string());
            Json(json!({"uid": uid, "title": body["title"], "id": 1})).into_response()
        }
        ("POST", "/api/dashboards/db") => {
            let d = &body["dashboard"];
            if !d.is_object() || d["title"].as_str().is_none() || !d["id"].is_null() || d["uid"].as_str().is_none() {
                return bad("Dashboard title cannot be empty / id must be null for a new dashboard");
            }
            if let Some(f) = body["folderUid"].as_str() {
                if !st.folders.iter().any(|x| x == f) {
                    return bad("folder not found");
                }
            }
            let uid = d["uid"].as_str().unwrap_or_default().to_string();
            Json(json!({"id": 1, "uid": uid, "url": format!("/d/{uid}/x"), "status": "success", "version": 1}))
                .into_response()
        }
        ("POST", "/api/annotations") => {
            let tags_ok = body["tags"].as_array().is_some_and(|t| t.iter().all(Value::is_string));
            if body["time"].as_u64().is_none() || !tags_ok || body["text"].as_str().is_none() {
                return bad("time (epoch ms), tags (strings) and text required");
            }
            st.next_id += 1;
            Json(json!({"message": "Annotation added", "id": st.next_id})).into_response()
        }
        ("PATCH", p) if p.starts_with("/api/annotations/") => {
            let known = p["/api/annotations/".len()..]
                .parse::<u64>()
                .is_ok_and(|id| id >= 1 && id <= st.next_id);
            if !known {
                return (StatusCode::NOT_FOUND, Json(json!({"message": "Annotation not found"}))).into_response();
            }
            Json(json!({"message": "Annotation patched"})).into_response()
        }
        _ => return (StatusCode::NOT_FOUND, Json(json!({"message": "Not found"}))).into_response(),
    };
    st.accepted.push((method.to_string(), path, body));
    reply
}

async fn start() -> (String, Shared) {
    let g: Shared = Arc::default();
    let app = axum::Router::new().fallback(grafana).with_state(g.clone());
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let url = format!("http://{}", listener.local_addr().expect("addr"));
    tokio::spawn(async move {
        let _ = axum::serve(listener, app).await;
    });
    (url, g)
}

#[tokio::test]
async fn push_creates_the_folder_then_every_dashboard() {
    let (url, g) = start().await;
    let client = GrafanaClient::new(&url, Some(TOKEN.into()), Duration::from_secs(5)).expect("client");
    let uids = client.push_all(Some("dwcp")).await.expect("push");
    let expected_uids: Vec<String> = dwcp_pipeline::grafana::boards()
        .iter()
        .map(|b| b.uid.to_string())
        .collect();
    assert_eq!(uids, expected_uids);
    {
        let st = g.lock().expect("lock");
        let calls: Vec<(&str, &str)> = st.accepted.iter().map(|(m, p, _)| (m.as_str(), p.as_str())).collect();
        let mut expected = vec![("GET", "/api/folders/dwcp"), ("POST", "/api/folders")];
        expected.extend(std::iter::repeat_n(("POST", "/api/dashboards/db"), 7));
        assert_eq!(
            calls, expected,
            "the folder is looked up (404), created, then each dashboard posted"
        );
        for ((_, _, body), uid) in st.accepted[2..].iter().zip(&expected_uids) {
            assert_eq!(body["dashboard"]["uid"], json!(uid));
            assert_eq!(body["folderUid"], "dwcp");
            assert_eq!(body["overwrite"], true);
            assert_eq!(body["dashboard"]["schemaVersion"], 39);
        }
    }
    // A second push finds the folder and overwrites.
    client.push_all(Some("dwcp")).await.expect("again");
    assert_eq!(g.lock().expect("lock").folders, ["dwcp"]);
    // A wrong token is Grafana's 401, reported.
    let wrong = GrafanaClient::new(&url, Some("nope".into()), Duration::from_secs(5)).expect("client");
    let e = wrong.push_all(None).await.expect_err("401");
    assert!(e.contains("401"), "{e}");
}

#[tokio::test]
async fn alerts_become_region_annotations_and_episodes_one_each() {
    let (url, g) = start().await;
    let client = GrafanaClient::new(&url, Some(TOKEN.into()), Duration::from_secs(5)).expect("client");
    let results = prometheus_client::metrics::family::Family::default();
    let (annotator, task) = Annotator::start(client, results);
    let labels: BTreeMap<String, String> = dwcp_operators::alerts::label_set(&[
        ("alertname", "HighLatency"),
        ("region", "us-east-1"),
        ("severity", "warning"),
    ]);
    let alert = |state, t: u64| AlertTransition {
        fingerprint: fingerprint(&labels),
        state,
        labels: labels.clone(),
        annotations: BTreeMap::new(),
        value: 250.0,
        active_since: Some(1_700_000_000_000_000_000),
        event_time: t,
        group: "dwcp".into(),
        expr: "p95 > 100".into(),
    };
    annotator.send(Note::Alert(alert(AlertState::Pending, 1_700_000_000_000_000_000)));
    annotator.send(Note::Alert(alert(AlertState::Firing, 1_700_000_300_000_000_000)));
    annotator.send(Note::Alert(alert(AlertState::Resolved, 1_700_000_900_000_000_000)));
    let mut opened = anomaly();
    opened.closed = false;
    opened.episode.end = opened.episode.start;
    annotator.send(Note::Anomaly(Box::new(opened)));
    annotator.send(Note::Anomaly(Box::new(anomaly())));
    // An episode seen only ending (it opened before a restart) is posted whole.
    let mut other = anomaly();
    other.episode.start += 1_000_000_000;
    annotator.send(Note::Anomaly(Box::new(other)));
    drop(annotator);
    task.await.expect("task");
    let st = g.lock().expect("lock");
    let calls: Vec<(&str, &str)> = st.accepted.iter().map(|(m, p, _)| (m.as_str(), p.as_str())).collect();
    assert_eq!(
        calls,
        [
            ("POST", "/api/annotations"),
            ("PATCH", "/api/annotations/1"),
            ("POST", "/api/annotations"),
            ("PATCH", "/api/annotations/2"),
            ("POST", "/api/annotations")
        ],
        "pending posts nothing; firing posts; resolved ends the same annotation; an episode \
         posts when it opens and completes the same annotation when it ends"
    );
    assert_eq!(st.accepted[0].2["time"], 1_700_000_000_000u64);
    assert_eq!(st.accepted[1].2, json!({"timeEnd": 1_700_000_900_000u64}));
    assert_eq!(st.accepted[2].2["time"], 1_700_000_100_000u64);
    assert_eq!(st.accepted[2].2["timeEnd"], 1_700_000_100_000u64);
    let episode = &st.accepted[3].2;
    assert_eq!(episode["time"], 1_700_000_100_000u64);
    assert_eq!(episode["timeEnd"], 1_700_000_160_000u64);
    assert_eq!(st.accepted[4].2["time"], 1_700_000_101_000u64);
    assert_eq!(
        episode["tags"],
        json!([
            "dwcp",
            "anomaly",
            "dwcp_network_rtt_milliseconds",
            "region:eu-west-1",
            "severity:critical"
        ])
    );
}

fn anomaly() -> dwcp_operators::anomaly::operator::AnomalyRecord {
    use dwcp_operators::anomaly::{Baseline, Episode};
    dwcp_operators::anomaly::operator::AnomalyRecord {
        labels: dwcp_operators::alerts::label_set(&[
            ("__name__", "dwcp_network_rtt_milliseconds"),
            ("region", "eu-west-1"),
            ("peer_region", "us-west-1"),
        ]),
        episode: Episode {
            start: 1_700_000_100_000_000_000,
            end: 1_700_000_160_000_000_000,
            peak_time: 1_700_000_120_000_000_000,
            peak_score: 0.9,
            value: 480.0,
            expected: 50.0,
            band: 12.0,
            detectors: vec!["three_sigma".into(), "seasonal".into()],
            baseline: Baseline {
                count: 500,
                mean: 50.0,
                stddev: 3.0,
                min: 41.0,
                max: 480.0,
                median: 50.0,
                moving_average: 51.0,
                ewma: 50.5,
            },
        },
        closed: true,
    }
}
