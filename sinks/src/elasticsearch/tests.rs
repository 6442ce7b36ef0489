//! Unit tests: documents, indices, ids, and the per-item retry rules against a fault-injecting
//! store (503 for one item, then 200; a 400 item).

use std::sync::{Arc, Mutex};

use axum::body::Bytes;
use axum::extract::State;
use axum::routing::{post, put};
use axum::Router;
use dwcp_schemas::model::{
    AnyValue, Attributes, KeyValue, LogRecord, Origin, Resource, Scope, Span, SpanId, SpanKind, StatusCode, TraceId,
};

use super::*;
use crate::ack::{Ack, AckReceiver};

fn origin() -> Origin {
    Origin {
        region: "eu-west-1".into(),
        resource: Arc::new(Resource {
            attributes: Attributes(vec![
                KeyValue {
                    key: "service.name".into(),
                    value: AnyValue::String("dwcp-migrator".into()),
                },
                KeyValue {
                    key: "cloud.region".into(),
                    value: AnyValue::String("eu-west-1".into()),
                },
            ]),
        }),
        scope: Arc::new(Scope::default()),
    }
}

fn log(body: &str, t: u64) -> LogRecord {
    LogRecord {
        origin: origin(),
        time_unix_nano: t,
        observed_time_unix_nano: t,
        severity_number: 17,
        severity_text: "ERROR".into(),
        body: AnyValue::String(body.into()),
        attributes: Attributes::default(),
        trace_id: TraceId::from_hex("7097f05712f218bcf4308a972f82807a"),
        span_id: SpanId::from_hex("6583743b15a13ec8"),
        flags: 0,
        event_name: String::new(),
    }
}

#[test]
fn log_documents_go_to_daily_indices_with_stable_ids() {
    // 2026-11-24T00:57:00.123Z
    let t = 1_795_481_820_123_000_000;
    let d = log_document(&log("Migration failed", t), "dwcp-logs");
    assert_eq!(d.index, "dwcp-logs-2026.11.24");
    let v: serde_json::Value = serde_json::from_slice(&d.source).expect("json");
    assert_eq!(v["@timestamp"], "2026-11-24T00:57:00.123Z");
    assert_eq!(v["severity_number"], 17);
    assert_eq!(v["service"], "dwcp-migrator");
    assert_eq!(v["region"], "eu-west-1");
    assert_eq!(v["trace_id"], "7097f05712f218bcf4308a972f82807a");
    assert_eq!(v["resource"]["cloud.region"], "eu-west-1");
    assert_eq!(
        d.id,
        log_document(&log("Migration failed", t), "dwcp-logs").id,
        "same record, same id"
    );
    assert_ne!(d.id, log_document(&log("other", t), "dwcp-logs").id);
    assert_eq!(encoder::rfc3339(0), "1970-01-01T00:00:00.000Z");
    assert_eq!(index_for("x", 951_782_400_000_000_000, '-'), "x-2000-02-29");
}

#[test]
fn spans_in_jaeger_format() {
    let s = Span {
        origin: origin(),
        trace_id: TraceId::from_hex("a6db1ee824087a26a62fb4450b53028d").expect("id"),
        span_id: SpanId::from_hex("8c3ffff90e1420d6").expect("id"),
        parent_span_id: SpanId::from_hex("f2dcd486dd701027"),
        trace_state: String::new(),
        name: "replicate eu-west-1".into(),
        kind: SpanKind::Client,
        start_time_unix_nano: 1_795_481_820_250_118_126,
        end_time_unix_nano: 1_795_481_820_252_693_393,
        attributes: Attributes(vec![KeyValue {
            key: "bytes".into(),
            value: AnyValue::Int(42),
        }]),
        events: vec![],
        links: vec![],
        status_code: StatusCode::Error,
        status_message: "boom".into(),
    };
    let d = jaeger_span(&s, "jaeger-span");
    assert_eq!(d.index, "jaeger-span-2026-11-24");
    let v: serde_json::Value = serde_json::from_slice(&d.source).expect("json");
    assert_eq!(v["traceID"], "a6db1ee824087a26a62fb4450b53028d");
    assert_eq!(v["operationName"], "replicate eu-west-1");
    assert_eq!(v["startTime"], 1_795_481_820_250_118u64);
    assert_eq!(v["startTimeMillis"], 1_795_481_820_250u64);
    assert_eq!(v["duration"], 2575);
    assert_eq!(v["references"][0]["refType"], "CHILD_OF");
    assert_eq!(v["references"][0]["spanID"], "f2dcd486dd701027");
    assert_eq!(v["process"]["serviceName"], "dwcp-migrator");
    let tags = v["tags"].as_array().expect("tags");
    assert!(tags.contains(&serde_json::json!({"key": "bytes", "type": "int64", "value": 42})));
    assert!(tags.contains(&serde_json::json!({"key": "error", "type": "bool", "value": true})));
    assert!(tags.contains(&serde_json::json!({"key": "span.kind", "type": "string", "value": "client"})));
}

