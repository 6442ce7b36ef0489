//! The retry rules against a fault-injecting receiver (the one kind of fake server allowed:
//! no real server answers 503, then 200, on demand), and the wire format.

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use axum::body::Bytes;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use axum::response::IntoResponse;
use axum::routing::post;
use axum::Router;
use dwcp_operators::prom::Sample;
use prost::Message as _;

use super::*;
use crate::ack::{Ack, AckReceiver};

#[derive(Default)]
struct Receiver {
    /// Status codes to answer in order; 200 once exhausted.
    script: Mutex<Vec<(u16, Option<&'static str>)>>,
    /// (arrival, headers, decoded request) of every request.
    seen: Mutex<Vec<(Instant, HeaderMap, proto::WriteRequest)>>,
}

async fn handle(State(r): State<Arc<Receiver>>, headers: HeaderMap, body: Bytes) -> impl IntoResponse {
    let raw = snap::raw::Decoder::new().decompress_vec(&body).expect("snappy");
    let req = proto::WriteRequest::decode(raw.as_slice()).expect("protobuf");
    r.seen.lock().expect("lock").push((Instant::now(), headers, req));
    let next = {
        let mut s = r.script.lock().expect("lock");
        if s.is_empty() {
            None
        } else {
            Some(s.remove(0))
        }
    };
    match next {
        None => (StatusCode::NO_CONTENT, HeaderMap::new(), String::new()),
        Some((code, retry_after)) => {
            let mut h = HeaderMap::new();
            if let Some(ra) = retry_after {
                h.insert("retry-after", ra.parse().expect("header"));
            }
            (
                StatusCode::from_u16(code).expect("status"),
                h,
                format!("scripted {code}"),
            )
        }
    }
}

async fn receiver(script: Vec<(u16, Option<&'static str>)>) -> (Arc<Receiver>, String) {
    let r = Arc::new(Receiver {
        script: Mutex::new(script),
        ..Default::default()
    });
    let app = Router::new().route("/api/v1/write", post(handle)).with_state(r.clone());
    let l = tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let addr = l.local_addr().expect("addr");
    tokio::spawn(async move { axum::serve(l, app).await.expect("serve") });
    (r, format!("http://{addr}/api/v1/write"))
}

#[derive(Default)]
struct Acks(Mutex<Vec<u64>>);
impl AckReceiver for Acks {
    fn done(&self, id: u64) {
        self.0.lock().expect("lock").push(id);
    }
}

fn sample(name: &str, region: &str, v: f64, ts: i64) -> Sample {
    Sample::new(
        vec![("__name__".into(), name.into()), ("region".into(), region.into())],
        v,
        ts,
    )
}

fn config(url: &str) -> RemoteWriteConfig {
    RemoteWriteConfig {
        shards: 2,
        batch_wait_ms: 20,
        min_backoff_ms: 10,
        max_backoff_ms: 40,
        ..RemoteWriteConfig::new(url)
    }
}

#[tokio::test]
async fn retries_503_until_accepted_then_acks() {
    let (r, url) = receiver(vec![(503, None), (503, None)]).await;
    let stats = RemoteWriteStats::default();
    let sink = RemoteWriteSink::start(
        RemoteWriteConfig {
            shards: 1,
            ..config(&url)
        },
        stats.clone(),
    )
    .expect("start");
    let acks = Arc::new(Acks::default());
    let ack = Ack::new(9, acks.clone());
    sink.send(
        vec![sample("up", "a", 1.0, 1000), sample("up", "a", 0.0, 2000)],
        Some(&ack),
    )
    .await;
    drop(ack);
    sink.close().await;
    assert_eq!(*acks.0.lock().expect("lock"), vec![9]);
    assert_eq!(stats.retries.get(), 2);
    assert_eq!(stats.requests.get(), 3);
    assert_eq!(stats.samples_sent.get(), 2);
    assert_eq!(stats.samples_dropped.get(), 0);
    let seen = r.seen.lock().expect("lock");
    assert_eq!(seen.len(), 3, "the same body three times");
    assert!(seen.iter().all(|(_, _, req)| req == &seen[0].2));
}

#[tokio::test]
async fn a_400_is_dropped_counted_and_not_retried() {
    let (r, url) = receiver(vec![(400, None)]).await;
    let stats = RemoteWriteStats::default();
    let sink = RemoteWriteSink::start(
        RemoteWriteConfig {
            shards: 1,
            ..config(&url)
        },
        stats.clone(),
    )
    .expect("start");
    let acks = Arc::new(Acks::default());
    sink.send(vec![sample("up", "a", 1.0, 1000)], Some(&Ack::new(1, acks.clone())))
        .await;
    tokio::time::sleep(Duration::from_millis(200)).await;
    sink.send(vec![sample("up", "a", 1.0, 2000)], Some(&Ack::new(2, acks.clone())))
        .await;
    sink.close().await;
    assert_eq!(stats.samples_dropped.get(), 1);
    assert_eq!(stats.samples_sent.get(), 1);
    assert_eq!(stats.retries.get(), 0);
    assert_eq!(r.seen.lock().expect("lock").len(), 2);
    assert_eq!(
        *acks.0.lock().expect("lock"),
        vec![1, 2],
        "a rejected batch still releases its offset"
    );
}

#[tokio::test]
async fn a_429_waits_for_retry_after() {
    let (r, url) = receiver(vec![(429, Some("1"))]).await;
    let stats = RemoteWriteStats::default();
    let sink = RemoteWriteSink::start(
        RemoteWriteConfig {
            shards: 1,
            ..config(&url)
        },
        stats.clone(),
    )
    .expect("start");
    sink.send(vec![sample("up", "a", 1.0, 1000)], None).await;
    sink.close().await;
    let seen = r.seen.lock().expect("lock");
    assert_eq!(seen.len(), 2);
    let gap = seen[1].0 - seen[0].0;
    assert!(
        gap >= Duration::from_millis(1000),
        "retried after {gap:?}, before Retry-After"
    );
    assert_eq!(stats.samples_sent.get(), 1);
}

#[tokio::test]
async fn wire_format_headers_sorted_labels_and_ordered_samples() {
    let (r, url) = receiver(vec![]).await;
    let sink = RemoteWriteSink::start(
        RemoteWriteConfig {
            shards: 1,
            ..config(&url)
        },
        RemoteWriteStats::default(),
    )
    .expect("start");
    let mut s = sample("b_metric", "eu", 2.0, 3000);
    let mut labels = s.labels.to_vec();
    labels.push(("empty".into(), "".into()));
    s.labels = labels.into();
    sink.send(
        vec![
            sample("b_metric", "eu", 1.0, 2000),
            s,
            sample("a_metric", "us", 5.0, 1000),
        ],
        None,
    )
    .await;
    sink.close().await;
    let seen = r.seen.lock().expect("lock");
    let (_, h, req) = &seen[0];
    assert_eq!(h["content-encoding"], "snappy");
    assert_eq!(h["content-type"], "application/x-protobuf");
    assert_eq!(h["x-prometheus-remote-write-version"], "0.1.0");
    assert!(h["user-agent"].to_str().expect("ascii").starts_with("dwcp-monitor/"));
    // The empty label is dropped, so both b_metric samples are one series, in time order.
    let b = req
        .timeseries
        .iter()
        .find(|t| t.labels[0].value == "b_metric")
        .expect("series");
    let names: Vec<&str> = b.labels.iter().map(|l| l.name.as_str()).collect();
    assert_eq!(names, ["__name__", "region"]);
    let ts: Vec<i64> = req
        .timeseries
        .iter()
        .flat_map(|t| t.samples.iter().map(|s| s.timestamp))
        .collect();
    assert_eq!(ts.len(), 3);
    assert!(b.samples.windows(2).all(|w| w[0].timestamp <= w[1].timestamp));
}

#[tokio::test]
async fn one_series_always_lands_on_one_shard() {
    let (r, url) = receiver(vec![]).await;
    let sink = RemoteWriteSink::start(
        RemoteWriteConfig {
            shards: 4,
            max_samples_per_send: 3,
            ..config(&url)
        },
        RemoteWriteStats::default(),
    )
    .expect("start");
    for ts in 0..30 {
        sink.send(
            (0..8).map(|i| sample("m", &format!("r{i}"), ts as f64, ts)).collect(),
            None,
        )
        .await;
    }
    sink.close().await;
    // Every series' samples arrive in timestamp order across all requests.
    let seen = r.seen.lock().expect("lock");
    let mut last: std::collections::HashMap<String, i64> = Default::default();
    for (_, _, req) in seen.iter() {
        for t in &req.timeseries {
            let key = format!("{:?}", t.labels);
            for s in &t.samples {
                let prev = last.insert(key.clone(), s.timestamp).unwrap_or(-1);
                assert!(s.timestamp > prev, "{key}: {} after {prev}", s.timestamp);
            }
        }
    }
    assert_eq!(last.len(), 8);
}

#[tokio::test]
async fn basic_and_bearer_auth_headers_are_sent() {
    let (r, url) = receiver(vec![]).await;
    for auth in [
        Auth::Basic {
            username: "user".into(),
            password: "pa:ss".into(),
        },
        Auth::Bearer { token: "t0k3n".into() },
    ] {
        let sink = RemoteWriteSink::start(
            RemoteWriteConfig {
                shards: 1,
                auth: Some(auth),
                ..config(&url)
            },
            RemoteWriteStats::default(),
        )
        .expect("start");
        sink.send(vec![sample("up", "a", 1.0, 1000)], None).await;
        sink.close().await;
    }
    let seen = r.seen.lock().expect("lock");
    // base64("user:pa:ss") = dXNlcjpwYTpzcw==
    assert_eq!(seen[0].1["authorization"], "Basic dXNlcjpwYTpzcw==");
    assert_eq!(seen[1].1["authorization"], "Bearer t0k3n");
}

#[test]
fn a_missing_ca_file_is_a_startup_error_naming_it() {
    let cfg = RemoteWriteConfig {
        tls: Some(TlsConfig {
            ca_file: Some("/nonexistent/ca.pem".into()),
        }),
        ..RemoteWriteConfig::new("https://example.invalid/api/v1/write")
    };
    let err = RemoteWriteService::new(&cfg).expect_err("no CA file");
    assert!(
        err.to_string().starts_with("tls.ca_file /nonexistent/ca.pem: "),
        "{err}"
    );
}

/// Prometheus' TSDB in miniature: a request is refused whole (400) if any sample is older than
/// its series' newest, or at the same time with another value; else every sample is stored.
type Stored = std::collections::BTreeMap<Vec<(String, String)>, Vec<(i64, f64)>>;

#[derive(Default)]
struct Tsdb {
    series: Mutex<Stored>,
    requests: Mutex<usize>,
}

async fn tsdb_handle(State(db): State<Arc<Tsdb>>, body: Bytes) -> impl IntoResponse {
    let raw = snap::raw::Decoder::new().decompress_vec(&body).expect("snappy");
    let req = proto::WriteRequest::decode(raw.as_slice()).expect("protobuf");
    *db.requests.lock().expect("lock") += 1;
    let mut series = db.series.lock().expect("lock");
    let key = |ts: &proto::TimeSeries| -> Vec<(String, String)> {
        ts.labels.iter().map(|l| (l.name.clone(), l.value.clone())).collect()
    };
    let mut staged = series.clone();
    for ts in &req.timeseries {
        let stored = staged.entry(key(ts)).or_default();
        for s in &ts.samples {
            match stored.last() {
                Some(&(t, _)) if s.timestamp < t => {
                    return (StatusCode::BAD_REQUEST, "out of order sample".to_string())
                }
                Some(&(t, v)) if s.timestamp == t && v != s.value => {
                    return (StatusCode::BAD_REQUEST, "duplicate sample for timestamp".to_string())
                }
                Some(&(t, _)) if s.timestamp == t => {}
                _ => stored.push((s.timestamp, s.value)),
            }
        }
    }
    *series = staged;
    (StatusCode::NO_CONTENT, String::new())
}

/// A replay after a restart sends samples the receiver already has mixed with new ones; the
/// receiver refuses such a request whole. The sink splits it until the old samples stand alone:
/// they are dropped and counted, every new sample is written, in order.
#[tokio::test]
async fn samples_the_receiver_already_has_are_isolated_and_the_rest_written() {
    let db = Arc::new(Tsdb::default());
    let app = Router::new()
        .route("/api/v1/write", post(tsdb_handle))
        .with_state(db.clone());
    let l = tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let url = format!("http://{}/api/v1/write", l.local_addr().expect("addr"));
    tokio::spawn(async move { axum::serve(l, app).await.expect("serve") });
    let stats = RemoteWriteStats::default();
    let sink = RemoteWriteSink::start(
        RemoteWriteConfig {
            shards: 1,
            ..config(&url)
        },
        stats.clone(),
    )
    .expect("start");
    // Written before the "restart": a@1..5.
    sink.send((1..=5).map(|t| sample("x", "a", t as f64, t * 1000)).collect(), None)
        .await;
    tokio::time::sleep(Duration::from_millis(200)).await;
    // The replay: a@4, a@5 again (a@5 identical: accepted as is), then new a@6, a@7, and b@1..3.
    let mut replay = Vec::new();
    for t in 4..=7 {
        replay.push(sample("x", "a", t as f64, t * 1000));
        if t <= 6 {
            replay.push(sample("x", "b", t as f64, (t - 3) * 1000));
        }
    }
    sink.send(replay, None).await;
    sink.close().await;
    let series = db.series.lock().expect("lock");
    let values = |region: &str| -> Vec<i64> {
        series
            .iter()
            .find(|(k, _)| k.iter().any(|(n, v)| n == "region" && v == region))
            .map(|(_, v)| v.iter().map(|(t, _)| t / 1000).collect())
            .unwrap_or_default()
    };
    assert_eq!(values("a"), vec![1, 2, 3, 4, 5, 6, 7]);
    assert_eq!(values("b"), vec![1, 2, 3]);
    assert_eq!(stats.samples_dropped.get(), 1, "a@4 refused, alone");
    assert_eq!(stats.samples_sent.get(), 5 + 6);
}

/// `write_relabel_configs`: dropped series are counted and acknowledged, kept ones arrive with
/// the rewritten labels, sorted; two series relabeled into one arrive as one, in order.
#[tokio::test]
async fn relabeling_drops_counts_and_rewrites_series() {
    let (r, url) = receiver(vec![]).await;
    let stats = RemoteWriteStats::default();
    let steps: Vec<RelabelConfig> = serde_yaml::from_str(
        "- {source_labels: [__name__], regex: 'dwcp:.*', action: keep}\n\
         - {regex: region, action: labeldrop}\n\
         - {source_labels: [__name__], regex: 'dwcp:(.*):(.*)', target_label: agg, replacement: '$2'}\n",
    )
    .expect("yaml");
    let sink = RemoteWriteSink::start(
        RemoteWriteConfig {
            shards: 3,
            write_relabel_configs: steps,
            ..config(&url)
        },
        stats.clone(),
    )
    .expect("start");
    let acks = Arc::new(Acks::default());
    let ack = Ack::new(4, acks.clone());
    sink.send(
        vec![
            sample("up", "a", 1.0, 1000),
            sample("dwcp:lat:p95", "a", 2.0, 1000),
            sample("dwcp:lat:p95", "b", 3.0, 2000),
            sample("up", "b", 1.0, 1000),
        ],
        Some(&ack),
    )
    .await;
    drop(ack);
    sink.close().await;
    assert_eq!(*acks.0.lock().expect("lock"), vec![4]);
    assert_eq!(stats.samples_relabel_dropped.get(), 2);
    assert_eq!(stats.samples_sent.get(), 2);
    let seen = r.seen.lock().expect("lock");
    let series: Vec<_> = seen.iter().flat_map(|(_, _, req)| req.timeseries.clone()).collect();
    assert_eq!(series.len(), 1, "both samples in one series, one request: {series:?}");
    let labels: Vec<(&str, &str)> = series[0]
        .labels
        .iter()
        .map(|l| (l.name.as_str(), l.value.as_str()))
        .collect();
    assert_eq!(labels, vec![("__name__", "dwcp:lat:p95"), ("agg", "p95")]);
    let values: Vec<(f64, i64)> = series[0].samples.iter().map(|s| (s.value, s.timestamp)).collect();
    assert_eq!(values, vec![(2.0, 1000), (3.0, 2000)]);
}

#[test]
fn an_invalid_relabeling_step_is_a_startup_error_naming_it() {
    let steps: Vec<RelabelConfig> = serde_yaml::from_str(
        "- {source_labels: [a], action: keep}\n- {source_labels: [a], action: hashmod, target_label: b}\n",
    )
    .expect("yaml");
    let err = RemoteWriteSink::start(
        RemoteWriteConfig {
            write_relabel_configs: steps,
            ..RemoteWriteConfig::new("http://127.0.0.1:9/api/v1/write")
        },
        RemoteWriteStats::default(),
    )
    .expect_err("invalid");
    assert_eq!(
        err.to_string(),
        "write_relabel_configs[1].modulus: hashmod needs a modulus of at least 1"
    );
}

/// Keep and drop steps alone run in the shards: the same result, counted, every ack released,
/// including a batch all of whose samples are dropped (no request for it).
#[tokio::test]
async fn filter_only_relabeling_runs_in_the_shards() {
    let (r, url) = receiver(vec![]).await;
    let stats = RemoteWriteStats::default();
    let steps: Vec<RelabelConfig> = serde_yaml::from_str(
        "- {source_labels: [__name__], regex: 'dwcp:.*', action: keep}\n- {source_labels: [region], regex: b, action: drop}\n",
    )
    .expect("yaml");
    let sink = RemoteWriteSink::start(
        RemoteWriteConfig {
            shards: 2,
            write_relabel_configs: steps,
            ..config(&url)
        },
        stats.clone(),
    )
    .expect("start");
    let acks = Arc::new(Acks::default());
    let (a1, a2) = (Ack::new(1, acks.clone()), Ack::new(2, acks.clone()));
    sink.send(
        vec![
            sample("dwcp:lat:p95", "a", 2.0, 1000),
            sample("dwcp:lat:p95", "b", 3.0, 1000),
            sample("up", "a", 1.0, 1000),
        ],
        Some(&a1),
    )
    .await;
    sink.send(
        vec![sample("up", "a", 1.0, 2000), sample("up", "b", 1.0, 2000)],
        Some(&a2),
    )
    .await;
    drop((a1, a2));
    sink.close().await;
    let mut done = acks.0.lock().expect("lock").clone();
    done.sort_unstable();
    assert_eq!(done, vec![1, 2]);
    assert_eq!(stats.samples_relabel_dropped.get(), 4);
    assert_eq!(stats.samples_sent.get(), 1);
    let seen = r.seen.lock().expect("lock");
    let series: Vec<_> = seen.iter().flat_map(|(_, _, req)| req.timeseries.clone()).collect();
    assert_eq!(series.len(), 1, "{series:?}");
    let labels: Vec<(&str, &str)> = series[0]
        .labels
        .iter()
        .map(|l| (l.name.as_str(), l.value.as_str()))
        .collect();
    assert_eq!(labels, vec![("__name__", "dwcp:lat:p95"), ("region", "a")]);
}
