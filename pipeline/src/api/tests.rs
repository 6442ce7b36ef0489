use super::*;
use dwcp_operators::prom::{labels_of, Sample};
use dwcp_operators::rules::SeriesStore;

fn sample(pairs: &[(&str, &str)], v: f64, t: i64) -> Sample {
    let mut l = labels_of(pairs.iter().copied());
    l.sort();
    Sample::new(l, v, t)
}

fn params(pairs: &[(&str, &str)]) -> Params {
    pairs
        .iter()
        .map(|(k, v)| ((*k).to_string(), (*v).to_string()))
        .collect()
}

/// Two regions' request counters, one sample every 15 s for 10 minutes: a grows by 3/s, b by 1/s.
fn store() -> SeriesStore {
    let mut s = SeriesStore::new(1000);
    for i in 0..=40i64 {
        let t = 1_700_000_000_000 + i * 15_000;
        #[allow(clippy::cast_precision_loss)]
        let x = (i * 15) as f64;
        s.append(&sample(&[("__name__", "req_total"), ("region", "a")], 3.0 * x, t));
        s.append(&sample(&[("__name__", "req_total"), ("region", "b")], x, t));
    }
    s
}

#[test]
fn instant_query_in_prometheus_shape() {
    let st = store();
    let p = params(&[
        ("query", "sum by (region) (irate(req_total[1m]))"),
        ("time", "1700000600"),
    ]);
    let v = prom::instant(&st, false, &p, 0).expect("query");
    let mut result = v["data"]["result"].as_array().expect("vector").clone();
    result.sort_by_key(|r| r["metric"]["region"].as_str().unwrap_or("").to_string());
    assert_eq!(v["status"], "success");
    assert_eq!(v["data"]["resultType"], "vector");
    assert_eq!(
        serde_json::Value::Array(result),
        json!([
            {"metric": {"region": "a"}, "value": [1_700_000_600, "3"]},
            {"metric": {"region": "b"}, "value": [1_700_000_600, "1"]},
        ])
    );
    // Scalars, and a fractional time in RFC 3339.
    let v = prom::instant(
        &st,
        false,
        &params(&[("query", "1/4"), ("time", "2023-11-14T22:13:20.5Z")]),
        0,
    )
    .expect("scalar");
    assert_eq!(
        v["data"],
        json!({"resultType": "scalar", "result": [1_700_000_000.5, "0.25"]})
    );
}

#[test]
fn range_query_is_a_sorted_matrix_without_names() {
    let st = store();
    let p = params(&[
        ("query", "irate(req_total[1m])"),
        ("start", "1700000540"),
        ("end", "1700000600"),
        ("step", "30s"),
    ]);
    let v = prom::range(&st, false, &p).expect("range");
    assert_eq!(
        v["data"],
        json!({"resultType": "matrix", "result": [
            {"metric": {"region": "a"}, "values": [[1_700_000_540, "3"], [1_700_000_570, "3"], [1_700_000_600, "3"]]},
            {"metric": {"region": "b"}, "values": [[1_700_000_540, "1"], [1_700_000_570, "1"], [1_700_000_600, "1"]]},
        ]})
    );
}

#[test]
fn bad_parameters_are_prometheus_errors() {
    let st = store();
    let e = prom::instant(&st, false, &params(&[("query", "sum(")]), 0).expect_err("parse error");
    assert_eq!((e.status, e.kind), (400, "bad_data"));
    assert!(e.message.starts_with("invalid parameter \"query\": "), "{}", e.message);
    let e = prom::instant(&st, false, &params(&[("query", "1"), ("time", "soon")]), 0).expect_err("time");
    assert_eq!(
        e.message,
        "invalid parameter \"time\": cannot parse \"soon\" to a valid timestamp"
    );
    let e = prom::range(
        &st,
        false,
        &params(&[("query", "1"), ("start", "0"), ("end", "100000"), ("step", "1")]),
    )
    .expect_err("too many points");
    assert!(
        e.message.starts_with("exceeded maximum resolution of 11,000 points"),
        "{}",
        e.message
    );
    let e = prom::instant(&st, false, &params(&[("query", "sin(req_total)")]), 0).expect_err("unsupported");
    assert_eq!(e.message, "invalid parameter \"query\": unsupported function sin");
    let e = prom::series(&st, &params(&[])).expect_err("no match");
    assert_eq!(e.message, "no match[] parameter provided");
}