#[derive(Default)]
struct Store {
    /// Per request: the ids it carried.
    requests: Mutex<Vec<Vec<String>>>,
    /// Ids to answer 503 for, once each.
    flaky: Mutex<Vec<String>>,
    /// Ids always refused with 400.
    bad: Vec<String>,
}

async fn bulk(State(s): State<Arc<Store>>, body: Bytes) -> axum::Json<serde_json::Value> {
    let text = String::from_utf8_lossy(&body).into_owned();
    let mut ids = Vec::new();
    let mut items = Vec::new();
    for line in text.lines().step_by(2) {
        let a: serde_json::Value = serde_json::from_str(line).expect("action");
        let id = a["index"]["_id"].as_str().expect("id").to_string();
        let status = if s.bad.contains(&id) {
            400
        } else {
            let mut f = s.flaky.lock().expect("lock");
            if let Some(i) = f.iter().position(|x| *x == id) {
                f.remove(i);
                503
            } else {
                201
            }
        };
        let mut item = serde_json::json!({"_id": id, "status": status});
        if status >= 300 {
            item["error"] = serde_json::json!({"type": if status == 400 {"mapper_parsing_exception"} else {"unavailable"}, "reason": "scripted"});
        }
        items.push(serde_json::json!({"index": item}));
        ids.push(id);
    }
    s.requests.lock().expect("lock").push(ids);
    axum::Json(serde_json::json!({"errors": true, "items": items}))
}

#[derive(Default)]
struct Acks(Mutex<Vec<u64>>);
impl AckReceiver for Acks {
    fn done(&self, id: u64) {
        self.0.lock().expect("lock").push(id);
    }
}

#[tokio::test]
async fn failed_items_are_retried_rejected_ones_dead_lettered_then_acked() {
    let docs: Vec<Document> = (0..4)
        .map(|i| log_document(&log(&format!("m{i}"), 1_795_481_820_000_000_000), "dwcp-logs"))
        .collect();
    let store = Arc::new(Store {
        flaky: Mutex::new(vec![docs[1].id.clone()]),
        bad: vec![docs[2].id.clone()],
        ..Default::default()
    });
    let app = Router::new()
        .route("/_bulk", post(bulk))
        .route(
            "/_index_template/{name}",
            put(|| async { axum::Json(serde_json::json!({"acknowledged": true})) }),
        )
        .with_state(store.clone());
    let l = tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let url = format!("http://{}", l.local_addr().expect("addr"));
    tokio::spawn(async move { axum::serve(l, app).await.expect("serve") });

    let (rtx, mut rrx) = tokio::sync::mpsc::channel(16);
    let stats = EsStats::default();
    let cfg = EsConfig {
        batch_wait_ms: 20,
        min_backoff_ms: 5,
        max_backoff_ms: 20,
        gzip: false,
        ..EsConfig::new(&url)
    };
    let sink = EsSink::start(cfg, stats.clone(), rtx).expect("start");
    let acks = Arc::new(Acks::default());
    sink.send(docs.clone(), Some(&Ack::new(5, acks.clone()))).await;
    sink.close().await;
    let reqs = store.requests.lock().expect("lock").clone();
    assert_eq!(reqs.len(), 2);
    assert_eq!(reqs[0].len(), 4);
    assert_eq!(reqs[1], vec![docs[1].id.clone()], "only the 503 item is retried");
    assert_eq!(stats.docs_sent.get(), 3);
    assert_eq!(stats.docs_rejected.get(), 1);
    let r = rrx.recv().await.expect("a rejected document");
    assert_eq!(r.doc.id, docs[2].id);
    assert_eq!(r.reason, "400 mapper_parsing_exception: scripted");
    assert_eq!(*acks.0.lock().expect("lock"), vec![5]);
}

