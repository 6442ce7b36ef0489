//! Differential test of the rule engine against Prometheus's own: the same rules over the same
//! input series, evaluated by our engine at every evaluation step, written out as a promtool
//! unit-test file whose expectations are our alerts (labels, annotations with `$value`) and our
//! recorded values; `promtool test rules` (Prometheus 2.42, Debian's package) must pass it, and
//! so must `dwcp-monitor test-rules`. Any difference in an alert's labels, value, or the time it
//! fires or resolves fails promtool.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::process::Command;

use dwcp_operators::alerts::AlertState;
use dwcp_operators::promql::{self, Value};
use dwcp_operators::rules::{self, RuleEngine, RuleOutput};
use dwcp_pipeline::test_rules::{expand_values, parse_series};

const RULES: &str = r#"
groups:
  - name: dwcp
    interval: 1m
    rules:
      - record: dwcp:latency:p95:5m
        expr: histogram_quantile(0.95, sum by (region, le) (rate(dwcp_latency_milliseconds_bucket[5m])))
      - alert: HighLatency
        expr: dwcp:latency:p95:5m > 100
        for: 3m
        labels:
          severity: warning
        annotations:
          summary: "High DWCP latency in {{ $labels.region }}"
          description: "p95 is {{ $value }} ms"
      - alert: ErrorsBurst
        expr: sum by (region) (increase(dwcp_errors_total[5m])) / sum by (region) (increase(dwcp_requests_total[5m])) > 0.05
        for: 2m
        labels:
          severity: critical
        annotations:
          summary: "{{ $labels.region }} error ratio {{ humanizePercentage $value }}"
      - alert: RegionSilent
        expr: absent(dwcp_requests_total{region="eu-west-1"})
        for: 1m
        labels:
          severity: critical
"#;

