use super::*;
use dwcp_schemas::model::{Attributes, ExpBuckets, KeyValue, MetricDescriptor, Number, Origin, Resource, Scope};
use std::sync::Arc;

#[test]
fn names_follow_the_specification_table() {
    let cases = [
        (
            "system.cpu.utilization",
            "1",
            PromKind::Gauge,
            "system_cpu_utilization_ratio",
        ),
        (
            "http.server.request.duration",
            "s",
            PromKind::Histogram,
            "http_server_request_duration_seconds",
        ),
        (
            "system.network.io",
            "By",
            PromKind::Counter,
            "system_network_io_bytes_total",
        ),
        (
            "system.memory.usage",
            "By",
            PromKind::Gauge,
            "system_memory_usage_bytes",
        ),
        ("requests", "{request}", PromKind::Counter, "requests_total"),
        ("dwcp.requests", "{request}", PromKind::Counter, "dwcp_requests_total"),
        ("throughput", "By/s", PromKind::Gauge, "throughput_bytes_per_second"),
        ("speed", "m/s", PromKind::Gauge, "speed_meters_per_second"),
        ("packets.rate", "{packet}/s", PromKind::Gauge, "packets_rate_per_second"),
        ("metric_total", "", PromKind::Counter, "metric_total"),
        ("foo.bar", "ms", PromKind::Counter, "foo_bar_milliseconds_total"),
        ("dwcp.latency", "ms", PromKind::Histogram, "dwcp_latency_milliseconds"),
        (
            "latency_milliseconds",
            "ms",
            PromKind::Histogram,
            "latency_milliseconds",
        ),
        ("sent_total", "By", PromKind::Counter, "sent_bytes_total"),
        ("cpu", "%", PromKind::Gauge, "cpu_percent"),
        ("dwcp.cpu.usage", "%", PromKind::Gauge, "dwcp_cpu_usage_percent"),
        ("temperature", "Cel", PromKind::Gauge, "temperature_celsius"),
        ("distance", "km", PromKind::Gauge, "distance_km"),
        ("1foo", "", PromKind::Gauge, "_1foo"),
        ("a..b--c", "", PromKind::Gauge, "a_b_c"),
        ("ns:metric", "", PromKind::Gauge, "ns:metric"),
        ("ratio.counter", "1", PromKind::Counter, "ratio_counter_total"),
    ];
    for (name, unit, kind, want) in cases {
        assert_eq!(metric_name(name, unit, kind), want, "{name} [{unit}] {kind:?}");
    }
}

#[test]
fn labels_are_sanitized() {
    for (k, want) in [
        ("http.method", "http_method"),
        ("0abc", "key_0abc"),
        ("_abc", "key_abc"),
        ("__abc", "__abc"),
        ("a-b c", "a_b_c"),
    ] {
        assert_eq!(label_name(k), want);
    }
}

fn kv(k: &str, v: &str) -> KeyValue {
    KeyValue {
        key: k.into(),
        value: AnyValue::String(v.into()),
    }
}

fn point(name: &str, unit: &str, value: PointValue, t_ms: u64) -> MetricPoint {
    MetricPoint {
        origin: Origin {
            region: "us-east-1".into(),
            resource: Arc::new(Resource {
                attributes: Attributes(vec![
                    kv("service.name", "gw"),
                    kv("service.namespace", "dwcp"),
                    kv("service.instance.id", "gw-0"),
                    kv("cloud.region", "us-east-1"),
                    kv("host.name", "h1"),
                ]),
            }),
            scope: Arc::new(Scope {
                name: "dwcp.fixture".into(),
                version: "1.0".into(),
                attributes: Attributes::default(),
            }),
        },
        metric: Arc::new(MetricDescriptor {
            name: name.into(),
            description: String::new(),
            unit: unit.into(),
        }),
        attributes: Attributes(vec![kv("operation", "migration")]),
        start_time_unix_nano: 0,
        time_unix_nano: t_ms * 1_000_000,
        value,
        flags: 0,
    }
}

fn find<'a>(out: &'a [Sample], name: &str, extra: Option<(&str, &str)>) -> Vec<&'a Sample> {
    out.iter()
        .filter(|s| s.name() == name)
        .filter(|s| extra.is_none_or(|(k, v)| s.label(k) == Some(v)))
        .collect()
}

