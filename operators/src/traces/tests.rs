use super::*;
use dwcp_schemas::model::{Attributes, KeyValue, Origin, Records, Resource, Scope};
use dwcp_schemas::{decode, Encoding, RegionContext, Signal};

const MS: u64 = 1_000_000;
const S: u64 = 1_000_000_000;

fn fixture_spans(region: &str) -> Vec<Span> {
    let path = std::path::PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join(format!("../../shared/fixtures/otlp/traces-{region}.json"));
    let bytes = std::fs::read(path).expect("fixture");
    match decode(Signal::Traces, Encoding::OtlpJson, &bytes, &RegionContext::default())
        .expect("decodes")
        .records
    {
        Records::Traces(s) => s,
        _ => unreachable!("traces"),
    }
}

fn traces(out: &[TraceOutput]) -> Vec<&StitchedTrace> {
    out.iter()
        .filter_map(|o| match o {
            TraceOutput::Trace(t) => Some(t),
            TraceOutput::LateSpan { .. } => None,
        })
        .collect()
}

#[test]
fn fixtures_of_three_regions_out_of_order_stitch_into_the_manifest_traces() {
    let mut op = TraceOperator::new(TraceConfig::default());
    let mut out = vec![];
    // Out of order: eu-west-1 first, one span at a time, in reverse, with event-time gaps.
    let mut arrivals: Vec<Span> = Vec::new();
    for region in ["eu-west-1", "us-east-1", "us-west-1"] {
        let mut s = fixture_spans(region);
        s.reverse();
        arrivals.extend(s);
    }
    let newest = arrivals.iter().map(|s| s.end_time_unix_nano).max().expect("spans");
    for (i, s) in arrivals.iter().enumerate() {
        op.process(std::slice::from_ref(s), newest, &mut out);
        // Time passes between arrivals, but less than decision_wait: nothing decided yet.
        op.on_watermark(newest + (i as u64 + 1) * S, &mut out);
    }
    assert!(out.is_empty(), "decided too early");
    op.on_watermark(newest + 10 * S, &mut out);
    let ts = traces(&out);
    assert_eq!(ts.len(), 3);

    let m = ts
        .iter()
        .find(|t| t.trace_id.to_string() == "a6db1ee824087a26a62fb4450b53028d")
        .expect("migration");
    assert_eq!(m.spans.len(), 5);
    let regions: Vec<&str> = m.regions.iter().map(|r| &**r).collect();
    assert_eq!(regions, ["eu-west-1", "us-east-1", "us-west-1"]);
    assert_eq!(m.orphans, 0, "parent links intact");
    assert_eq!(m.root_operation, "vm-migration");
    assert!(!m.error);
    let mut hops: Vec<(String, String)> = m.hops.iter().map(|h| (h.from.to_string(), h.to.to_string())).collect();
    hops.sort();
    assert_eq!(
        hops,
        [
            ("us-east-1".to_string(), "eu-west-1".to_string()),
            ("us-west-1".to_string(), "us-east-1".to_string())
        ]
    );
    for h in &m.hops {
        let client = m.spans.iter().find(|s| s.span_id == h.client_span).expect("client");
        let server = m.spans.iter().find(|s| s.span_id == h.server_span).expect("server");
        assert_eq!(h.latency_ns, client.duration_nanos() - server.duration_nanos());
        assert_eq!(server.parent_span_id, Some(client.span_id));
    }
    let e = ts
        .iter()
        .find(|t| t.trace_id.to_string() == "3d16fccec5105704ec2cccff451360e6")
        .expect("error trace");
    assert!(e.error);
    let slow = ts
        .iter()
        .find(|t| t.trace_id.to_string() == "99409fa4ba51c3e13297cac779af8385")
        .expect("slow trace");
    assert!(slow.duration_ns >= 120 * MS);
    assert!(ts.iter().all(|t| !t.evicted_early));
}

