use super::*;
use dwcp_schemas::model::{AnyValue, Attributes, KeyValue, MetricDescriptor, Number, Origin, Resource, Scope};

const S: u64 = 1_000_000_000;
const BOUNDS: [f64; 8] = [5.0, 10.0, 25.0, 50.0, 100.0, 250.0, 500.0, 1000.0];

fn kv(k: &str, v: &str) -> KeyValue {
    KeyValue {
        key: k.into(),
        value: AnyValue::String(v.into()),
    }
}

fn point(name: &str, region: &str, value: PointValue, t: u64, start: u64) -> MetricPoint {
    MetricPoint {
        origin: Origin {
            region: region.into(),
            resource: Arc::new(Resource {
                attributes: Attributes(vec![
                    kv("service.name", "gw"),
                    kv("service.namespace", "dwcp"),
                    kv("service.instance.id", &format!("gw-{region}")),
                ]),
            }),
            scope: Arc::new(Scope::default()),
        },
        metric: Arc::new(MetricDescriptor {
            name: name.into(),
            description: String::new(),
            unit: "ms".into(),
        }),
        attributes: Attributes(vec![kv("operation", "migration")]),
        start_time_unix_nano: start,
        time_unix_nano: t,
        value,
        flags: 0,
    }
}

fn hist(values: &[f64]) -> PointValue {
    let mut counts = vec![0u64; BOUNDS.len() + 1];
    for v in values {
        counts[BOUNDS.iter().position(|b| v <= b).unwrap_or(BOUNDS.len())] += 1;
    }
    PointValue::Histogram {
        count: values.len() as u64,
        sum: Some(values.iter().sum()),
        min: None,
        max: None,
        bounds: BOUNDS.to_vec(),
        bucket_counts: counts,
        temporality: Temporality::Cumulative,
    }
}

fn op(rules: Vec<AggregationRule>) -> AggregateOperator {
    AggregateOperator::new(AggregationConfig {
        rules,
        ..Default::default()
    })
}

fn rule(metric: &str) -> AggregationRule {
    AggregationRule {
        metric: metric.into(),
        record: None,
        aggregations: None,
    }
}

fn get(out: &[Sample], name: &str, region: &str) -> Option<f64> {
    out.iter()
        .find(|s| s.name() == name && s.label("region") == Some(region))
        .map(|s| s.value)
}

#[test]
fn histogram_quantile_interpolates_like_prometheus() {
    // Values 20, 22, 25, 30, 400: buckets (10,25] 3, (25,50] 1, (250,500] 1.
    let counts = [0.0, 0.0, 3.0, 1.0, 0.0, 0.0, 1.0, 0.0, 0.0];
    // rank 2.5 in (10, 25] holding 3: 10 + 15 * 2.5/3.
    assert_eq!(histogram_quantile(0.5, &BOUNDS, &counts), Some(22.5));
    // rank 4.75 in (250, 500] holding 1 after 4: 250 + 250 * 0.75.
    assert_eq!(histogram_quantile(0.95, &BOUNDS, &counts), Some(437.5));
    // Everything in +Inf: the highest finite bound.
    assert_eq!(
        histogram_quantile(0.5, &BOUNDS, &[0.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0, 4.0]),
        Some(1000.0)
    );
    assert_eq!(histogram_quantile(0.5, &BOUNDS, &[0.0; 9]), None);
}

#[test]
fn rebucketing_interpolates_inside_source_buckets() {
    // 10 in (0,10], 10 in (10,20]: onto [15] → 15 below 15, 5 above.
    assert_eq!(rebucket(&[10.0, 20.0], &[10.0, 10.0, 0.0], &[15.0]), vec![15.0, 5.0]);
    assert_eq!(rebucket(&[10.0], &[4.0, 2.0], &[10.0, 20.0]), vec![4.0, 0.0, 2.0]);
}