#[test]
fn counter_gets_job_instance_scope_region_and_target_info() {
    let mut c = PromConverter::new(PromConfig::default());
    let mut out = vec![];
    let p = point(
        "dwcp.requests",
        "{request}",
        PointValue::Sum {
            value: Number::Int(5),
            temporality: Temporality::Cumulative,
            monotonic: true,
        },
        1000,
    );
    c.convert(&[p], &mut out);
    let s = find(&out, "dwcp_requests_total", None);
    assert_eq!(s.len(), 1);
    let got: Vec<(String, String)> = s[0]
        .labels
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect();
    assert_eq!(
        got,
        vec![
            ("__name__".to_string(), "dwcp_requests_total".to_string()),
            ("instance".into(), "gw-0".into()),
            ("job".into(), "dwcp/gw".into()),
            ("operation".into(), "migration".into()),
            ("otel_scope_name".into(), "dwcp.fixture".into()),
            ("otel_scope_version".into(), "1.0".into()),
            ("region".into(), "us-east-1".into()),
        ]
    );
    assert_eq!((s[0].value, s[0].timestamp_ms), (5.0, 1000));
    let ti = find(&out, "target_info", None);
    assert_eq!(ti.len(), 1);
    assert_eq!(ti[0].label("host_name"), Some("h1"));
    assert_eq!(ti[0].label("cloud_region"), Some("us-east-1"));
    assert_eq!(ti[0].label("job"), Some("dwcp/gw"));
    assert_eq!(ti[0].label("service_name"), None);
}

/// With repartitioning, `target_info` comes from the re-keying stage's markers, one per
/// resource and region of a message at its first point's time: the same samples one converter
/// writes from the points themselves, and none from the points on the keyed side.
#[test]
fn target_info_markers_give_what_the_points_give() {
    let gauge = || PointValue::Gauge { value: Number::Int(1) };
    let a = point("dwcp.queue", "", gauge(), 1000);
    let mut b = point("dwcp.queue", "", gauge(), 2000);
    b.origin.resource = Arc::new(Resource {
        attributes: Attributes(vec![kv("service.name", "db"), kv("host.name", "h2")]),
    });
    let mut a_later = a.clone();
    a_later.time_unix_nano = 3_000_000_000;
    let points = [a.clone(), b.clone(), a_later];
    let mut one = PromConverter::new(PromConfig::default());
    let mut want = vec![];
    one.convert(&points, &mut want);
    want.retain(|s| s.name() == "target_info");
    assert_eq!(want.len(), 2);

    let markers = target_info_markers(&points);
    assert_eq!(markers.len(), 2);
    assert!(markers.iter().all(|m| m.metric.name == TARGET_INFO_MARKER));
    assert_eq!(target_info_key(&markers[0]), "target_info/dwcp/gw/gw-0/us-east-1");
    assert_eq!(target_info_key(&markers[1]), "target_info/db//us-east-1");
    let mut keyed = PromConverter::new(PromConfig::default());
    keyed.target_info_from_markers();
    let mut got = vec![];
    keyed.convert(&points, &mut got);
    assert!(got.iter().all(|s| s.name() != "target_info"));
    got.clear();
    keyed.convert_markers(&markers, &mut got);
    assert_eq!(got, want);
    // Off: nothing from markers either.
    let mut off = PromConverter::new(PromConfig {
        target_info: false,
        ..Default::default()
    });
    got.clear();
    off.convert_markers(&markers, &mut got);
    assert!(got.is_empty());
}