fn span(trace: u64, i: u64, start: u64, dur_ms: u64, error: bool, attrs: Vec<KeyValue>) -> Span {
    let mut tid = [0u8; 16];
    tid[..8].copy_from_slice(&trace.to_be_bytes());
    tid[15] = 1;
    Span {
        origin: Origin {
            region: "us-east-1".into(),
            resource: Arc::new(Resource::default()),
            scope: Arc::new(Scope::default()),
        },
        trace_id: TraceId(tid),
        span_id: SpanId((i + 1).to_be_bytes()),
        parent_span_id: if i == 0 { None } else { Some(SpanId(1u64.to_be_bytes())) },
        trace_state: String::new(),
        name: format!("op{i}"),
        kind: SpanKind::Server,
        start_time_unix_nano: start,
        end_time_unix_nano: start + dur_ms * MS,
        attributes: Attributes(attrs),
        events: vec![],
        links: vec![],
        status_code: if error { StatusCode::Error } else { StatusCode::Unset },
        status_message: String::new(),
    }
}

/// Decides one trace of `spans` under `policies`.
fn decide(policies: Vec<Policy>, spans: Vec<Span>) -> Decision {
    let mut op = TraceOperator::new(TraceConfig {
        policies,
        ..Default::default()
    });
    let mut out = vec![];
    op.process(&spans, 0, &mut out);
    op.on_watermark(u64::MAX / 2, &mut out);
    traces(&out)[0].decision
}

fn kv(k: &str, v: AnyValue) -> KeyValue {
    KeyValue {
        key: k.into(),
        value: v,
    }
}

#[test]
fn each_policy_keeps_and_drops_what_it_should() {
    use Decision::{NotSampled as N, Sampled as Y};
    let t0 = 100 * S;
    let plain = || vec![span(1, 0, t0, 5, false, vec![])];
    let err = || vec![span(1, 0, t0, 5, true, vec![])];
    let slow = || vec![span(1, 0, t0, 700, false, vec![])];
    let attr = |v: &str| {
        vec![span(
            1,
            0,
            t0,
            5,
            false,
            vec![
                kv("peer.region", AnyValue::String(v.into())),
                kv("bytes", AnyValue::Int(4096)),
            ],
        )]
    };

    assert_eq!(decide(vec![Policy::AlwaysSample], plain()), Y);
    let status = || Policy::StatusCode {
        status_codes: vec!["ERROR".into()],
    };
    assert_eq!(decide(vec![status()], err()), Y);
    assert_eq!(decide(vec![status()], plain()), N);
    let latency = |up| Policy::Latency {
        threshold_ms: 500,
        upper_threshold_ms: up,
    };
    assert_eq!(decide(vec![latency(None)], slow()), Y);
    assert_eq!(decide(vec![latency(None)], plain()), N);
    assert_eq!(decide(vec![latency(Some(600))], slow()), N, "above the upper threshold");
    let string = |regex, invert, v: &str| Policy::StringAttribute {
        key: "peer.region".into(),
        values: vec![v.into()],
        enabled_regex_matching: regex,
        invert_match: invert,
    };
    assert_eq!(decide(vec![string(false, false, "eu-west-1")], attr("eu-west-1")), Y);
    assert_eq!(decide(vec![string(false, false, "eu-west-1")], attr("us-west-1")), N);
    assert_eq!(decide(vec![string(true, false, "^eu-.*")], attr("eu-central-1")), Y);
    assert_eq!(
        decide(vec![string(false, true, "eu-west-1")], attr("us-west-1")),
        Y,
        "inverted"
    );
    let numeric = |lo, hi| Policy::NumericAttribute {
        key: "bytes".into(),
        min_value: lo,
        max_value: hi,
    };
    assert_eq!(decide(vec![numeric(1000.0, 5000.0)], attr("x")), Y);
    assert_eq!(decide(vec![numeric(5000.0, 9000.0)], attr("x")), N);
    let many: Vec<Span> = (0..5).map(|i| span(1, i, t0, 5, false, vec![])).collect();
    assert_eq!(
        decide(
            vec![Policy::SpanCount {
                min_spans: 3,
                max_spans: None
            }],
            many.clone()
        ),
        Y
    );
    assert_eq!(
        decide(
            vec![Policy::SpanCount {
                min_spans: 3,
                max_spans: Some(4)
            }],
            many
        ),
        N
    );
    assert_eq!(
        decide(
            vec![Policy::And {
                and_sub_policy: vec![status(), latency(None)]
            }],
            err()
        ),
        N,
        "error but fast"
    );
    let slow_err = vec![span(1, 0, t0, 700, true, vec![])];
    assert_eq!(
        decide(
            vec![Policy::And {
                and_sub_policy: vec![status(), latency(None)]
            }],
            slow_err.clone()
        ),
        Y
    );
    // A matching drop wins over every sample.
    assert_eq!(
        decide(
            vec![
                Policy::AlwaysSample,
                Policy::Drop {
                    drop_sub_policy: vec![status()]
                }
            ],
            slow_err
        ),
        N
    );
    assert_eq!(
        decide(
            vec![
                Policy::AlwaysSample,
                Policy::Drop {
                    drop_sub_policy: vec![status()]
                }
            ],
            plain()
        ),
        Y
    );
}

