use super::*;
use crate::prom::labels_of;

fn gauge(name: &str, labels: &[(&str, &str)], value: f64, t_ms: i64) -> Sample {
    Sample::new(
        labels_of(std::iter::once(("__name__", name)).chain(labels.iter().copied())),
        value,
        t_ms,
    )
}

const RULES: &str = r#"
groups:
  - name: test
    interval: 1m
    rules:
      - record: job:x:max
        expr: max by (job) (x)
      - alert: XHigh
        expr: job:x:max > 10
        for: 2m
        keep_firing_for: 1m
        labels:
          severity: warning
          team: "{{ $labels.job }}-oncall"
        annotations:
          summary: "x of {{ $labels.job }} is {{ $value }} ({{ humanize $value }})"
"#;

#[test]
fn load_errors_name_the_file_line_group_and_rule() {
    let bad = RULES.replace("max by (job) (x)", "max by (job) (foo(x))");
    let e = load(&bad, "r.yml", 60_000).expect_err("bad expr");
    assert!(
        e.starts_with("r.yml:6: group \"test\", rule 1 (job:x:max): expr:"),
        "{e}"
    );
    let bad = RULES.replace("{{ $labels.job }}-oncall", "{{ range . }}");
    let e = load(&bad, "r.yml", 60_000).expect_err("bad template");
    assert!(
        e.contains("rule 2 (XHigh): labels.team: unsupported template construct"),
        "{e}"
    );
    let e = load(
        "groups:\n  - name: g\n    rules:\n      - alert: A\n        exprr: x\n",
        "r.yml",
        60_000,
    )
    .expect_err("field");
    assert!(e.starts_with("r.yml:5:"), "{e}");
    let e = load(&RULES.replace("for: 2m", "for: soon"), "r.yml", 60_000).expect_err("for");
    assert!(e.contains("rule 2 (XHigh): for: \"soon\" is not a duration"), "{e}");
}

#[test]
fn pending_firing_keep_firing_and_resolved_on_event_time() {
    let groups = load(RULES, "r.yml", 60_000).expect("rules");
    let mut e = RuleEngine::new(groups, 10_000);
    let mut out = RuleOutput::default();
    // x{job="api"} every 15 s for 12 minutes: 20 from 2m to 8m inclusive, else 5.
    for step in 0..=48 {
        let t = step * 15_000;
        let v = if (120_000..=480_000).contains(&t) { 20.0 } else { 5.0 };
        e.process(&[gauge("x", &[("job", "api"), ("instance", "1")], v, t)]);
        #[allow(clippy::cast_sign_loss)]
        e.on_watermark(t as u64 * 1_000_000, &mut out);
    }
    let seen: Vec<(AlertState, u64)> = out
        .alerts
        .iter()
        .map(|a| (a.state, a.event_time / 1_000_000_000))
        .collect();
    // Pending at 2m; firing 2m later at 4m; the condition clears at 9m, keep_firing_for 1m
    // holds it through 9m, resolved at 10m.
    assert_eq!(
        seen,
        vec![
            (AlertState::Pending, 120),
            (AlertState::Firing, 240),
            (AlertState::Resolved, 600)
        ]
    );
    let fired = &out.alerts[1];
    assert_eq!(fired.labels["team"], "api-oncall");
    assert_eq!(fired.labels["severity"], "warning");
    assert_eq!(fired.labels["alertname"], "XHigh");
    assert_eq!(fired.annotations["summary"], "x of api is 20 (20)");
    assert_eq!(fired.active_since, Some(120_000_000_000));
    assert_eq!(fired.fingerprint, crate::alerts::fingerprint(&fired.labels));
    // The recording rule's series were stored and returned: one per evaluation, 0m to 12m.
    let recorded: Vec<&Sample> = out.samples.iter().filter(|s| s.name() == "job:x:max").collect();
    assert_eq!(recorded.len(), 13);
    assert_eq!(recorded[4].value, 20.0);
    // ALERTS while pending (2m, 3m) and firing (4m to 9m).
    let alerts_series: Vec<(&str, i64)> = out
        .samples
        .iter()
        .filter(|s| s.name() == "ALERTS")
        .map(|s| (s.label("alertstate").unwrap_or(""), s.timestamp_ms / 1000))
        .collect();
    assert_eq!(alerts_series.len(), 8, "{alerts_series:?}");
    assert_eq!(alerts_series[0], ("pending", 120));
    assert_eq!(alerts_series[2], ("firing", 240));
    assert!(out.errors.is_empty(), "{:?}", out.errors);
}

