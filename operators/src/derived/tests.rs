use super::*;
use crate::network::TunnelStatus;

const SEC: u64 = 1_000_000_000;

fn s(name: &str, labels: &[(&str, &str)], value: f64, t_s: u64) -> Sample {
    sample(name, labels, &[], value, i64::try_from(t_s * 1000).expect("ms"))
}

fn find<'a>(out: &'a [Sample], name: &str, labels: &[(&str, &str)]) -> Vec<&'a Sample> {
    out.iter()
        .filter(|x| x.name() == name && labels.iter().all(|(k, v)| x.label(k) == Some(*v)))
        .collect()
}

fn last_value(out: &[Sample], name: &str, labels: &[(&str, &str)]) -> f64 {
    find(out, name, labels).last().map_or(f64::NAN, |x| x.value)
}

fn sla(name: &str, kind: SlaKind, target: f64) -> SlaSpec {
    SlaSpec {
        name: name.to_string(),
        kind,
        target,
        period_days: 30,
        total: None,
        good: None,
        bad: None,
        up: None,
        histogram: None,
        threshold: None,
        min_rate: None,
        per_region: true,
    }
}

fn op(config: DerivedConfig) -> DerivedOperator {
    DerivedOperator::new(config).expect("valid config")
}

/// Region a: 10 requests per 10 s, 1 of them bad; region b: 10, none bad. Samples from t = 0.
fn availability_input(until_s: u64) -> Vec<Sample> {
    let mut v = Vec::new();
    for t in (0..until_s).step_by(10) {
        let n = (t / 10) as f64;
        for (r, bad) in [("a", 1.0), ("b", 0.0)] {
            v.push(s("http_requests_total", &[("region", r)], 10.0 * n, t));
            v.push(s("http_errors_total", &[("region", r)], bad * n, t));
        }
    }
    v
}

fn availability_config() -> DerivedConfig {
    let mut a = sla("api", SlaKind::Availability, 0.99);
    a.total = Some("http_requests_total".into());
    a.bad = Some("http_errors_total".into());
    DerivedConfig {
        sla: vec![a],
        ..DerivedConfig::default()
    }
}

#[test]
fn availability_from_counters_per_region_and_global() {
    let mut d = op(availability_config());
    d.process(&availability_input(180));
    let mut out = DerivedOutput::default();
    d.on_watermark(180 * SEC, &mut out);
    // The first sample of each counter is its base: minute 0 has 5 increments, minutes 1 and 2
    // have 6. Region a: 153 good of 170; b: 170 of 170; global: 323 of 340.
    let rec = |region: &str| {
        out.sla
            .iter()
            .rev()
            .find(|r| r.region == region)
            .expect("record")
            .clone()
    };
    assert!((rec("a").report.compliance - 153.0 / 170.0).abs() < 1e-12);
    assert_eq!(rec("b").report.compliance, 1.0);
    assert!((rec("global").report.compliance - 323.0 / 340.0).abs() < 1e-12);
    assert!(!rec("a").report.compliant);
    assert!(rec("b").report.compliant);
    // Budget 1 %: a consumed 10 % / 1 % = 10 budgets; burn over 5m = (17/170) / 0.01 = 10.
    assert!((rec("a").report.budget_consumed - 10.0).abs() < 1e-9);
    let lbl = [("sla", "api"), ("region", "a"), ("kind", "availability")];
    assert!((last_value(&out.samples, "dwcp_sla_compliance_ratio", &lbl) - 0.9).abs() < 1e-12);
    let burn = last_value(&out.samples, "dwcp_sla_burn_rate", &[("region", "a"), ("window", "5m")]);
    assert!((burn - 10.0).abs() < 1e-9, "{burn}");
    assert_eq!(last_value(&out.samples, "dwcp_sla_target_ratio", &lbl), 0.99);
    // A report per closed minute (interval 60 s), at the minute's end.
    assert_eq!(
        find(&out.samples, "dwcp_sla_compliance_ratio", &[("region", "a")]).len(),
        3
    );
    assert_eq!(rec("a").period_end, 180 * SEC);
    // Violations: every minute of a is below 99 %, one open interval from minute 0.
    let v = &rec("a").report.violations;
    assert_eq!(v.len(), 1);
    assert_eq!(v[0].start, 0);
    assert!((v[0].worst - 0.9).abs() < 1e-12);
}