#[test]
fn probabilistic_and_rate_limiting_hold_their_rates() {
    let mut op = TraceOperator::new(TraceConfig {
        policies: vec![Policy::Probabilistic {
            sampling_percentage: 10.0,
            hash_salt: String::new(),
        }],
        ..Default::default()
    });
    let mut out = vec![];
    let spans: Vec<Span> = (0..20_000).map(|t| span(t, 0, 100 * S, 1, false, vec![])).collect();
    op.process(&spans, 0, &mut out);
    op.on_watermark(u64::MAX / 2, &mut out);
    let kept = traces(&out).iter().filter(|t| t.decision == Decision::Sampled).count();
    assert!((1800..=2200).contains(&kept), "10 % of 20,000: {kept}");

    let mut op = TraceOperator::new(TraceConfig {
        policies: vec![Policy::RateLimiting { spans_per_second: 50 }],
        ..Default::default()
    });
    let mut out = vec![];
    // 200 one-span traces all decided within the same second of event time.
    let spans: Vec<Span> = (0..200).map(|t| span(t, 0, 100 * S, 1, false, vec![])).collect();
    op.process(&spans, 0, &mut out);
    op.on_watermark(200 * S, &mut out);
    let kept = traces(&out).iter().filter(|t| t.decision == Decision::Sampled).count();
    assert_eq!(kept, 50);
}

#[test]
fn error_and_slow_traces_survive_one_percent_sampling_combined_with_status_and_latency() {
    let policies = vec![
        Policy::Probabilistic {
            sampling_percentage: 1.0,
            hash_salt: String::new(),
        },
        Policy::StatusCode {
            status_codes: vec!["ERROR".into()],
        },
        Policy::Latency {
            threshold_ms: 100,
            upper_threshold_ms: None,
        },
    ];
    let mut op = TraceOperator::new(TraceConfig {
        policies,
        ..Default::default()
    });
    let mut out = vec![];
    let mut spans: Vec<Span> = (0..5000).map(|t| span(t, 0, 100 * S, 5, false, vec![])).collect();
    spans.push(span(900_001, 0, 100 * S, 5, true, vec![]));
    spans.push(span(900_002, 0, 100 * S, 150, false, vec![]));
    op.process(&spans, 0, &mut out);
    op.on_watermark(u64::MAX / 2, &mut out);
    let ts = traces(&out);
    let find = |id: u64| {
        ts.iter()
            .find(|t| t.trace_id.0[..8] == id.to_be_bytes())
            .expect("trace")
    };
    assert_eq!(find(900_001).decision, Decision::Sampled);
    assert_eq!(find(900_002).decision, Decision::Sampled);
    let kept = ts.iter().filter(|t| t.decision == Decision::Sampled).count();
    assert!(kept < 5002 / 50, "about 1 % plus the two: {kept}");
}