#[test]
fn series_labels_and_values() {
    let st = store();
    let v = prom::series(&st, &params(&[("match[]", "req_total{region=~\"a|c\"}")])).expect("series");
    assert_eq!(v["data"], json!([{"__name__": "req_total", "region": "a"}]));
    let v = prom::labels(&st, &params(&[])).expect("labels");
    assert_eq!(v["data"], json!(["__name__", "region"]));
    let v = prom::label_values(&st, "region", &params(&[("match[]", "req_total")])).expect("values");
    assert_eq!(v["data"], json!(["a", "b"]));
    // A time range before any sample selects nothing.
    let v = prom::label_values(&st, "region", &params(&[("end", "1600000000")])).expect("values");
    assert_eq!(v["data"], json!([]));
}

#[test]
fn values_and_times_are_written_as_prometheus_writes_them() {
    assert_eq!(prom::format_value(f64::INFINITY), "+Inf");
    assert_eq!(prom::format_value(f64::NEG_INFINITY), "-Inf");
    assert_eq!(prom::format_value(f64::NAN), "NaN");
    assert_eq!(prom::format_value(0.1), "0.1");
    assert_eq!(prom::format_value(1e21), "1000000000000000000000");
    assert_eq!(prom::format_time(1_500), json!(1.5));
    assert_eq!(prom::format_time(2_000), json!(2));
    assert_eq!(prom::parse_step("step", "1m30s"), Ok(90_000));
    assert_eq!(prom::parse_step("step", "0.5"), Ok(500));
}

fn keys() -> Vec<ApiKey> {
    vec![
        ApiKey {
            name: "grafana".into(),
            key: "k-metrics-0123456789".into(),
            scopes: vec![Scope::Metrics],
        },
        ApiKey {
            name: "ops".into(),
            key: "k-admin-0123456789".into(),
            scopes: vec![Scope::Admin],
        },
    ]
}

