use std::collections::{BTreeMap, HashSet};

use super::*;

fn provisioned_uids() -> HashSet<String> {
    let v: serde_yaml::Value = serde_yaml::from_str(&datasources_yaml()).expect("yaml");
    v["datasources"]
        .as_sequence()
        .expect("list")
        .iter()
        .map(|d| d["uid"].as_str().expect("uid").to_string())
        .collect()
}

/// Every `datasource.uid` anywhere in a JSON value.
fn datasource_uids(v: &Value, out: &mut Vec<String>) {
    match v {
        Value::Object(m) => {
            for (k, x) in m {
                if k == "datasource" {
                    if let Some(uid) = x["uid"].as_str() {
                        out.push(uid.to_string());
                    } else if let Some(uid) = x.as_str() {
                        out.push(uid.to_string());
                    }
                }
                datasource_uids(x, out);
            }
        }
        Value::Array(a) => a.iter().for_each(|x| datasource_uids(x, out)),
        _ => {}
    }
}

#[test]
fn dashboards_pass_the_structural_check() {
    let boards = boards();
    assert_eq!(check(&boards), Ok(()));
    let uids = provisioned_uids();
    assert_eq!(
        uids,
        [PROMETHEUS, WORKER, ELASTICSEARCH, JAEGER, ALERTMANAGER]
            .iter()
            .map(|s| (*s).to_string())
            .collect()
    );
    let titles: Vec<&str> = boards.iter().map(|b| b.title).collect();
    assert_eq!(
        titles,
        [
            "DWCP Global Overview",
            "DWCP Regional",
            "DWCP Protocol",
            "DWCP Load Balancer",
            "DWCP SLAs and error budgets",
            "DWCP Anomalies and alerts",
            "DWCP Traces"
        ]
    );
    let mut board_uids = HashSet::new();
    for b in &boards {
        let d = render(b);
        assert!(board_uids.insert(d["uid"].as_str().expect("uid").to_string()));
        assert_eq!(d["schemaVersion"], SCHEMA_VERSION);
        let panels = d["panels"].as_array().expect("panels");
        assert!(!panels.is_empty());
        let ids: HashSet<u64> = panels.iter().map(|p| p["id"].as_u64().expect("id")).collect();
        assert_eq!(ids.len(), panels.len(), "{}: panel ids not unique", b.uid);
        for p in panels {
            let g = &p["gridPos"];
            let (x, w) = (g["x"].as_u64().expect("x"), g["w"].as_u64().expect("w"));
            assert!(x + w <= 24, "{}: {} outside the grid", b.uid, p["title"]);
            assert!(!p["targets"].as_array().expect("targets").is_empty());
        }
        let mut used = Vec::new();
        datasource_uids(&d, &mut used);
        for u in used {
            assert!(
                u == "-- Grafana --" || uids.contains(&u),
                "{}: datasource {u} is not provisioned",
                b.uid
            );
        }
    }
    // The regional board's variable lists regions from the catalog's request counter.
    let regional = render(&boards[1]);
    assert_eq!(
        regional["templating"]["list"][0]["query"]["query"],
        "label_values(dwcp_requests_total, region)"
    );
}

#[test]
fn a_series_outside_the_catalog_fails_generation() {
    let mut b = boards();
    b[0].panels
        .push(panel("typo", "stat", "none", vec![prom("dwcp_request_total", "")]));
    assert_eq!(
        check(&b),
        Err("dwcp-global: typo: series dwcp_request_total is not in the catalog".into())
    );
    assert!(catalog::family("dwcp_latency_milliseconds_bucket").is_some());
    assert!(catalog::family("dwcp_requests_total_bucket").is_none());
}

#[test]
fn the_committed_files_are_the_generated_ones() {
    let dir = tempfile::tempdir().expect("tmp");
    let files = export(dir.path()).expect("export");
    let repo = Path::new(env!("CARGO_MANIFEST_DIR")).join("../deploy/grafana");
    for f in files {
        let rel = f.strip_prefix(dir.path()).expect("under dir");
        let committed = std::fs::read_to_string(repo.join(rel)).unwrap_or_default();
        let generated = std::fs::read_to_string(&f).expect("read");
        assert!(
            committed == generated,
            "deploy/grafana/{} differs from the generated file: run `dwcp-monitor grafana export deploy/grafana`",
            rel.display()
        );
    }
}

#[test]
fn annotation_bodies() {
    use dwcp_operators::alerts::{fingerprint, AlertState, AlertTransition};
    let labels: BTreeMap<String, String> = dwcp_operators::alerts::label_set(&[
        ("alertname", "HighLatency"),
        ("region", "us-east-1"),
        ("severity", "warning"),
    ]);
    let a = AlertTransition {
        fingerprint: fingerprint(&labels),
        state: AlertState::Firing,
        labels,
        annotations: [("summary".to_string(), "High DWCP latency in us-east-1".to_string())].into(),
        value: 412.5,
        active_since: Some(1_700_000_000_000_000_000),
        event_time: 1_700_000_300_000_000_000,
        group: "dwcp".into(),
        expr: "x > 100".into(),
    };
    assert_eq!(
        client::alert_annotation(&a),
        json!({
            "time": 1_700_000_000_000u64,
            "tags": ["dwcp", "alert", "HighLatency", "region:us-east-1", "severity:warning"],
            "text": "HighLatency firing: High DWCP latency in us-east-1 (value 412.5)",
        })
    );
}