#[test]
fn regions_merge_into_a_global_p95_and_rate() {
    let mut a = op(vec![rule("dwcp.latency")]);
    let regions = [
        ("us-west-1", vec![10.0, 12.0, 45.0, 80.0, 150.0]),
        ("us-east-1", vec![20.0, 22.0, 25.0, 30.0, 400.0]),
        ("eu-west-1", vec![15.0, 16.0, 17.0, 18.0, 19.0]),
    ];
    let pts: Vec<MetricPoint> = regions
        .iter()
        .map(|(r, v)| point("dwcp.latency", r, hist(v), 101 * S, 100 * S))
        .collect();
    a.process(&pts);
    let mut out = vec![];
    a.on_watermark(110 * S, &mut out);
    // Global: 15 values; buckets (5,10] 1, (10,25] 9, (25,50] 2, (50,100] 1, (100,250] 1, (250,500] 1.
    // p95: rank 14.25, in (250, 500] after 14 → 250 + 250 * 0.25.
    assert_eq!(get(&out, "dwcp:latency:p95:10s", "global"), Some(312.5));
    assert_eq!(get(&out, "dwcp:latency:count:10s", "global"), Some(15.0));
    assert_eq!(get(&out, "dwcp:latency:rate:10s", "global"), Some(1.5));
    assert_eq!(get(&out, "dwcp:latency:p50:10s", "us-east-1"), Some(22.5));
    assert_eq!(get(&out, "dwcp:latency:sum:10s", "eu-west-1"), Some(85.0));
    let s = out.iter().find(|s| s.name() == "dwcp:latency:p95:10s").expect("sample");
    assert_eq!(s.timestamp_ms, 110_000);
    assert_eq!(s.label("job"), Some("dwcp/gw"));
    assert_eq!(s.label("operation"), Some("migration"));
    assert_eq!(s.label("instance"), None, "instance is not part of the key");
    // The whole label set, sorted by name, as every sample's is.
    let global = out
        .iter()
        .find(|s| s.name() == "dwcp:latency:p95:10s" && s.label("region") == Some("global"))
        .expect("global p95");
    assert_eq!(
        global.labels,
        crate::prom::label_set_of([
            ("__name__", "dwcp:latency:p95:10s"),
            ("job", "dwcp/gw"),
            ("operation", "migration"),
            ("region", "global"),
        ])
    );
}

#[test]
fn cumulative_points_are_differenced_per_series_across_windows() {
    let mut a = op(vec![rule("dwcp.requests")]);
    let c = |v: i64, t: u64| {
        point(
            "dwcp.requests",
            "us-east-1",
            PointValue::Sum {
                value: Number::Int(v),
                temporality: Temporality::Cumulative,
                monotonic: true,
            },
            t,
            50 * S,
        )
    };
    a.process(&[c(100, 101 * S), c(150, 105 * S), c(250, 112 * S), c(30, 115 * S)]);
    let mut out = vec![];
    a.on_watermark(120 * S, &mut out);
    let rates: Vec<f64> = out
        .iter()
        .filter(|s| s.name() == "dwcp:requests:rate:10s" && s.label("region") == Some("global"))
        .map(|s| s.value)
        .collect();
    // [100,110): 100 (from the start time) + 50 → 15/s; [110,120): 100 + 30 (a reset) → 13/s.
    assert_eq!(rates, vec![15.0, 13.0]);
    assert!(
        get(&out, "dwcp:requests:p95:10s", "global").is_none(),
        "no quantiles of a counter"
    );
}