#[test]
fn a_pending_alert_that_clears_goes_inactive_without_firing() {
    let groups = load(
        "groups:\n  - name: g\n    interval: 30s\n    rules:\n      - alert: Blip\n        expr: y > 1\n        for: 5m\n",
        "r.yml",
        60_000,
    )
    .expect("rules");
    let mut e = RuleEngine::new(groups, 100);
    let mut out = RuleOutput::default();
    for (t, v) in [(0, 2.0), (30_000, 2.0), (60_000, 0.0), (90_000, 0.0)] {
        e.process(&[gauge("y", &[], v, t)]);
        e.on_watermark(t as u64 * 1_000_000, &mut out);
    }
    let seen: Vec<(AlertState, u64)> = out
        .alerts
        .iter()
        .map(|a| (a.state, a.event_time / 1_000_000_000))
        .collect();
    assert_eq!(seen, vec![(AlertState::Pending, 0), (AlertState::Inactive, 60)]);
}

#[test]
fn the_shipped_rules_load() {
    let text = std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/../deploy/rules/dwcp.rules.yml"))
        .expect("deploy/rules/dwcp.rules.yml");
    let groups = load(&text, "dwcp.rules.yml", 60_000).expect("valid");
    let names: Vec<&str> = groups
        .iter()
        .flat_map(|g| g.rules.iter().map(|r| r.name.as_str()))
        .collect();
    for want in ["HighLatency", "DWCPServiceDown", "SLAViolation"] {
        assert!(names.contains(&want), "{names:?}");
    }
}

#[test]
fn rules_name_the_metrics_they_select() {
    let groups = load(
        r#"
groups:
  - name: g
    rules:
      - alert: A
        expr: histogram_quantile(0.9, sum by (le) (rate(lat_bucket[5m]))) > on() group_left max({__name__="q", job="x"})
      - alert: B
        expr: absent(up) or label_replace(sum_over_time(y[10m:1m]), "a", "$1", "b", "(.*)")
      - alert: C
        expr: '{__name__=~"z.*"} > 1 and w'
"#,
        "r.yml",
        60_000,
    )
    .expect("rules");
    let names = |ri: usize| {
        let (n, open) = groups[0].rules[ri].selected_metrics();
        (n.into_iter().collect::<Vec<_>>(), open)
    };
    assert_eq!(names(0), (vec!["lat_bucket".to_string(), "q".into()], false));
    assert_eq!(names(1), (vec!["up".to_string(), "y".into()], false));
    assert_eq!(names(2), (vec!["w".to_string()], true));
}

/// A group this engine does not own is skipped: no samples, no alerts, its schedule moving on.
#[test]
fn groups_not_owned_are_not_evaluated() {
    let groups = load(RULES, "r.yml", 60_000).expect("rules");
    let run = |owned: Option<Vec<bool>>| {
        let mut e = RuleEngine::new(groups.clone(), 10_000);
        e.set_owned(owned);
        let mut out = RuleOutput::default();
        for step in 0..=20 {
            let t = step * 15_000;
            e.process(&[gauge("x", &[("job", "api")], 20.0, t)]);
            #[allow(clippy::cast_sign_loss)]
            e.on_watermark(t as u64 * 1_000_000, &mut out);
        }
        out
    };
    let all = run(Some(vec![true]));
    assert_eq!(all.samples.iter().filter(|s| s.name() == "job:x:max").count(), 6);
    assert_eq!(all.alerts.len(), 2, "pending and firing");
    let none = run(Some(vec![false]));
    assert!(none.samples.is_empty() && none.alerts.is_empty());
    assert_eq!(none.evaluations, 0);
}