#[test]
fn histogram_becomes_cumulative_buckets_with_inf_sum_and_count() {
    let mut c = PromConverter::new(PromConfig {
        target_info: false,
        ..Default::default()
    });
    let mut out = vec![];
    // Values 20, 22, 25, 30, 400 in bounds [5, 10, 25, 50, 100, 250, 500, 1000].
    let p = point(
        "dwcp.latency",
        "ms",
        PointValue::Histogram {
            count: 5,
            sum: Some(497.0),
            min: Some(20.0),
            max: Some(400.0),
            bounds: vec![5.0, 10.0, 25.0, 50.0, 100.0, 250.0, 500.0, 1000.0],
            bucket_counts: vec![0, 0, 3, 1, 0, 0, 1, 0, 0],
            temporality: Temporality::Cumulative,
        },
        2000,
    );
    c.convert(&[p], &mut out);
    let le: Vec<(String, f64)> = find(&out, "dwcp_latency_milliseconds_bucket", None)
        .iter()
        .map(|s| (s.label("le").expect("le").to_string(), s.value))
        .collect();
    let want: Vec<(String, f64)> = [
        ("5", 0.0),
        ("10", 0.0),
        ("25", 3.0),
        ("50", 4.0),
        ("100", 4.0),
        ("250", 4.0),
        ("500", 5.0),
        ("1000", 5.0),
        ("+Inf", 5.0),
    ]
    .iter()
    .map(|(l, v)| (l.to_string(), *v))
    .collect();
    assert_eq!(le, want);
    assert_eq!(find(&out, "dwcp_latency_milliseconds_sum", None)[0].value, 497.0);
    assert_eq!(find(&out, "dwcp_latency_milliseconds_count", None)[0].value, 5.0);
}

#[test]
fn delta_sums_and_histograms_accumulate_into_cumulative() {
    let mut c = PromConverter::new(PromConfig {
        target_info: false,
        ..Default::default()
    });
    let mut out = vec![];
    for (i, d) in [3, 4, 5].iter().enumerate() {
        let p = point(
            "dwcp.requests",
            "{request}",
            PointValue::Sum {
                value: Number::Int(*d),
                temporality: Temporality::Delta,
                monotonic: true,
            },
            1000 * (i as u64 + 1),
        );
        c.convert(&[p], &mut out);
    }
    let v: Vec<f64> = find(&out, "dwcp_requests_total", None)
        .iter()
        .map(|s| s.value)
        .collect();
    assert_eq!(v, vec![3.0, 7.0, 12.0]);
    // Going back in time for a delta series is refused and counted.
    let old = point(
        "dwcp.requests",
        "{request}",
        PointValue::Sum {
            value: Number::Int(1),
            temporality: Temporality::Delta,
            monotonic: true,
        },
        500,
    );
    out.clear();
    c.convert(&[old], &mut out);
    assert!(find(&out, "dwcp_requests_total", None).is_empty());
    assert_eq!(c.stats().delta_out_of_order, 1);

    out.clear();
    for (i, counts) in [vec![1, 0, 2], vec![0, 3, 1]].into_iter().enumerate() {
        let n: u64 = counts.iter().sum();
        let p = point(
            "lat",
            "s",
            PointValue::Histogram {
                count: n,
                sum: Some(1.0),
                min: None,
                max: None,
                bounds: vec![1.0, 2.0],
                bucket_counts: counts,
                temporality: Temporality::Delta,
            },
            1000 * (i as u64 + 1),
        );
        c.convert(&[p], &mut out);
    }
    let last: Vec<f64> = find(&out, "lat_seconds_bucket", None)
        .iter()
        .skip(3)
        .map(|s| s.value)
        .collect();
    assert_eq!(last, vec![1.0, 4.0, 7.0]);
    assert_eq!(find(&out, "lat_seconds_count", None)[1].value, 7.0);
    assert_eq!(find(&out, "lat_seconds_sum", None)[1].value, 2.0);
}

#[test]
fn non_monotonic_sum_is_a_gauge_and_no_value_is_a_stale_marker() {
    let mut c = PromConverter::new(PromConfig {
        target_info: false,
        ..Default::default()
    });
    let mut out = vec![];
    let mut p = point(
        "dwcp.active_connections",
        "{connection}",
        PointValue::Sum {
            value: Number::Int(5),
            temporality: Temporality::Cumulative,
            monotonic: false,
        },
        1000,
    );
    c.convert(std::slice::from_ref(&p), &mut out);
    assert_eq!(find(&out, "dwcp_active_connections", None)[0].value, 5.0);
    p.flags = 1;
    out.clear();
    c.convert(&[p], &mut out);
    assert_eq!(
        find(&out, "dwcp_active_connections", None)[0].value.to_bits(),
        STALE_NAN_BITS
    );
}

#[test]
fn exponential_histogram_to_classic_buckets() {
    // Scale 0: base 2, bucket i holds (2^i, 2^(i+1)]. Values 1.5 (i=0), 2.5 (i=1), 30 (i=4).
    let positive = ExpBuckets {
        offset: 0,
        bucket_counts: vec![1, 1, 0, 0, 1],
    };
    let counts = exp_to_classic(0, 2, &positive, &ExpBuckets::default(), &[1.0, 2.0, 5.0, 50.0]);
    // (0,2] ← bucket 0 and the zero count; (2,4] → le=5; (16,32] → le=50.
    assert_eq!(counts, vec![2, 1, 1, 1, 0]);
}