/// Input series: two regions' latency buckets (us-east-1 slows from 10m to 20m), request and
/// error counters (eu-west-1 fails 10 % from 12m to 18m, its counter resets at 25m and stops
/// at 30m).
fn input() -> Vec<(String, String)> {
    let mut s = Vec::new();
    for (region, slow) in [("us-east-1", true), ("us-west-1", false)] {
        // 100 requests a minute; in the slow phase 40 of them above 250 ms.
        let (mut b50, mut b250, mut inf) = (String::new(), String::new(), String::new());
        let (mut c50, mut c250, mut cinf) = (0.0, 0.0, 0.0);
        for m in 0..=40 {
            let slow_now = slow && (10..20).contains(&m);
            if m > 0 {
                c50 += if slow_now { 50.0 } else { 97.0 };
                c250 += if slow_now { 60.0 } else { 100.0 };
                cinf += 100.0;
            }
            write!(b50, "{c50} ").ok();
            write!(b250, "{c250} ").ok();
            write!(inf, "{cinf} ").ok();
        }
        for (le, v) in [("50", b50), ("250", b250), ("+Inf", inf)] {
            s.push((
                format!(r#"dwcp_latency_milliseconds_bucket{{region="{region}", le="{le}"}}"#),
                v,
            ));
        }
    }
    let (mut req, mut err) = (String::new(), String::new());
    let (mut r, mut e) = (0.0, 0.0);
    for m in 0..30 {
        if m == 25 {
            r = 0.0;
            e = 0.0;
        } else if m > 0 {
            r += 200.0;
            if (12..18).contains(&m) {
                e += 20.0;
            }
        }
        write!(req, "{r} ").ok();
        write!(err, "{e} ").ok();
    }
    s.push((r#"dwcp_requests_total{region="eu-west-1"}"#.into(), req));
    s.push((r#"dwcp_errors_total{region="eu-west-1"}"#.into(), err));
    s
}

fn yaml_str(s: &str) -> String {
    serde_json::to_string(s).unwrap_or_default()
}

#[test]
fn promtool_agrees_with_our_alerts_and_recorded_values_at_every_step() {
    if Command::new("promtool").arg("--version").output().is_err() {
        eprintln!("skipped: promtool not installed (deploy/local/stack.sh install)");
        return;
    }
    let dir = tempfile::tempdir().expect("tempdir");
    std::fs::write(dir.path().join("rules.yml"), RULES).expect("rules");
    let groups = rules::load(RULES, "rules.yml", 60_000).expect("rules load");
    let mut engine = RuleEngine::new(groups, 10_000);
    // promtool here is Prometheus 2.42: range selectors include their left end.
    engine.prometheus2 = true;
    let series = input();
    let mut samples = Vec::new();
    for (desc, values) in &series {
        let labels = parse_series(desc).expect("series");
        let l: Vec<dwcp_operators::prom::Label> = labels
            .iter()
            .map(|(k, v)| (std::sync::Arc::from(k.as_str()), std::sync::Arc::from(v.as_str())))
            .collect();
        for (k, v) in expand_values(values).expect("values").into_iter().enumerate() {
            if let Some(v) = v {
                samples.push(dwcp_operators::prom::Sample::new(l.clone(), v, k as i64 * 60_000));
            }
        }
    }
    samples.sort_by_key(|s| s.timestamp_ms);
    engine.process(&samples);

    let mut test =
        String::from("rule_files: [rules.yml]\nevaluation_interval: 1m\ntests:\n  - interval: 1m\n    input_series:\n");
    for (desc, values) in &series {
        writeln!(
            test,
            "      - series: {}\n        values: {}",
            yaml_str(desc),
            yaml_str(values.trim())
        )
        .ok();
    }
    let mut alerts_part = String::from("    alert_rule_test:\n");
    let mut expr_part = String::from("    promql_expr_test:\n");
    let mut out = RuleOutput::default();
    let (mut firing_seen, mut resolved_seen) = (0, 0);
    for m in 0..=40u64 {
        engine.on_watermark(m * 60_000_000_000, &mut out);
        let active = engine.active_alerts();
        for name in ["HighLatency", "ErrorsBurst", "RegionSilent"] {
            let firing: Vec<_> = active
                .iter()
                .filter(|a| a.state == AlertState::Firing && a.alertname() == name)
                .collect();
            writeln!(alerts_part, "      - eval_time: {m}m\n        alertname: {name}").ok();
            if firing.is_empty() {
                writeln!(alerts_part, "        exp_alerts: []").ok();
                continue;
            }
            firing_seen += 1;
            writeln!(alerts_part, "        exp_alerts:").ok();
            for a in firing {
                let labels: BTreeMap<&String, &String> =
                    a.labels.iter().filter(|(k, _)| k.as_str() != "alertname").collect();
                writeln!(
                    alerts_part,
                    "          - exp_labels: {}",
                    serde_json::to_string(&labels).unwrap_or_default()
                )
                .ok();
                writeln!(
                    alerts_part,
                    "            exp_annotations: {}",
                    serde_json::to_string(&a.annotations).unwrap_or_default()
                )
                .ok();
            }
        }
        // The recorded series at this step, as our store holds it.
        let e = promql::parse("dwcp:latency:p95:5m").expect("expr");
        if let Ok(Value::Vector(v)) = engine
            .store()
            .engine(true)
            .instant(&e, i64::try_from(m).unwrap_or(0) * 60_000)
        {
            writeln!(
                expr_part,
                "      - expr: dwcp:latency:p95:5m\n        eval_time: {m}m\n        exp_samples:"
            )
            .ok();
            if v.is_empty() {
                expr_part.truncate(expr_part.trim_end_matches("        exp_samples:\n").len());
                writeln!(expr_part, "        exp_samples: []").ok();
            }
            for el in v {
                let labels: Vec<String> = el
                    .labels
                    .iter()
                    .filter(|(k, _)| k.as_str() != "__name__")
                    .map(|(k, v)| format!("{k}=\"{v}\""))
                    .collect();
                writeln!(
                    expr_part,
                    "          - labels: {}\n            value: {:e}",
                    yaml_str(&format!("dwcp:latency:p95:5m{{{}}}", labels.join(","))),
                    el.value
                )
                .ok();
            }
        }
    }
    resolved_seen += out.alerts.iter().filter(|a| a.state == AlertState::Resolved).count();
    assert!(
        firing_seen >= 10,
        "the scenario fires alerts ({firing_seen} firing checks)"
    );
    assert!(resolved_seen >= 2, "and resolves them: {:?}", out.alerts);
    assert!(out.errors.is_empty(), "{:?}", out.errors);
    test.push_str(&alerts_part);
    test.push_str(&expr_part);
    let test_file = dir.path().join("test.yml");
    std::fs::write(&test_file, &test).expect("test file");

    let prom = Command::new("promtool")
        .arg("test")
        .arg("rules")
        .arg(&test_file)
        .output()
        .expect("promtool");
    assert!(
        prom.status.success(),
        "promtool disagrees:\n{}\n{}\ntest file:\n{test}",
        String::from_utf8_lossy(&prom.stdout),
        String::from_utf8_lossy(&prom.stderr)
    );
    let ours = Command::new(env!("CARGO_BIN_EXE_dwcp-monitor"))
        .arg("test-rules")
        .arg("--prometheus-version")
        .arg("2")
        .arg(&test_file)
        .output()
        .expect("dwcp-monitor");
    assert!(
        ours.status.success(),
        "dwcp-monitor test-rules fails its own expectations:\n{}",
        String::from_utf8_lossy(&ours.stdout)
    );
    assert!(String::from_utf8_lossy(&ours.stdout).contains("SUCCESS"));
}