#[tokio::test]
async fn auth_headers_and_gzip_bodies_are_sent() {
    let seen: Arc<Mutex<Vec<(String, String, usize)>>> = Arc::default();
    let s2 = seen.clone();
    let app = Router::new().route(
        "/_bulk",
        post(move |headers: axum::http::HeaderMap, body: Bytes| {
            let s2 = s2.clone();
            async move {
                let auth = headers.get("authorization").and_then(|v| v.to_str().ok()).unwrap_or("").to_string();
                let enc = headers.get("content-encoding").and_then(|v| v.to_str().ok()).unwrap_or("").to_string();
                let mut raw = Vec::new();
                let _ = std::io::Read::read_to_end(&mut flate2::read::GzDecoder::new(&body[..]), &mut raw);
                let docs = String::from_utf8_lossy(&raw).lines().count() / 2;
                s2.lock().expect("lock").push((auth, enc, docs));
                axum::Json(serde_json::json!({"errors": false, "items": (0..docs).map(|_| serde_json::json!({"index": {"status": 201}})).collect::<Vec<_>>()}))
            }
        }),
    );
    let l = tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let url = format!("http://{}", l.local_addr().expect("addr"));
    tokio::spawn(async move { axum::serve(l, app).await.expect("serve") });
    let doc = log_document(&log("m", 1_795_481_820_000_000_000), "dwcp-logs");
    for auth in [
        EsAuth::Basic {
            username: "elastic".into(),
            password: "changeme".into(),
        },
        EsAuth::ApiKey { key: "aWQ6a2V5".into() },
    ] {
        let (rtx, _rrx) = tokio::sync::mpsc::channel(1);
        let cfg = EsConfig {
            batch_wait_ms: 10,
            put_templates: false,
            auth: Some(auth),
            ..EsConfig::new(&url)
        };
        let sink = EsSink::start(cfg, EsStats::default(), rtx).expect("start");
        sink.send(vec![doc.clone()], None).await;
        sink.close().await;
    }
    let seen = seen.lock().expect("lock").clone();
    // base64("elastic:changeme") = ZWxhc3RpYzpjaGFuZ2VtZQ==
    assert_eq!(
        seen[0],
        ("Basic ZWxhc3RpYzpjaGFuZ2VtZQ==".to_string(), "gzip".to_string(), 1)
    );
    assert_eq!(seen[1], ("ApiKey aWQ6a2V5".to_string(), "gzip".to_string(), 1));
}

#[tokio::test]
async fn templates_fall_back_to_the_legacy_api_of_elasticsearch_7_before_7_8() {
    let seen: Arc<Mutex<Vec<(String, serde_json::Value)>>> = Arc::default();
    let s1 = seen.clone();
    let s2 = seen.clone();
    let app = Router::new()
        .route(
            "/_index_template/{name}",
            put(|| async { (axum::http::StatusCode::NOT_FOUND, "no handler found") }),
        )
        .route(
            "/_template/{name}",
            put(
                move |axum::extract::Path(name): axum::extract::Path<String>, body: axum::Json<serde_json::Value>| {
                    let s1 = s1.clone();
                    async move {
                        s1.lock().expect("lock").push((name, body.0));
                        axum::Json(serde_json::json!({"acknowledged": true}))
                    }
                },
            ),
        );
    let l = tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let url = format!("http://{}", l.local_addr().expect("addr"));
    tokio::spawn(async move { axum::serve(l, app).await.expect("serve") });
    let (rtx, _rrx) = tokio::sync::mpsc::channel(1);
    let sink = EsSink::start(EsConfig::new(&url), EsStats::default(), rtx).expect("start");
    sink.close().await;
    let seen = s2.lock().expect("lock").clone();
    let names: Vec<&str> = seen.iter().map(|(n, _)| n.as_str()).collect();
    assert_eq!(names, ["dwcp-logs-template", "jaeger-span-template"]);
    assert_eq!(seen[0].1["index_patterns"][0], "dwcp-logs-*");
    assert_eq!(
        seen[0].1["mappings"]["properties"]["severity_number"]["type"],
        "integer"
    );
    assert_eq!(seen[1].1["mappings"]["properties"]["traceID"]["type"], "keyword");
}

#[tokio::test]
async fn queries_carry_the_sinks_credentials_and_index_patterns() {
    let seen: Arc<Mutex<Vec<(String, String)>>> = Arc::default();
    let s2 = seen.clone();
    let app = Router::new().route(
        "/{index}/_search",
        post(
            move |axum::extract::Path(index): axum::extract::Path<String>, headers: axum::http::HeaderMap| {
                let s2 = s2.clone();
                async move {
                    let auth = headers
                        .get("authorization")
                        .and_then(|v| v.to_str().ok())
                        .unwrap_or("")
                        .to_string();
                    s2.lock().expect("lock").push((index, auth));
                    axum::Json(serde_json::json!({"hits": {"hits": [{"_source": {"traceID": "abc"}}]}}))
                }
            },
        ),
    );
    let l = tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let url = format!("http://{}", l.local_addr().expect("addr"));
    tokio::spawn(async move { axum::serve(l, app).await.expect("serve") });
    let cfg = EsConfig {
        auth: Some(EsAuth::ApiKey { key: "aWQ6a2V5".into() }),
        logs_index_prefix: "dwcp-logs".into(),
        ..EsConfig::new(&url)
    };
    let q = crate::elasticsearch::EsQuery::from_config(&cfg).expect("client");
    assert_eq!(q.trace("abc").await.expect("trace").len(), 1);
    assert_eq!(q.logs_of_trace("abc").await.expect("logs").len(), 1);
    assert_eq!(
        seen.lock().expect("lock").clone(),
        [
            ("jaeger-span-*".to_string(), "ApiKey aWQ6a2V5".to_string()),
            ("dwcp-logs-*".to_string(), "ApiKey aWQ6a2V5".to_string()),
        ]
    );
}