#[test]
fn summary_becomes_quantile_series() {
    let mut c = PromConverter::new(PromConfig {
        target_info: false,
        ..Default::default()
    });
    let mut out = vec![];
    let p = point(
        "rpc.duration",
        "ms",
        PointValue::Summary {
            count: 10,
            sum: 55.0,
            quantiles: vec![(0.5, 5.0), (0.99, 9.9)],
        },
        1,
    );
    c.convert(&[p], &mut out);
    assert_eq!(
        find(&out, "rpc_duration_milliseconds", Some(("quantile", "0.99")))[0].value,
        9.9
    );
    assert_eq!(find(&out, "rpc_duration_milliseconds_count", None)[0].value, 10.0);
}

/// Regression: an Fx-style multiply-rotate hash collided on about 1.3 % of a million label sets
/// that differ in one value, which made the cardinality guard merge distinct series.
#[test]
fn series_hash_does_not_collide_on_near_identical_label_sets() {
    let mut seen = std::collections::HashSet::new();
    for i in 0..200_000 {
        let labels = labels_of([
            ("__name__", "dwcp_tunnel_bytes".to_string()),
            ("peer", format!("peer-{}", i % 1000)),
            ("tunnel", format!("tunnel-{i}")),
            ("region", "us-east-1".to_string()),
        ]);
        assert!(seen.insert(series_hash(&labels)), "collision at {i}");
    }
}

/// The converter adds the name's and `le`'s label hashes to the point's; every sample's hash
/// must be what the labels alone give, also when an attribute has the name of a label the
/// conversion sets (it is replaced), and whatever the labels' order.
#[test]
fn converted_samples_carry_the_hash_their_labels_give() {
    let mut c = PromConverter::new(PromConfig::default());
    let histogram = two_bound_histogram();
    let mut odd = point("dwcp.latency", "ms", histogram.clone(), 1000);
    odd.attributes.0.push(kv("le", "7"));
    odd.attributes.0.push(kv("__name__", "x"));
    let gauge = PointValue::Gauge {
        value: Number::Double(1.5),
    };
    let points = [
        point("dwcp.latency", "ms", histogram, 1000),
        odd,
        point("dwcp.queue", "1", gauge, 1000),
    ];
    let mut out = vec![];
    c.convert(&points, &mut out);
    assert!(out.len() >= 14, "{out:?}");
    for s in &out {
        assert_eq!(s.series_hash(), series_hash(&s.labels), "{s:?}");
        let mut reversed = s.labels.to_vec();
        reversed.reverse();
        assert_eq!(series_hash(&reversed), series_hash(&s.labels));
    }
    // The odd point's buckets have the bounds as `le` (the attribute replaced), one name.
    let odd_buckets: Vec<_> = find(
        &out,
        "dwcp_latency_milliseconds_bucket",
        Some(("operation", "migration")),
    )
    .into_iter()
    .filter_map(|s| s.label("le"))
    .collect();
    assert_eq!(odd_buckets, ["5", "50", "+Inf", "5", "50", "+Inf"]);
}

/// A cumulative histogram with bounds 5 and 50 (three buckets).
fn two_bound_histogram() -> PointValue {
    PointValue::Histogram {
        count: 3,
        sum: Some(30.0),
        min: None,
        max: None,
        bounds: vec![5.0, 50.0],
        bucket_counts: vec![1, 2, 0],
        temporality: Temporality::Cumulative,
    }
}