#[test]
fn a_99_95_target_with_a_40_minute_outage_in_30_days() {
    let mut a = sla("gw", SlaKind::Availability, 0.9995);
    a.total = Some("req_total".into());
    a.good = Some("ok_total".into());
    a.per_region = false;
    let mut d = op(DerivedConfig {
        sla: vec![a],
        ..DerivedConfig::default()
    });
    let day0 = 20_000 * 86_400; // a whole number of days since the epoch, in seconds
    let minutes = 30 * 24 * 60;
    let outage = 10_000..10_040;
    let (mut total, mut good) = (0.0, 0.0);
    let mut out = DerivedOutput::default();
    // One sample per minute, 600 requests a minute; the base sample one second before.
    d.process(&[s("req_total", &[], 0.0, day0 - 1), s("ok_total", &[], 0.0, day0 - 1)]);
    for m in 0..minutes {
        total += 600.0;
        if !outage.contains(&m) {
            good += 600.0;
        }
        let t = day0 + m * 60 + 30;
        d.process(&[s("req_total", &[], total, t), s("ok_total", &[], good, t)]);
        d.on_watermark((day0 + (m + 1) * 60) * SEC, &mut out);
        if m % 1000 == 0 {
            out = DerivedOutput::default();
        }
    }
    let r = &d.view().sla[0].report;
    let bad_share = 40.0 / f64::from(minutes as u32);
    assert!((r.compliance - (1.0 - bad_share)).abs() < 1e-9, "{}", r.compliance);
    assert!(!r.compliant);
    assert!((r.budget_consumed - bad_share / 0.0005).abs() < 1e-6);
    // 30 days × 0.05 % = 21.6 minutes of budget; 40 minutes spent: 18.4 minutes overspent.
    assert!((r.budget_remaining_seconds - (21.6 - 40.0) * 60.0).abs() < 1e-3);
    assert_eq!(r.violations.len(), 1);
    let v = &r.violations[0];
    assert_eq!(v.start, (day0 + 10_000 * 60) * SEC);
    assert_eq!(v.end, Some((day0 + 10_040 * 60) * SEC));
    assert_eq!(v.worst, 0.0);
}