/// A partition's part of the engine moves to another engine mid-`for`: the alert fires there at
/// the time it would have fired on the first, and the series window comes along.
#[test]
fn a_partitions_state_moves_to_another_engine() {
    let groups = load(RULES, "r.yml", 60_000).expect("rules");
    let feed = |e: &mut RuleEngine, out: &mut RuleOutput, steps: std::ops::RangeInclusive<i64>| {
        for step in steps {
            let t = step * 15_000;
            let v = if (120_000..=480_000).contains(&t) { 20.0 } else { 5.0 };
            e.process_from(&[gauge("x", &[("job", "api"), ("instance", "1")], v, t)], 3);
            #[allow(clippy::cast_sign_loss)]
            e.on_watermark(t as u64 * 1_000_000, out);
        }
    };
    let mut whole = RuleEngine::new(groups.clone(), 10_000);
    whole.set_homes(vec![3]);
    let mut want = RuleOutput::default();
    feed(&mut whole, &mut want, 0..=48);

    let mut first = RuleEngine::new(groups.clone(), 10_000);
    first.set_homes(vec![3]);
    let mut got = RuleOutput::default();
    // Pending at 2m; the partition moves at 3m, before it fires at 4m.
    feed(&mut first, &mut got, 0..=12);
    let state = first.snapshot_partition(3);
    let json = serde_json::to_vec(&state).expect("serialize");
    assert!(
        first.snapshot_partition(4).series.is_empty(),
        "nothing of another partition"
    );
    let mut second = RuleEngine::new(groups, 10_000);
    second.set_homes(vec![3]);
    second.restore_partition(3, serde_json::from_slice(&json).expect("parse"));
    feed(&mut second, &mut got, 13..=48);
    let seen = |o: &RuleOutput| -> Vec<(AlertState, u64)> {
        o.alerts
            .iter()
            .map(|a| (a.state, a.event_time / 1_000_000_000))
            .collect()
    };
    assert_eq!(seen(&got), seen(&want));
    assert_eq!(
        seen(&want),
        [
            (AlertState::Pending, 120),
            (AlertState::Firing, 240),
            (AlertState::Resolved, 600)
        ]
    );
    let recorded = |o: &RuleOutput| o.samples.iter().filter(|s| s.name() == "job:x:max").count();
    assert_eq!(recorded(&got), recorded(&want));
}

/// A partition's state read back into the engine that held it (its transaction was fenced, or
/// it moved away and back): dropped first, then restored from the checkpoint and fed again
/// from there, it gives the alerts of one uninterrupted run. Restored over the series kept
/// here, the checkpoint's older samples would be refused as out of order, and the evaluations
/// between would see nothing.
#[test]
fn a_partition_read_back_into_the_same_engine_gives_the_alerts_of_one_run() {
    let groups = load(RULES, "r.yml", 60_000).expect("rules");
    // Partition 4's series y is fed once; partition 3's x is read again from step 5.
    let feed = |e: &mut RuleEngine, out: &mut RuleOutput, steps: std::ops::RangeInclusive<i64>, replay: bool| {
        for step in steps {
            let t = step * 15_000;
            let v = if (120_000..=480_000).contains(&t) { 20.0 } else { 5.0 };
            e.process_from(&[gauge("x", &[("job", "api"), ("instance", "1")], v, t)], 3);
            if !replay || step > 32 {
                e.process_from(&[gauge("y", &[("job", "other")], 1.0, t)], 4);
            }
            #[allow(clippy::cast_sign_loss)]
            e.on_watermark(t as u64 * 1_000_000, out);
        }
    };
    let seen = |o: &RuleOutput| -> Vec<(AlertState, u64)> {
        o.alerts
            .iter()
            .map(|a| (a.state, a.event_time / 1_000_000_000))
            .collect()
    };
    let mut engine = RuleEngine::new(groups, 10_000);
    engine.set_homes(vec![3]);
    let mut first = RuleOutput::default();
    feed(&mut engine, &mut first, 0..=4, false);
    let checkpoint = engine.snapshot_partition(3);
    // Went on to 8 min (pending at 2m, firing at 4m), then the transaction was fenced.
    feed(&mut engine, &mut first, 5..=32, false);
    assert_eq!(seen(&first), [(AlertState::Pending, 120), (AlertState::Firing, 240)]);
    let other = engine.store().len();

    engine.drop_partition(3, true);
    assert_eq!(
        engine.store().len(),
        other - 2,
        "x and the recorded job:x:max are gone; y of partition 4 stays"
    );
    assert!(engine.active_alerts_in(3).is_empty());
    engine.restore_partition(3, checkpoint);
    let mut again = RuleOutput::default();
    feed(&mut engine, &mut again, 5..=48, true);
    assert_eq!(engine.store().out_of_order, 0, "the replay's samples were all taken");
    assert_eq!(
        seen(&again),
        [
            (AlertState::Pending, 120),
            (AlertState::Firing, 240),
            (AlertState::Resolved, 600)
        ]
    );
}