#[test]
fn the_samples_of_one_series_share_its_label_set_until_it_goes_unused_for_a_generation() {
    let histogram = two_bound_histogram();
    let gauge = || PointValue::Gauge {
        value: Number::Double(1.5),
    };
    let mut c = PromConverter::new(PromConfig::default());
    let mut first = vec![];
    c.convert(
        &[
            point("dwcp.queue", "1", gauge(), 1000),
            point("dwcp.latency", "ms", histogram.clone(), 1000),
        ],
        &mut first,
    );
    // target_info of each point's resource (two resources alike), the gauge, three buckets,
    // _sum, _count: six sets cached (target_info, written once per resource and call, is not).
    assert_eq!(first.len(), 8, "{first:#?}");
    assert_eq!(c.label_sets(), 6);
    let mut second = vec![];
    c.convert(
        &[
            point("dwcp.queue", "1", gauge(), 2000),
            point("dwcp.latency", "ms", histogram.clone(), 2000),
        ],
        &mut second,
    );
    assert_eq!(c.label_sets(), 6);
    // The same labels as a converter that never saw the series gives, in the same allocation
    // as the first samples of each series.
    let mut fresh = vec![];
    PromConverter::new(PromConfig::default()).convert(
        &[
            point("dwcp.queue", "1", gauge(), 2000),
            point("dwcp.latency", "ms", histogram, 2000),
        ],
        &mut fresh,
    );
    assert_eq!(second, fresh);
    for (a, b) in first.iter().zip(&second) {
        assert_eq!(a.series_hash(), b.series_hash());
        if a.name() != "target_info" {
            assert!(Arc::ptr_eq(&a.labels, &b.labels), "{:?}", b.labels);
        }
    }

    // A generation is 300 s of event time. The queue is seen in each; the latency series are not.
    let queue = first[1].labels.clone();
    assert_eq!(first[1].name(), "dwcp_queue_ratio");
    let mut out = vec![];
    c.convert(&[point("dwcp.queue", "1", gauge(), 301_000)], &mut out);
    assert_eq!(c.label_sets(), 6, "moved to the previous generation, not forgotten");
    out.clear();
    c.convert(&[point("dwcp.queue", "1", gauge(), 602_000)], &mut out);
    assert_eq!(c.label_sets(), 1, "the queue only");
    assert_eq!(out.len(), 2);
    assert!(out.iter().any(|s| Arc::ptr_eq(&s.labels, &queue)));
}