#[test]
fn gauge_quantiles_from_hdr_within_a_tenth_of_a_percent_and_late_points_counted() {
    let mut a = op(vec![AggregationRule {
        metric: "cpu".into(),
        record: Some("dwcp:cpu".into()),
        aggregations: Some(vec![Aggregation::P99, Aggregation::Mean, Aggregation::Max]),
    }]);
    let pts: Vec<MetricPoint> = (1..=1000)
        .map(|i| {
            point(
                "cpu",
                if i % 2 == 0 { "a" } else { "b" },
                PointValue::Gauge {
                    value: Number::Double(i as f64 / 10.0),
                },
                100 * S + i,
                0,
            )
        })
        .collect();
    a.process(&pts);
    let mut out = vec![];
    a.on_watermark(110 * S, &mut out);
    let p99 = get(&out, "dwcp:cpu:p99:10s", "global").expect("p99");
    assert!((p99 - 99.0).abs() / 99.0 <= 0.001, "{p99}");
    assert_eq!(get(&out, "dwcp:cpu:mean:10s", "global"), Some(50.05));
    assert_eq!(get(&out, "dwcp:cpu:max:10s", "global"), Some(100.0));
    assert_eq!(
        out.iter().filter(|s| s.name() == "dwcp:cpu:mean:10s").count(),
        3,
        "a, b and global"
    );
    a.process(&[point(
        "cpu",
        "a",
        PointValue::Gauge {
            value: Number::Double(1.0),
        },
        105 * S,
        0,
    )]);
    assert_eq!(a.late(), 1);
}

#[test]
fn state_moved_mid_window_through_json_emits_what_one_operator_does() {
    // Gauges (HDR quantiles), a cumulative counter and cumulative histograms, three regions,
    // over three windows; the state moves to another operator in the middle of the second.
    let rules = vec![rule("dwcp.queue"), rule("dwcp.requests"), rule("dwcp.latency")];
    let mut points = Vec::new();
    for i in 0..30u64 {
        for (ri, region) in ["us-east-1", "eu-west-1", "ap-south-1"].iter().enumerate() {
            let t = 100 * S + i * S;
            #[allow(clippy::cast_precision_loss)]
            let x = (i * 7 + ri as u64 * 13) as f64;
            points.push(point(
                "dwcp.queue",
                region,
                PointValue::Gauge {
                    value: Number::Double(x * 1.5),
                },
                t,
                0,
            ));
            points.push(point(
                "dwcp.requests",
                region,
                PointValue::Sum {
                    value: Number::Int(i64::try_from(i * i + ri as u64).unwrap_or(0)),
                    temporality: Temporality::Cumulative,
                    monotonic: true,
                },
                t,
                50 * S,
            ));
            let seen: Vec<f64> = (0..=i).map(|k| ((k * 37 + ri as u64 * 11) % 700) as f64).collect();
            points.push(point("dwcp.latency", region, hist(&seen), t, 50 * S));
        }
    }
    let mut one = op(rules.clone());
    one.process(&points);
    let mut want = vec![];
    one.on_watermark(EventTime::MAX, &mut want);

    // Points read twice (a replay after a crash re-keys them again) are added once.
    let mut replayed = op(rules.clone());
    replayed.process(&points[..20 * 9]);
    replayed.process(&points[10 * 9..]);
    let mut twice = vec![];
    replayed.on_watermark(EventTime::MAX, &mut twice);
    // Counted: the gauge's 10 replayed steps, and the counter's step at its baseline's time
    // (its older points are refused as out of order, uncounted as duplicates), per region.
    assert_eq!(replayed.duplicates(), 10 * 3 + 3);

    let (first, rest) = points.split_at(15 * 9); // 15 steps: the window [110, 120) is half read
    let mut before = op(rules.clone());
    before.process(first);
    let mut got = vec![];
    before.on_watermark(110 * S, &mut got);
    let json = serde_json::to_vec(&before.snapshot()).expect("serializes");
    let state: AggregateState = serde_json::from_slice(&json).expect("deserializes");
    assert!(state.groups() > 0, "the half-read window is in the state");
    let mut after = op(rules);
    after.restore(state);
    after.process(rest);
    after.on_watermark(EventTime::MAX, &mut got);

    let render = |v: &[Sample]| {
        let mut r: Vec<String> = v
            .iter()
            .map(|s| format!("{:?} {} {}", s.labels, s.timestamp_ms, s.value))
            .collect();
        r.sort();
        r
    };
    assert_eq!(render(&got), render(&want));
    assert_eq!(render(&twice), render(&want));
    assert_eq!(want.len(), got.len());
    assert!(want.len() > 100, "{} samples", want.len());
}