#[test]
fn adaptive_steers_toward_its_target() {
    let mut op = TraceOperator::new(TraceConfig {
        policies: vec![Policy::Adaptive {
            target_traces_per_second: 100.0,
        }],
        ..Default::default()
    });
    let mut out = vec![];
    let mut kept_late = 0;
    // 60 s of 2,000 traces per second of event time.
    for sec in 0..60u64 {
        let spans: Vec<Span> = (0..2000)
            .map(|t| span(sec * 10_000 + t, 0, (100 + sec) * S, 1, false, vec![]))
            .collect();
        op.process(&spans, 0, &mut out);
        out.clear();
        op.on_watermark((100 + sec) * S + 10 * S + 1, &mut out);
        if sec >= 40 {
            kept_late += traces(&out).iter().filter(|t| t.decision == Decision::Sampled).count();
        }
    }
    let per_second = kept_late as f64 / 20.0;
    assert!((70.0..=130.0).contains(&per_second), "{per_second} traces/s kept");
}

#[test]
fn late_spans_follow_the_decision_of_their_trace() {
    let mut op = TraceOperator::new(TraceConfig {
        policies: vec![Policy::StatusCode {
            status_codes: vec!["ERROR".into()],
        }],
        ..Default::default()
    });
    let mut out = vec![];
    op.process(
        &[
            span(7, 0, 100 * S, 5, true, vec![]),
            span(8, 0, 100 * S, 5, false, vec![]),
        ],
        0,
        &mut out,
    );
    op.on_watermark(200 * S, &mut out);
    out.clear();
    op.process(
        &[
            span(7, 1, 100 * S, 5, false, vec![]),
            span(8, 1, 100 * S, 5, false, vec![]),
        ],
        0,
        &mut out,
    );
    let d: Vec<Decision> = out
        .iter()
        .map(|o| match o {
            TraceOutput::LateSpan { decision, .. } => *decision,
            TraceOutput::Trace(_) => panic!("a new trace instead of a late span"),
        })
        .collect();
    assert_eq!(d, [Decision::Sampled, Decision::NotSampled]);
    assert_eq!(op.stats().late_spans, 2);
}

#[test]
fn a_flood_of_a_million_traces_stays_within_ten_thousand() {
    let mut op = TraceOperator::new(TraceConfig {
        max_traces: 10_000,
        decision_cache_size: 10_000,
        ..Default::default()
    });
    let mut out = Vec::new();
    let mut max_in_flight = 0;
    for chunk in 0..100u64 {
        let spans: Vec<Span> = (0..10_000)
            .map(|t| span(chunk * 10_000 + t, 0, 100 * S, 1, false, vec![]))
            .collect();
        op.process(&spans, 0, &mut out);
        out.clear();
        max_in_flight = max_in_flight.max(op.traces_in_flight());
    }
    assert!(max_in_flight <= 10_000);
    assert_eq!(op.stats().evicted_early, 1_000_000 - 10_000);
    assert_eq!(op.stats().traces_decided, 1_000_000 - 10_000);
    // The oldest go first: what is left is the newest 10,000.
    op.on_watermark(u64::MAX / 2, &mut out);
    let left: Vec<u64> = traces(&out)
        .iter()
        .map(|t| u64::from_be_bytes(t.trace_id.0[..8].try_into().expect("8")))
        .collect();
    assert_eq!(left.iter().min(), Some(&990_000));
}

#[test]
fn a_trace_reaching_its_span_bound_is_decided_at_once() {
    let mut op = TraceOperator::new(TraceConfig {
        max_spans_per_trace: 100,
        ..Default::default()
    });
    let mut out = vec![];
    let spans: Vec<Span> = (0..150).map(|i| span(3, i, 100 * S, 1, false, vec![])).collect();
    op.process(&spans, 0, &mut out);
    let ts = traces(&out);
    assert_eq!(ts.len(), 1);
    assert_eq!(ts[0].spans.len(), 100);
    assert!(ts[0].evicted_early);
    assert_eq!(op.stats().late_spans, 50, "the rest follow the decision");
}