/// Points of one series (and of series that differ from it in one thing each) through one
/// converter, so that each finds the cache's entry of the one before: every sample is what a
/// converter that never saw the series makes.
#[test]
fn a_cached_series_gives_what_a_fresh_conversion_gives_whatever_changed_since() {
    let hist = |bounds: Vec<f64>, counts: Vec<u64>| PointValue::Histogram {
        count: counts.iter().sum(),
        sum: Some(9.0),
        min: None,
        max: None,
        bounds,
        bucket_counts: counts,
        temporality: Temporality::Cumulative,
    };
    let summary = |qs: &[f64]| PointValue::Summary {
        count: 4,
        sum: 10.0,
        quantiles: qs.iter().map(|q| (*q, q * 10.0)).collect(),
    };
    let with_attrs = |mut p: MetricPoint, attrs: Vec<KeyValue>| {
        p.attributes = Attributes(attrs);
        p
    };
    let mut in_region = point("lat", "s", hist(vec![1.0], vec![1, 2]), 9000);
    in_region.origin.region = "eu-west-1".into();
    let mut other_scope = point("lat", "s", hist(vec![1.0], vec![1, 2]), 9000);
    other_scope.origin.scope = Arc::new(Scope {
        name: "other".into(),
        version: String::new(),
        attributes: Attributes::default(),
    });
    let gauge = |v: f64| PointValue::Gauge {
        value: Number::Double(v),
    };
    let steps: Vec<MetricPoint> = vec![
        point("lat", "s", hist(vec![1.0, 2.0], vec![1, 2, 3]), 1000),
        point("lat", "s", hist(vec![1.0, 2.0], vec![2, 2, 3]), 2000),
        // Other bounds, then no +Inf bucket in the data, then no buckets at all.
        point("lat", "s", hist(vec![1.0, 5.0], vec![2, 2, 3]), 3000),
        point("lat", "s", hist(vec![1.0, 5.0], vec![2, 2]), 4000),
        point("lat", "s", hist(vec![], vec![]), 5000),
        point("lat", "s", hist(vec![1.0, 5.0], vec![3, 2, 3]), 6000),
        // Another unit, type, attribute value, attribute order, region, scope.
        point("lat", "ms", hist(vec![1.0, 5.0], vec![3, 2, 3]), 7000),
        point("lat", "s", summary(&[0.5, 0.9]), 7000),
        point("lat", "s", summary(&[0.5, 0.99]), 8000),
        with_attrs(
            point("lat", "s", hist(vec![1.0], vec![1, 2]), 9000),
            vec![kv("operation", "sync")],
        ),
        with_attrs(
            point("lat", "s", hist(vec![1.0], vec![1, 2]), 9000),
            vec![kv("b", "2"), kv("a", "1")],
        ),
        with_attrs(
            point("lat", "s", hist(vec![1.0], vec![1, 3]), 10_000),
            vec![kv("a", "1"), kv("b", "2")],
        ),
        in_region,
        other_scope,
        // Attributes sanitized to a sample's own labels; an empty and a non-string value.
        with_attrs(
            point("lat", "s", hist(vec![1.0], vec![1, 2]), 11_000),
            vec![kv("le", "x"), kv("__name__", "y")],
        ),
        with_attrs(
            point("lat", "s", hist(vec![1.0], vec![1, 2]), 12_000),
            vec![kv("le", "x"), kv("__name__", "y")],
        ),
        // A key longer than a one-byte length.
        with_attrs(point("up", "", gauge(1.0), 11_000), vec![kv(&"k".repeat(200), "v")]),
        with_attrs(point("up", "", gauge(1.0), 11_000), vec![kv(&"k".repeat(200), "w")]),
        with_attrs(
            point("up", "", gauge(1.0), 12_000),
            vec![
                KeyValue {
                    key: "n".into(),
                    value: AnyValue::Int(7),
                },
                KeyValue {
                    key: "e".into(),
                    value: AnyValue::Empty,
                },
            ],
        ),
        with_attrs(
            point("up", "", gauge(0.0), 13_000),
            vec![
                KeyValue {
                    key: "n".into(),
                    value: AnyValue::Int(8),
                },
                KeyValue {
                    key: "e".into(),
                    value: AnyValue::Empty,
                },
            ],
        ),
    ];
    let config = PromConfig {
        target_info: false,
        ..Default::default()
    };
    let mut c = PromConverter::new(config.clone());
    for (i, p) in steps.iter().enumerate() {
        // Twice: the second time the point finds its own entry.
        for _ in 0..2 {
            let mut got = vec![];
            c.convert(std::slice::from_ref(p), &mut got);
            let mut want = vec![];
            PromConverter::new(config.clone()).convert(std::slice::from_ref(p), &mut want);
            assert!(!want.is_empty());
            assert_eq!(got, want, "step {i}");
            for (g, w) in got.iter().zip(&want) {
                assert_eq!(g.series_hash(), w.series_hash(), "step {i}");
                assert_eq!(g.series_hash(), series_hash(&g.labels), "step {i}");
            }
        }
    }
    assert_eq!(c.stats().invalid_points, 0);
}

#[test]
fn an_entry_is_taken_only_by_a_point_it_matches() {
    let mut cache = PointCache::default();
    let origin: Arc<[Label]> = labels_of([("job", "a")]).into();
    let entry = |raw: &[u8], origin: &Arc<[Label]>| {
        Box::new(PointSeries {
            raw: raw.into(),
            origin: origin.clone(),
            names: Arc::new(MetricNames {
                name: "m".into(),
                unit: "s".into(),
                kind: PromKind::Gauge,
                base: "m_seconds".into(),
                bucket: "m_seconds_bucket".into(),
                sum: "m_seconds_sum".into(),
                count: "m_seconds_count".into(),
            }),
            delta_key: 1,
            sets: vec![(label_set_of([("__name__", "m_seconds"), ("job", "a")]), 5)].into(),
        })
    };
    cache.keep(42, entry(b"x", &origin));
    // One key, something else different each time: not taken, and still there.
    let other: Arc<[Label]> = labels_of([("job", "b")]).into();
    assert!(cache.take(42, "m", "s", b"y", &origin).is_none());
    assert!(cache.take(42, "n", "s", b"x", &origin).is_none());
    assert!(cache.take(42, "m", "ms", b"x", &origin).is_none());
    assert!(cache.take(42, "m", "s", b"x", &other).is_none());
    assert!(cache.take(42, "m", "s", b"x", &origin[..0]).is_none());
    assert!(cache.take(43, "m", "s", b"x", &origin).is_none());
    assert_eq!(cache.sets(), 1);
    // Equal labels in other allocations match.
    let copy: Arc<[Label]> = labels_of([("job", "a")]).into();
    let taken = cache.take(42, "m", "s", b"x", &copy).expect("matches");
    assert_eq!(taken.delta_key, 1);
    assert_eq!(cache.sets(), 0);
    assert!(cache.take(42, "m", "s", b"x", &copy).is_none(), "taken out");
}