fn headers(pairs: &[(&'static str, &str)]) -> HeaderMap {
    let mut h = HeaderMap::new();
    for (k, v) in pairs {
        h.insert(*k, HeaderValue::from_str(v).expect("header"));
    }
    h
}

#[test]
fn keys_and_scopes() {
    let k = keys();
    assert_eq!(authorize(&[], &HeaderMap::new(), Scope::Traces), Ok(()));
    let e = authorize(&k, &HeaderMap::new(), Scope::Metrics).expect_err("no key");
    assert_eq!((e.status, e.kind), (401, "unauthorized"));
    let e = authorize(&k, &headers(&[("authorization", "Bearer nope")]), Scope::Metrics).expect_err("unknown");
    assert_eq!((e.status, e.message.as_str()), (401, "unknown API key"));
    let bearer = headers(&[("authorization", "Bearer k-metrics-0123456789")]);
    assert_eq!(authorize(&k, &bearer, Scope::Metrics), Ok(()));
    let e = authorize(&k, &bearer, Scope::Traces).expect_err("scope");
    assert_eq!(
        (e.status, e.kind, e.message.as_str()),
        (403, "forbidden", "API key `grafana` lacks the `traces` scope")
    );
    let admin = headers(&[("x-api-key", "k-admin-0123456789")]);
    assert_eq!(authorize(&k, &admin, Scope::Traces), Ok(()));
    // The secret never shows in debug output.
    assert!(!format!("{k:?}").contains("0123456789"));
}

#[test]
fn every_route_has_a_handler_and_is_in_the_document() {
    let doc = openapi();
    for r in ROUTES {
        assert!(handler(r.path).is_some(), "{} has no handler", r.path);
        let item = &doc["paths"][r.path];
        assert!(item["get"].is_object(), "{} missing from the document", r.path);
        assert_eq!(item["post"].is_object(), r.post, "{}", r.path);
        if let Some(s) = r.scope {
            assert_eq!(item["get"]["x-scope"], s.as_str());
        }
    }
    assert_eq!(doc["paths"].as_object().map(serde_json::Map::len), Some(ROUTES.len()));
    assert_eq!(doc["openapi"], "3.1.0");
}

#[test]
fn alerts_filter_by_state_and_severity() {
    use dwcp_operators::alerts::{fingerprint, AlertState};
    let mk = |name: &str, severity: &str, state: AlertState| {
        let labels: std::collections::BTreeMap<String, String> =
            dwcp_operators::alerts::label_set(&[("alertname", name), ("severity", severity)]);
        AlertTransition {
            fingerprint: fingerprint(&labels),
            state,
            labels,
            annotations: std::collections::BTreeMap::new(),
            value: 2.5,
            active_since: Some(1_700_000_000_000_000_000),
            event_time: 1_700_000_060_000_000_000,
            group: "g".into(),
            expr: "x > 1".into(),
        }
    };
    let a = vec![
        mk("HighLatency", "warning", AlertState::Firing),
        mk("Down", "critical", AlertState::Pending),
    ];
    let v = alerts_body(&a, &params(&[("state", "firing")]));
    assert_eq!(v["alerts"].as_array().map(Vec::len), Some(1));
    assert_eq!(v["alerts"][0]["labels"]["alertname"], "HighLatency");
    assert_eq!(v["alerts"][0]["activeAt"], "2023-11-14T22:13:20.000Z");
    assert_eq!(v["alerts"][0]["value"], "2.5");
    let v = alerts_body(&a, &params(&[("severity", "critical")]));
    assert_eq!(v["alerts"][0]["state"], "pending");
}

/// 36 hours of 10-second rollups for two regions and global; value at window k: a = k % 100,
/// b = 2 (k % 50), global = their sum.
fn day_of_rollups(history: &sql::History) -> (i64, Vec<(i64, f64, f64)>) {
    let start = 1_700_000_000_000i64;
    let windows = 36 * 360;
    let mut rows = Vec::new();
    for k in 0..=windows {
        let t = start + k * 10_000;
        #[allow(clippy::cast_precision_loss)]
        let (a, b) = ((k % 100) as f64, 2.0 * (k % 50) as f64);
        rows.push((t, a, b));
        let batch: Vec<Sample> = [("a", a), ("b", b), ("global", a + b)]
            .iter()
            .map(|(r, v)| {
                sample(
                    &[("__name__", "dwcp:latency:p95:10s"), ("region", r), ("job", "dwcp/gw")],
                    *v,
                    t,
                )
            })
            .collect();
        history.rollups(&batch);
    }
    (start + windows * 10_000, rows)
}

#[tokio::test]
async fn sql_over_a_day_of_rollups() {
    let history = sql::History::new(86_400_000, 10_000_000, 10_000);
    let (end, rows) = day_of_rollups(&history);
    history.trim();
    // Independently: the rows inside the last 24 hours (both ends included).
    let kept: Vec<&(i64, f64, f64)> = rows.iter().filter(|(t, _, _)| *t >= end - 86_400_000).collect();
    assert_eq!(kept.len(), 8641);
    #[allow(clippy::cast_precision_loss)]
    let mean = |f: &dyn Fn(&(i64, f64, f64)) -> f64| kept.iter().map(|r| f(r)).sum::<f64>() / kept.len() as f64;
    let max = |f: &dyn Fn(&(i64, f64, f64)) -> f64| kept.iter().map(|r| f(r)).fold(f64::MIN, f64::max);
    let v = history
        .query(
            "SELECT region, count(*) AS n, avg(value) AS mean, max(value) AS peak, min(time) AS first \
             FROM rollups WHERE metric = 'dwcp:latency:p95:10s' GROUP BY region ORDER BY region",
        )
        .await
        .expect("query");
    let first = chrono::DateTime::from_timestamp_millis(end - 86_400_000)
        .expect("time")
        .to_rfc3339_opts(chrono::SecondsFormat::Secs, true);
    assert_eq!(
        v["data"]["rows"],
        json!([
            ["a", 8641, mean(&|r| r.1), max(&|r| r.1), first],
            ["b", 8641, mean(&|r| r.2), max(&|r| r.2), first],
            ["global", 8641, mean(&|r| r.1 + r.2), max(&|r| r.1 + r.2), first],
        ])
    );
    assert_eq!(v["data"]["columns"][1], json!({"name": "n", "type": "Int64"}));
    assert_eq!(v["data"]["truncated"], false);
    // The other labels are kept as JSON.
    let v = history
        .query("SELECT DISTINCT labels FROM rollups")
        .await
        .expect("labels");
    assert_eq!(v["data"]["rows"], json!([["{\"job\":\"dwcp/gw\"}"]]));
    assert!(
        history.stats().aged_out > 0,
        "whole batches older than a day were dropped"
    );
}

#[tokio::test]
async fn sql_refuses_statements_and_bad_queries_and_truncates() {
    let history = sql::History::new(86_400_000, 10_000_000, 5);
    day_of_rollups(&history);
    for q in [
        "CREATE TABLE x AS SELECT 1",
        "INSERT INTO rollups SELECT * FROM rollups",
        "SET datafusion.execution.batch_size = 1",
    ] {
        let e = history.query(q).await.expect_err(q);
        assert_eq!((e.status, e.kind), (400, "bad_data"), "{q}: {}", e.message);
    }
    let e = history
        .query("SELECT nope FROM rollups")
        .await
        .expect_err("unknown column");
    assert!(e.message.contains("nope"), "{}", e.message);
    let v = history.query("SELECT value FROM rollups").await.expect("rows");
    assert_eq!(v["data"]["rows"].as_array().map(Vec::len), Some(5));
    assert_eq!(v["data"]["truncated"], true);
}

#[tokio::test]
async fn sql_over_alerts_sla_and_health() {
    use dwcp_operators::alerts::{fingerprint, AlertState};
    let history = sql::History::new(86_400_000, 10_000_000, 100);
    let labels: std::collections::BTreeMap<String, String> = dwcp_operators::alerts::label_set(&[
        ("alertname", "HighLatency"),
        ("region", "us-east-1"),
        ("severity", "warning"),
    ]);
    let t = |state, s: u64| AlertTransition {
        fingerprint: fingerprint(&labels),
        state,
        labels: labels.clone(),
        annotations: std::collections::BTreeMap::new(),
        value: 150.0,
        active_since: Some(1_700_000_000_000_000_000),
        event_time: s * 1_000_000_000,
        group: "dwcp".into(),
        expr: "x".into(),
    };
    history.alerts(&[
        t(AlertState::Pending, 1_700_000_000),
        t(AlertState::Firing, 1_700_000_300),
        t(AlertState::Resolved, 1_700_000_900),
    ]);
    let v = history
        .query(
            "SELECT state, region, severity, CAST(time AS BIGINT) - CAST(active_since AS BIGINT) AS since_ms \
             FROM alerts WHERE alertname = 'HighLatency' ORDER BY time",
        )
        .await
        .expect("alerts");
    assert_eq!(
        v["data"]["rows"],
        json!([
            ["pending", "us-east-1", "warning", 0],
            ["firing", "us-east-1", "warning", 300_000],
            ["resolved", "us-east-1", "warning", 900_000],
        ])
    );
    let v = history.query("SELECT count(*) FROM sla").await.expect("sla");
    assert_eq!(v["data"]["rows"], json!([[0]]));
}

#[test]
fn the_readme_lists_every_route_and_table() {
    let readme = std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/../README.md")).expect("README");
    for r in ROUTES {
        let shown = r.path.replace("{name}", "<name>").replace("{id}", "<id>");
        assert!(readme.contains(&shown), "README does not list {shown}");
    }
    for (table, columns) in sql::TABLES {
        assert!(
            readme.contains(&format!("| `{table}` |")),
            "README does not list table {table}"
        );
        for (c, _) in *columns {
            assert!(
                readme.contains(&format!("`{c}`")),
                "README does not list column {table}.{c}"
            );
        }
    }
}

#[test]
fn extreme_times_and_steps_answer_quickly_and_do_not_overflow() {
    let st = store();
    let v = prom::range(
        &st,
        false,
        &params(&[
            ("query", "sum(req_total)"),
            ("start", "-1e300"),
            ("end", "1e300"),
            ("step", "1e300"),
        ]),
    )
    .expect("one step at the clamped start");
    assert_eq!(v["data"]["result"], json!([]));
    let v = prom::instant(&st, false, &params(&[("query", "time()"), ("time", "1e300")]), 0).expect("instant");
    assert_eq!(v["data"]["resultType"], "scalar");
    let e = prom::range(
        &st,
        false,
        &params(&[("query", "1"), ("start", "-1e300"), ("end", "1e300"), ("step", "1")]),
    )
    .expect_err("too many points");
    assert_eq!(e.status, 400);
}

#[test]
fn huge_offsets_and_ranges_do_not_overflow() {
    let st = store();
    for q in [
        "req_total offset 290000000y",
        "rate(req_total[290000000y])",
        "max_over_time(req_total[290000000y:290000000y])",
        "req_total offset -290000000y",
    ] {
        let r = prom::instant(&st, false, &params(&[("query", q), ("time", "1e300")]), 0);
        assert!(r.is_ok(), "{q}: {r:?}");
    }
}