#[test]
fn latency_uses_the_largest_bucket_bound_at_or_under_the_threshold() {
    let mut l = sla("lat", SlaKind::Latency, 0.9);
    l.histogram = Some(r#"rpc_ms{job="gw"}"#.into());
    l.threshold = Some(200.0);
    l.per_region = false;
    let mut d = op(DerivedConfig {
        sla: vec![l],
        ..DerivedConfig::default()
    });
    // Cumulative buckets: per 10 s, 10 requests: 7 ≤ 100, 9 ≤ 250, 10 in all.
    let mut v = Vec::new();
    for t in (0..60).step_by(10) {
        let n = (t / 10) as f64;
        for (le, per) in [("100", 7.0), ("250", 9.0), ("+Inf", 10.0)] {
            v.push(s("rpc_ms_bucket", &[("job", "gw"), ("le", le)], per * n, t));
        }
        v.push(s("rpc_ms_count", &[("job", "gw")], 10.0 * n, t));
        // Another job's histogram is not selected.
        v.push(s("rpc_ms_count", &[("job", "other")], 1000.0 * n, t));
    }
    d.process(&v);
    let mut out = DerivedOutput::default();
    d.on_watermark(60 * SEC, &mut out);
    // Threshold 200 is not a bound: the largest bound under it is 100, so 35 of 50 are good.
    assert!(
        (out.sla[0].report.compliance - 0.7).abs() < 1e-12,
        "{}",
        out.sla[0].report.compliance
    );
}

#[test]
fn throughput_counts_minutes_at_the_floor_and_empty_minutes_as_bad() {
    let mut t = sla("tput", SlaKind::Throughput, 0.5);
    t.total = Some("req_total".into());
    t.min_rate = Some(1.0);
    t.per_region = false;
    let mut d = op(DerivedConfig {
        sla: vec![t],
        ..DerivedConfig::default()
    });
    // Minute 0: base then +120 (2/s: good). Minute 1: +30 (0.5/s: bad). Minute 2: nothing.
    d.process(&[s("req_total", &[], 0.0, 0), s("req_total", &[], 120.0, 30)]);
    d.process(&[s("req_total", &[], 150.0, 90)]);
    let mut out = DerivedOutput::default();
    d.on_watermark(180 * SEC, &mut out);
    let r = &out.sla.last().expect("record").report;
    assert!((r.compliance - 1.0 / 3.0).abs() < 1e-12, "{}", r.compliance);
}

#[test]
fn up_style_availability() {
    let mut u = sla("up", SlaKind::Availability, 0.9);
    u.up = Some(r#"up{job="dwcp"}"#.into());
    let mut d = op(DerivedConfig {
        sla: vec![u],
        ..DerivedConfig::default()
    });
    let mut v = Vec::new();
    for (i, t) in (0..60).step_by(15).enumerate() {
        v.push(s(
            "up",
            &[("job", "dwcp"), ("region", "a")],
            if i == 1 { 0.0 } else { 1.0 },
            t,
        ));
    }
    d.process(&v);
    let mut out = DerivedOutput::default();
    d.on_watermark(60 * SEC, &mut out);
    let a = out.sla.iter().find(|r| r.region == "a").expect("a");
    assert!((a.report.compliance - 0.75).abs() < 1e-12);
}

fn health_config() -> DerivedConfig {
    let gauge = |g: &str, scale: f64| FactorSpec {
        gauge: Some(g.into()),
        ratio: None,
        histogram_mean: None,
        scale,
        offset: 0.0,
    };
    let ratio = |scale: f64, offset: f64| FactorSpec {
        gauge: None,
        ratio: Some(RatioSpec {
            numerator: "errors_total".into(),
            denominator: "requests_total".into(),
        }),
        histogram_mean: None,
        scale,
        offset,
    };
    DerivedConfig {
        health: Some(HealthSpec {
            availability: Some(ratio(-100.0, 100.0)),
            utilization: Some(gauge("cpu_utilization_ratio", 100.0)),
            latency: Some(FactorSpec {
                gauge: None,
                ratio: None,
                histogram_mean: Some("latency_ms".into()),
                scale: 1.0,
                offset: 0.0,
            }),
            error_rate: Some(ratio(100.0, 0.0)),
            consensus: Some(gauge("consensus_ratio", 100.0)),
            scoring: HealthConfig::default(),
            carry_minutes: 5,
            change_points: 5.0,
        }),
        ..DerivedConfig::default()
    }
}

/// One minute of the design's example in region `r`: 0.5 % errors (availability 99.5; the
/// error rate factor then reads 0.5 %), utilization 65 %, mean latency 25 ms, consensus 95 %.
fn health_minute(m: u64, latency_ms: f64) -> Vec<Sample> {
    let t0 = m * 60;
    let r = [("region", "eu")];
    let mut v = Vec::new();
    for (k, t) in [t0, t0 + 30].into_iter().enumerate() {
        let n = (m * 2 + k as u64 + 1) as f64;
        v.push(s("requests_total", &r, 1000.0 * n, t));
        v.push(s("errors_total", &r, 5.0 * n, t));
        v.push(s("latency_ms_count", &r, 100.0 * n, t));
        v.push(s("latency_ms_sum", &r, 100.0 * n * latency_ms, t));
        v.push(s("cpu_utilization_ratio", &r, 0.65, t));
        v.push(s("consensus_ratio", &r, 0.95, t));
    }
    v
}

#[test]
fn health_from_series_scores_the_design_example_and_publishes_changes() {
    let mut d = op(health_config());
    let mut out = DerivedOutput::default();
    // A base sample for every counter at t = -1 s of minute 0 is the first of health_minute(0).
    for m in 0..5 {
        d.process(&health_minute(m, 25.0));
        d.on_watermark((m + 1) * 60 * SEC, &mut out);
    }
    // availability 99.5 → 72.222; utilization 65 → 100; latency 25 → 100; error rate 0.5 % →
    // 100 − 20 × 0.4 / 0.9 = 91.111; consensus 95 → 75.
    let want =
        0.3 * (50.0 + 40.0 * 0.5 / 0.9) + 0.2 * 100.0 + 0.2 * 100.0 + 0.2 * (100.0 - 20.0 * 0.4 / 0.9) + 0.1 * 75.0;
    let score = last_value(&out.samples, "dwcp_region_health_score", &[("region", "eu")]);
    assert!((score - want).abs() < 1e-9, "{score} vs {want}");
    assert_eq!(
        last_value(&out.samples, "dwcp_region_healthy", &[("region", "eu")]),
        1.0
    );
    // Minute 0 has only 1 increment per counter but the same ratios: five scores, one change.
    assert_eq!(find(&out.samples, "dwcp_region_health_score", &[]).len(), 5);
    assert_eq!(out.health.len(), 1, "{:?}", out.health);
    // Latency climbs 60 ms a minute: the score falls, the trend turns, changes are published.
    out = DerivedOutput::default();
    for m in 5..12 {
        d.process(&health_minute(m, 25.0 + 60.0 * (m - 4) as f64));
        d.on_watermark((m + 1) * 60 * SEC, &mut out);
    }
    let last = out.health.last().expect("a change");
    assert_eq!(last.health.trend, Trend::Degrading);
    assert!(!last.health.healthy);
    assert_eq!(
        last_value(&out.samples, "dwcp_region_health_trend", &[("region", "eu")]),
        -1.0
    );
    assert_eq!(d.view().health[0].0, "eu");
}

#[test]
fn network_pairs_from_series_and_trace_hops() {
    let mut d = op(DerivedConfig {
        network: Some(NetworkSpec {
            peer_label: "peer_region".into(),
            latency: Some("rtt_ms".into()),
            latency_scale_ms: 1.0,
            packets_sent: Some("pkts_sent_total".into()),
            packets_received: Some("pkts_recv_total".into()),
            bytes_sent: Some("tx_bytes_total".into()),
            bytes_received: Some("rx_bytes_total".into()),
            tunnel_up: Some("tunnel_up".into()),
            thresholds: NetworkConfig {
                capacity_bytes_per_second: 1e6,
                ..NetworkConfig::default()
            },
        }),
        ..DerivedConfig::default()
    });
    let p = [("region", "us"), ("peer_region", "eu")];
    let mut v = Vec::new();
    for (i, rtt) in [20.0, 30.0, 20.0, 40.0].into_iter().enumerate() {
        v.push(s("rtt_ms", &p, rtt, i as u64 * 10));
    }
    v.push(s("pkts_sent_total", &p, 1000.0, 0));
    v.push(s("pkts_recv_total", &p, 1000.0, 0));
    v.push(s("pkts_sent_total", &p, 2000.0, 40));
    v.push(s("pkts_recv_total", &p, 1980.0, 40));
    v.push(s("tx_bytes_total", &p, 0.0, 0));
    v.push(s("tx_bytes_total", &p, 5e6, 10));
    v.push(s("rx_bytes_total", &p, 0.0, 0));
    v.push(s("rx_bytes_total", &p, 1e6, 10));
    v.push(s("tunnel_up", &p, 1.0, 50));
    d.process(&v);
    d.hop("us", "eu", 80_000_000, 20 * SEC);
    d.hop("us", "eu", 100_000_000, 25 * SEC);
    let mut out = DerivedOutput::default();
    d.on_watermark(60 * SEC, &mut out);
    let j = last_value(&out.samples, "dwcp_network_jitter_milliseconds", &p);
    assert!((j - 2.385_253_906_25).abs() < 1e-9, "{j}");
    assert!((last_value(&out.samples, "dwcp_network_packet_loss_ratio", &p) - 0.02).abs() < 1e-12);
    assert_eq!(last_value(&out.samples, "dwcp_network_sent_bytes_per_second", &p), 5e5);
    assert_eq!(
        last_value(&out.samples, "dwcp_network_received_bytes_per_second", &p),
        1e5
    );
    assert_eq!(last_value(&out.samples, "dwcp_network_utilization_ratio", &p), 0.5);
    // 2 % loss > 1 %: the tunnel is up but degraded.
    assert_eq!(last_value(&out.samples, "dwcp_tunnel_status", &p), 0.5);
    let mean = last_value(
        &out.samples,
        "dwcp_cross_region_hop_latency_milliseconds",
        &[("stat", "mean")],
    );
    assert!((mean - 90.0).abs() < 1e-9);
    assert_eq!(
        last_value(
            &out.samples,
            "dwcp_cross_region_hop_latency_milliseconds",
            &[("stat", "max")]
        ),
        100.0
    );
    assert_eq!(d.view().network[0].report.status, TunnelStatus::Degraded);
}

#[test]
fn capacity_forecast_on_a_linear_series_gives_exact_days_to_capacity() {
    let mut d = op(DerivedConfig {
        capacity: vec![CapacitySpec {
            resource: "cpu".into(),
            series: "cpu_utilization_ratio".into(),
            capacity: 1.0,
            nodes: 4,
            target_utilization: 0.7,
            max_hours: 24 * 180,
        }],
        ..DerivedConfig::default()
    });
    // 0.2 + 0.001 per hour, a sample at each hour's middle, 96 hours.
    let mut out = DerivedOutput::default();
    for h in 0..96u64 {
        let v = 0.2 + 0.001 * h as f64;
        d.process(&[s("cpu_utilization_ratio", &[("region", "us")], v, h * 3600 + 1800)]);
        d.on_watermark((h + 1) * 3600 * SEC, &mut out);
    }
    // At hour 95 the line is at 0.295: (1 − 0.295) / 0.001 hours = 705 h = 29.375 days.
    let days = last_value(&out.samples, "dwcp_capacity_days_to_exhaustion", &[("resource", "cpu")]);
    assert!((days - 29.375).abs() < 1e-6, "{days}");
    let f30 = last_value(&out.samples, "dwcp_capacity_forecast", &[("horizon", "30d")]);
    assert!((f30 - (0.295 + 0.72)).abs() < 1e-6, "{f30}");
    // 90 days: 0.295 + 2.16 = 2.455 of capacity 1 at 70 %: ceil(4 × 2.455 / 0.7) = 15 nodes.
    assert_eq!(last_value(&out.samples, "dwcp_capacity_nodes_needed", &[]), 15.0);
    assert_eq!(
        last_value(&out.samples, "dwcp_capacity_bottleneck_rank", &[("resource", "cpu")]),
        1.0
    );
}

#[test]
fn snapshot_and_restore_give_the_same_outputs() {
    let input = availability_input(600);
    let (first, second) = input.split_at(input.len() / 2);
    let mut whole = op(availability_config());
    let mut a = DerivedOutput::default();
    whole.process(first);
    whole.on_watermark(300 * SEC, &mut a);
    whole.process(second);
    whole.on_watermark(600 * SEC, &mut a);

    let mut before = op(availability_config());
    let mut b = DerivedOutput::default();
    before.process(first);
    before.on_watermark(300 * SEC, &mut b);
    let json = serde_json::to_string(&before.snapshot()).expect("serialize");
    drop(before);
    let mut after = op(availability_config());
    after.restore(serde_json::from_str(&json).expect("deserialize"));
    after.process(second);
    after.on_watermark(600 * SEC, &mut b);
    assert_eq!(a.samples, b.samples);
    assert_eq!(a.sla, b.sla);
}

/// Counters' last values are keyed by the series hash: a snapshot from a build with another
/// hash (no version, or another one) restores without them, one from this build with them.
#[test]
fn counters_restore_only_from_a_snapshot_of_the_same_series_hash() {
    let mut before = op(availability_config());
    before.process(&availability_input(120));
    let snap = serde_json::to_value(before.snapshot()).expect("serialize");
    assert_eq!(snap["series_hash_version"], crate::prom::SERIES_HASH_VERSION);
    let mut same = op(availability_config());
    same.restore(serde_json::from_value(snap.clone()).expect("deserialize"));
    assert_eq!(same.state.counters, before.state.counters);
    assert_eq!(same.state.counters.len(), 4, "two counters in two regions");
    let mut old = snap;
    old.as_object_mut().expect("object").remove("series_hash_version");
    let mut other = op(availability_config());
    other.restore(serde_json::from_value(old).expect("deserialize"));
    assert!(other.state.counters.is_empty());
    assert_eq!(other.state.sla, same.state.sla, "the rest restores as before");
}

#[test]
fn configuration_errors_name_the_field() {
    let e = |c: DerivedConfig| DerivedOperator::new(c).expect_err("invalid").to_string();
    let mut a = sla("x", SlaKind::Availability, 0.99);
    a.total = Some("t".into());
    let msg = e(DerivedConfig {
        sla: vec![a.clone()],
        ..DerivedConfig::default()
    });
    assert!(msg.starts_with("sla[0].good:"), "{msg}");
    a.good = Some("rate(x[5m])".into());
    let msg = e(DerivedConfig {
        sla: vec![a],
        ..DerivedConfig::default()
    });
    assert!(
        msg.starts_with("sla[0].good:") && msg.contains("function call"),
        "{msg}"
    );
    let l = sla("l", SlaKind::Latency, 1.5);
    let msg = e(DerivedConfig {
        sla: vec![l],
        ..DerivedConfig::default()
    });
    assert!(msg.starts_with("sla[0].target:"), "{msg}");
    let mut h = health_config();
    if let Some(hs) = h.health.as_mut() {
        if let Some(f) = hs.latency.as_mut() {
            f.gauge = Some("x".into());
        }
    }
    assert!(e(h).starts_with("health.latency:"));
}

#[test]
fn bounds_drop_and_count_new_groups() {
    let mut c = availability_config();
    c.max_groups = 2;
    let mut d = op(c);
    d.process(&availability_input(30));
    // Regions a and b and global: the third group of the SLA is over the bound.
    assert_eq!(d.groups(), 2);
    assert!(d.stats().dropped_groups > 0);
}

#[test]
fn burn_rate_alerts_fire_swap_and_resolve() {
    let mut a = sla("api", SlaKind::Availability, 0.999);
    a.total = Some("req_total".into());
    a.bad = Some("err_total".into());
    a.per_region = false;
    let mut d = op(DerivedConfig {
        sla: vec![a],
        ..DerivedConfig::default()
    });
    let mut out = DerivedOutput::default();
    let (mut req, mut err) = (0.0, 0.0);
    d.process(&[s("req_total", &[], 0.0, 0), s("err_total", &[], 0.0, 0)]);
    // 2 hours of 2 % errors: burn 20× in every window, a page from the first minute.
    let mut minute = |d: &mut DerivedOperator, m: u64, bad: f64, out: &mut DerivedOutput| {
        req += 1000.0;
        err += bad;
        d.process(&[
            s("req_total", &[], req, m * 60 + 30),
            s("err_total", &[], err, m * 60 + 30),
        ]);
        d.on_watermark((m + 1) * 60 * SEC, out);
    };
    for m in 0..120 {
        minute(&mut d, m, 20.0, &mut out);
    }
    assert_eq!(out.alerts.len(), 1, "{:?}", out.alerts);
    let fired = &out.alerts[0];
    assert_eq!(fired.state, AlertState::Firing);
    assert_eq!(fired.labels["severity"], "critical");
    assert_eq!(fired.labels["alertname"], BURN_ALERT_NAME);
    assert_eq!(fired.event_time, 60 * SEC);
    assert!((fired.value - 20.0).abs() < 1e-9, "{}", fired.value);
    assert_eq!(fired.fingerprint, fingerprint(&fired.labels));
    // Clean traffic: 5m drops to 0 at once, but the page holds while 6h and 30m burn above 6×.
    // At the end of minute m the 30m window holds 149 − m bad minutes: 20 × (149 − m) / 30 > 6
    // fails first for m = 140 (exactly 6), so the page resolves at 141 minutes; 6h and 3d still
    // burn above 1× (20 × 120 / 141), so a ticket fires in its place.
    out = DerivedOutput::default();
    for m in 120..150 {
        minute(&mut d, m, 0.0, &mut out);
    }
    let states: Vec<(&str, AlertState)> = out
        .alerts
        .iter()
        .map(|a| (a.labels["severity"].as_str(), a.state))
        .collect();
    assert_eq!(
        states,
        [("critical", AlertState::Resolved), ("warning", AlertState::Firing)]
    );
    assert_eq!(out.alerts[0].active_since, Some(60 * SEC));
    assert_eq!(out.alerts[0].event_time, 141 * 60 * SEC);
    assert_eq!(out.alerts[1].event_time, 141 * 60 * SEC);
}

/// The first report is at the end of the first minute with data, whether event time reached it
/// in one step or stopped before it first (one worker's event time and a re-keyed partition's
/// take different steps over the same input).
#[test]
fn reports_start_at_the_first_minute_with_data_whatever_steps_event_time_takes() {
    let input: Vec<Sample> = availability_input(180)
        .into_iter()
        .map(|x| {
            let t = u64::try_from(x.timestamp_ms).expect("ms") / 1000 + 600;
            s(
                x.name(),
                &[("region", x.label("region").unwrap_or_default())],
                x.value,
                t,
            )
        })
        .collect();
    let run = |watermarks: &[u64]| {
        let mut d = op(availability_config());
        d.process(&input);
        let mut out = DerivedOutput::default();
        for w in watermarks {
            d.on_watermark(w * SEC, &mut out);
        }
        find(&out.samples, "dwcp_sla_compliance_ratio", &[("region", "a")])
            .iter()
            .map(|x| x.timestamp_ms / 1000)
            .collect::<Vec<_>>()
    };
    assert_eq!(run(&[780]), [660, 720, 780]);
    assert_eq!(run(&[598, 780]), [660, 720, 780]);
    assert_eq!(run(&[598, 610, 700, 780]), [660, 720, 780]);
}