#[test]
fn entries_taken_back_from_the_previous_generation_count_against_the_limit() {
    let mut c = PromConverter::new(PromConfig {
        target_info: false,
        ..Default::default()
    });
    c.points.max = 2;
    let gauge = |i: usize| {
        let mut p = point("g", "", PointValue::Gauge { value: Number::Int(1) }, 1000);
        p.attributes = Attributes(vec![kv("id", &i.to_string())]);
        p
    };
    let mut out = vec![];
    c.convert(&[gauge(0), gauge(1)], &mut out);
    let a = out[0].labels.clone();
    // Full: a third series begins a generation; 0 and 1 are the previous one.
    c.convert(&[gauge(2)], &mut out);
    assert_eq!((c.points.current.len(), c.points.previous.len()), (1, 2));
    // 0 comes back, the same allocation; then 1 finds the generation full again.
    out.clear();
    c.convert(&[gauge(0)], &mut out);
    assert!(Arc::ptr_eq(&a, &out[0].labels));
    c.convert(&[gauge(1)], &mut out);
    assert_eq!((c.points.current.len(), c.points.previous.len()), (1, 2));
    for i in 0..100 {
        c.convert(&[gauge(i % 7)], &mut out);
        assert!(c.label_sets() <= 4, "{} sets", c.label_sets());
    }
    // A histogram point of 5 samples counts 5 against the limit.
    c.points.max = 20;
    let before = c.points.current_sets;
    c.convert(&[point("h", "", two_bound_histogram(), 1000)], &mut out);
    assert_eq!(c.points.current_sets, before + 5);
}

#[test]
fn the_label_set_limit_follows_the_guard_with_a_floor() {
    let mut c = PromConverter::new(PromConfig::default());
    assert_eq!(c.points.max, MAX_LABEL_SETS);
    c.limit_label_sets(5_000);
    assert_eq!(c.points.max, 5_000);
    c.limit_label_sets(10);
    assert_eq!(c.points.max, 1_024);
}

#[test]
fn delta_totals_move_with_their_partition_and_a_replayed_point_is_sent_again_not_added() {
    let config = PromConfig {
        target_info: false,
        ..Default::default()
    };
    let sum = |d: i64, t: u64| {
        point(
            "dwcp.requests",
            "{request}",
            PointValue::Sum {
                value: Number::Int(d),
                temporality: Temporality::Delta,
                monotonic: true,
            },
            t,
        )
    };
    let hist = |counts: Vec<u64>, t: u64| {
        point(
            "lat",
            "s",
            PointValue::Histogram {
                count: counts.iter().sum(),
                sum: Some(1.5),
                min: None,
                max: None,
                bounds: vec![1.0, 2.0],
                bucket_counts: counts,
                temporality: Temporality::Delta,
            },
            t,
        )
    };
    let points: Vec<MetricPoint> = (1..=6u64)
        .flat_map(|i| {
            [
                sum(i64::try_from(i).unwrap_or(0), 1000 * i),
                hist(vec![i, 1, 2], 1000 * i),
            ]
        })
        .collect();
    let render = |v: &[Sample]| {
        v.iter()
            .map(|s| format!("{:?} {} {}", s.labels, s.timestamp_ms, s.value))
            .collect::<Vec<_>>()
    };
    let mut one = PromConverter::new(config.clone());
    let mut want = vec![];
    one.convert_from(&points, Some(3), &mut want);

    // The first three steps on one worker; the state of partition 3 moves through JSON; the
    // new owner reads again from the third step (its commit was behind the checkpoint).
    let mut old = PromConverter::new(config.clone());
    let mut got = vec![];
    old.convert_from(&points[..6], Some(3), &mut got);
    assert_eq!(old.snapshot_partition(7).series(), 0, "another partition holds nothing");
    let json = serde_json::to_vec(&old.snapshot_partition(3)).expect("serializes");
    let state: DeltaPartState = serde_json::from_slice(&json).expect("deserializes");
    assert_eq!(state.series(), 2);
    old.drop_partition(3);
    assert_eq!(old.delta_series(), 0, "the old owner forgets the partition");
    let mut new = PromConverter::new(config);
    new.restore_partition(3, state);
    let mut replayed = vec![];
    new.convert_from(&points[2..], Some(3), &mut replayed);
    // The second step is older than the state: refused; the third is its last point: sent
    // again with the same totals; the rest continue the totals.
    assert_eq!(new.stats().delta_out_of_order, 2);
    assert_eq!(new.stats().delta_duplicates, 2);
    let third: Vec<String> = render(&got).into_iter().filter(|s| s.contains(" 3000 ")).collect();
    let again: Vec<String> = render(&replayed).into_iter().filter(|s| s.contains(" 3000 ")).collect();
    assert_eq!(again, third, "the last point's totals again");
    got.extend(replayed.into_iter().filter(|s| s.timestamp_ms > 3000));
    assert_eq!(render(&got), render(&want));
    let totals: Vec<f64> = find(&got, "dwcp_requests_total", None)
        .iter()
        .map(|s| s.value)
        .collect();
    assert_eq!(totals, vec![1.0, 3.0, 6.0, 10.0, 15.0, 21.0]);
}

/// A delta histogram's replay (a point at its series' last time) sends the series' totals,
/// whose shape can differ from the point's (another order of its attributes, bounds that
/// changed): those samples are neither taken from nor kept in the cache. Every point is
/// converted as a converter with nothing cached converts it, whatever came before.
#[test]
fn a_delta_histogram_replay_of_another_shape_neither_takes_nor_leaves_cached_samples() {
    let hist = |bounds: Vec<f64>, counts: Vec<u64>, t: u64, attrs: &[(&str, &str)], flags: u32| {
        let mut p = point(
            "h",
            "",
            PointValue::Histogram {
                count: counts.iter().sum(),
                sum: Some(10.0),
                min: None,
                max: None,
                bounds,
                bucket_counts: counts,
                temporality: Temporality::Delta,
            },
            t,
        );
        p.attributes = Attributes(attrs.iter().map(|(k, v)| kv(k, v)).collect());
        p.flags = flags;
        p
    };
    let ab = [("a", "1"), ("b", "2")];
    let ba = [("b", "2"), ("a", "1")];
    let steps = vec![
        hist(vec![1.0, 2.0], vec![1, 1, 1], 1000, &ab, 0),
        // The same series (attributes in another order) again at 1000 with other bounds: the
        // totals' three buckets are sent, not this point's two.
        hist(vec![1.0], vec![1, 1], 1000, &ba, 0),
        hist(vec![1.0], vec![4, 5], 2000, &ba, 0),
        hist(vec![1.0], vec![4, 5], 3000, &ba, 0),
        // A cached point whose replay finds totals of another shape.
        hist(vec![1.0, 2.0], vec![1, 1, 1], 4000, &ab, 0),
        hist(vec![1.0], vec![1, 1], 4000, &ba, 0),
        hist(vec![1.0], vec![1, 1], 5000, &ba, 0),
        hist(vec![1.0], vec![1, 1], 5000, &ba, 0),
        hist(vec![1.0], vec![2, 2], 6000, &ba, 1),
        hist(vec![1.0], vec![2, 2], 7000, &ba, 0),
    ];
    let config = PromConfig {
        target_info: false,
        ..Default::default()
    };
    let (mut cached, mut uncached) = (PromConverter::new(config.clone()), PromConverter::new(config));
    for (i, p) in steps.iter().enumerate() {
        let mut got = vec![];
        cached.convert(std::slice::from_ref(p), &mut got);
        uncached.points = PointCache::default();
        let mut want = vec![];
        uncached.convert(std::slice::from_ref(p), &mut want);
        // Stale markers are NaN: compared by their bits.
        let bits = |v: &[Sample]| {
            v.iter()
                .map(|s| (s.labels.clone(), s.timestamp_ms, s.value.to_bits(), s.series_hash()))
                .collect::<Vec<_>>()
        };
        assert_eq!(bits(&got), bits(&want), "step {i}");
    }
    assert_eq!(cached.stats(), uncached.stats());
    assert_eq!(cached.stats().invalid_points, 0);
    // The replays: step 1, step 5, step 7.
    assert_eq!(cached.stats().delta_duplicates, 3);
}
