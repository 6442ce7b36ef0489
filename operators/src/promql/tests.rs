use super::*;

fn series(name: &str, labels: &[(&str, &str)], samples: &[(i64, f64)]) -> Series {
    let mut l: Labels = labels
        .iter()
        .map(|(k, v)| ((*k).to_string(), (*v).to_string()))
        .collect();
    l.insert("__name__".into(), name.into());
    Series {
        labels: l.into(),
        samples: samples.to_vec(),
    }
}

#[test]
fn unsupported_constructs_are_load_time_errors_naming_them() {
    assert_eq!(
        parse("limitk(2, x)").expect_err("limitk"),
        "unsupported aggregation limitk"
    );
    assert_eq!(parse("sin(x)").expect_err("sin"), "unsupported function sin");
    assert_eq!(
        parse("histogram_count(x)").expect_err("x"),
        "unsupported function histogram_count"
    );
    assert!(parse("x +").is_err());
    assert!(parse(r#"histogram_quantile(0.95, sum by (le) (rate(x_bucket[5m]))) > 0.1"#).is_ok());
}

#[test]
fn the_design_rule_over_buckets_gives_the_interpolated_p95() {
    // Two regions' latency buckets, 1 s apart for 10 minutes: region a spends 90 % under 50 ms.
    let mut data = Vec::new();
    for (region, under_50) in [("a", 0.9), ("b", 0.99)] {
        for (le, share) in [("50", under_50), ("250", 1.0), ("+Inf", 1.0)] {
            let samples: Vec<(i64, f64)> = (0..=600).map(|s| (s * 1000, s as f64 * 100.0 * share)).collect();
            data.push(series(
                "dwcp_latency_bucket",
                &[("region", region), ("le", le)],
                &samples,
            ));
        }
    }
    let e = parse("histogram_quantile(0.95, rate(dwcp_latency_bucket[5m])) > 100").expect("parse");
    let v = Engine::new(&data).instant(&e, 600_000).expect("eval");
    let Value::Vector(v) = v else { panic!("vector") };
    // a: rank 95 of 100 falls in (50, 250] with 10 of 100 there: 50 + 200 × 5/10 = 150 > 100.
    // b: rank 95 is under 50 ms: 50 × 95/99 < 100, filtered out.
    assert_eq!(v.len(), 1);
    assert_eq!(v[0].labels.get("region").map(String::as_str), Some("a"));
    assert!((v[0].value - 150.0).abs() < 1e-9, "{}", v[0].value);
    assert!(!v[0].labels.contains_key("__name__"));
}

#[test]
fn sample_search_agrees_with_partition_point() {
    for n in 0..40usize {
        // Evenly spaced, then with a gap in the middle (the guess is off and the gallop corrects it).
        let mut samples: Vec<(i64, f64)> = (0..n).map(|i| (i64::try_from(i).unwrap_or(0) * 10, 0.0)).collect();
        if n % 2 == 1 {
            for s in samples.iter_mut().skip(n / 3) {
                s.0 += 1000;
            }
        }
        for t in -5..(i64::try_from(n).unwrap_or(0) * 10 + 1005) {
            let want = samples.partition_point(|(ts, _)| *ts <= t);
            assert_eq!(super::eval::upto(&samples, t), want, "n={n} t={t}");
        }
    }
}

/// Series with what makes windows differ: uneven and missing samples, counter resets, stale
/// markers, NaN and infinite values, series that start late or end early, several names.
fn awkward_series() -> Vec<Series> {
    let mut out = Vec::new();
    let mut seed = 0x2545_f491_4f6c_dd1d_u64;
    let mut rand = move || {
        seed ^= seed << 13;
        seed ^= seed >> 7;
        seed ^= seed << 17;
        seed
    };
    for name in ["a_total", "b"] {
        for region in ["r1", "r2", "r3"] {
            for instance in 0..7 {
                let instance = instance.to_string();
                let mut samples = Vec::new();
                let (from, to) = (
                    i64::from(rand() % 4 == 0) * 900_000,
                    3_600_000 - i64::from(rand() % 5 == 0) * 1_200_000,
                );
                let mut t = from + i64::try_from(rand() % 15_000).unwrap_or(0);
                let mut v = 0.0;
                while t < to {
                    v += f64::from(u32::try_from(rand() % 100).unwrap_or(0));
                    let x = match rand() % 97 {
                        0 => {
                            v = 0.0;
                            v
                        }
                        1 => crate::prom::stale_nan(),
                        2 => f64::NAN,
                        3 if name == "b" => f64::INFINITY,
                        _ => v,
                    };
                    samples.push((t, x));
                    // Mostly 15 s apart, sometimes a gap of minutes.
                    t += if rand() % 50 == 0 {
                        400_000
                    } else {
                        15_000 + i64::try_from(rand() % 2_000).unwrap_or(0)
                    };
                }
                out.push(series(name, &[("region", region), ("instance", &instance)], &samples));
            }
        }
    }
    out
}

/// Over [`awkward_series`], in both window conventions and at several ranges, `q` evaluated by
/// [`Engine::range`] (series by series where it can) equals the step-by-step evaluation bit for
/// bit, output order included; `whole`: `q` is a shape evaluated by series as a whole (else
/// aggregations inside it are).
fn assert_by_series_equals_step_by_step(q: &str, whole: bool) {
    let data = awkward_series();
    let e = parse(q).expect(q);
    let bits = |s: &[Series]| -> Vec<(Labels, Vec<(i64, u64)>)> {
        s.iter()
            .map(|s| {
                (
                    (*s.labels).clone(),
                    s.samples.iter().map(|(t, v)| (*t, v.to_bits())).collect(),
                )
            })
            .collect()
    };
    for closed in [false, true] {
        for (start, end, step) in [
            (0, 3_600_000, 60_000),
            (-600_000, 4_000_000, 7_000),
            (1_000_000, 1_000_000, 1),
            (0, 3_600_000, 900_000),
        ] {
            let mut engine = Engine::new(&data);
            engine.closed_ranges = closed;
            engine.threads = 3;
            if whole {
                assert!(engine.range_by_series(&e, &[0]).is_some(), "{q} is evaluated by series");
            } else {
                assert!(engine.range_by_series(&e, &[0]).is_none(), "{q} is not a whole shape");
                engine.materialize(&e, &[0]);
                assert!(!engine.by_series.is_empty(), "{q} has aggregations evaluated by series");
                engine.by_series.clear();
            }
            let fast = engine.range(&e, start, end, step).expect(q);
            let slow = engine.range_step_by_step(&e, start, end, step).expect(q);
            assert!(!slow.is_empty(), "{q}: no data");
            assert_eq!(
                bits(&fast),
                bits(&slow),
                "{q} closed={closed} [{start}, {end}] step {step}"
            );
        }
    }
}

#[test]
fn by_series_equals_step_by_step() {
    let queries = [
        "a_total",
        "b offset 2m",
        "rate(a_total[5m])",
        "sum(rate(a_total[5m]))",
        "sum by (region) (rate(a_total[1m]))",
        "sum without (instance) (increase(a_total[10m] offset 3m))",
        "avg by (region) (b)",
        "avg(delta(b[5m]))",
        "min by (instance) (irate(a_total[2m]))",
        "max(idelta(b[2m]))",
        "count by (region) (deriv(b[5m]))",
        "group by (region) (changes(b[5m]))",
        "sum(resets(a_total[10m]))",
        "sum by (region) (avg_over_time(b[5m]))",
        "max without () (sum_over_time(b[3m]))",
        "count(count_over_time({__name__=~\"a_total|b\"}[5m]))",
        "min_over_time(b[5m])",
        "max by (region) (max_over_time(a_total[5m]))",
        "stddev_over_time(a_total[5m])",
        "sum(stdvar_over_time(b[5m]))",
        "last_over_time({__name__=~\"a_total|b\", region=\"r2\"}[5m])",
        "sum by (region) (present_over_time(a_total[5m]))",
        "sum({__name__=~\"a_total|b\"})",
        "(sum by (region) ((rate(a_total[5m]))))",
    ];
    for q in queries {
        assert_by_series_equals_step_by_step(q, true);
    }
}

#[test]
fn aggregations_inside_larger_queries_evaluated_by_series_equal_step_by_step() {
    let queries = [
        "sum(rate(a_total[5m])) / sum(rate(a_total[10m]))",
        "sum by (region) (rate(a_total[5m])) / on (region) group_left count by (region) (b)",
        "sum(sum by (instance) (rate(a_total[5m])))",
        "avg(max by (instance) (b))",
        "topk(2, sum by (instance) (b))",
        "quantile(0.5, sum by (instance) (b))",
        "label_replace(sum by (region) (b), \"r\", \"$1\", \"region\", \"(.*)\")",
        "-sum(b)",
        "sum by (region) (b) > 1000",
        "sum(rate(a_total[5m])) and on () count(b) > 3",
        "sum by (region) (b) - on (region) sum by (region) (b offset 5m)",
        "avg_over_time(sum(b)[10m:1m]) + sum(b)",
        "abs(sum without (instance) (delta(b[5m])))",
        "rate(a_total[5m]) / on (region) group_left sum by (region) (rate(a_total[5m]))",
    ];
    for q in queries {
        assert_by_series_equals_step_by_step(q, false);
    }
}

#[test]
fn series_that_collide_without_their_names_are_left_to_the_step_evaluator() {
    let data = vec![
        series("x", &[("i", "1")], &[(0, 1.0), (60_000, 2.0)]),
        series("y", &[("i", "1")], &[(0, 1.0), (60_000, 2.0)]),
    ];
    let e = parse("rate({i=\"1\"}[5m])").expect("parse");
    let mut engine = Engine::new(&data);
    assert!(engine.range_by_series(&e, &[60_000]).is_none());
    assert_eq!(
        engine.range(&e, 60_000, 60_000, 1).expect_err("collision"),
        "vector cannot contain metrics with the same labelset"
    );
    // Not a shape evaluated by series: a binary operation, a parameter, `@`.
    for q in ["rate(x[5m]) * 2", "topk(1, x)", "x @ 60", "sum by (__name__) (x)"] {
        assert!(engine.range_by_series(&parse(q).expect(q), &[0]).is_none(), "{q}");
    }
}

#[test]
fn avg_by_series_falls_back_to_the_incremental_mean_when_the_sum_overflows() {
    let samples: Vec<(i64, f64)> = (0..10).map(|i| (i * 60_000, 1e308)).collect();
    let data: Vec<Series> = (0..4)
        .map(|i| series("h", &[("i", &i.to_string())], &samples))
        .collect();
    let e = parse("avg(h)").expect("parse");
    let mut engine = Engine::new(&data);
    let fast = engine.range(&e, 0, 540_000, 60_000).expect("range");
    let slow = engine.range_step_by_step(&e, 0, 540_000, 60_000).expect("steps");
    assert_eq!(fast, slow);
    assert!(
        fast[0].samples.iter().all(|(_, v)| (*v - 1e308).abs() < 1e295),
        "{fast:?}"
    );
}

#[test]
fn grids_that_would_not_fit_the_memory_budget_are_left_to_the_step_evaluator() {
    // 20,000 short-lived series, one group each, over 5,000 steps: the step evaluator holds the
    // few samples present; a grid would hold every group at every step (100 M cells, 4.4 GB for
    // sum at 44 bytes a cell).
    let data: Vec<Series> = (0..20_000)
        .map(|i: i64| series("pod_cpu", &[("pod", &i.to_string())], &[(i * 1_000, 1.0)]))
        .collect();
    let steps: Vec<i64> = (0..5_000).map(|k| k * 1_000).collect();
    let engine = Engine::new(&data);
    for q in ["sum by (pod) (pod_cpu)", "pod_cpu"] {
        assert!(engine.range_by_series(&parse(q).expect(q), &steps).is_none(), "{q}");
    }
    // Small enough: evaluated by series.
    assert!(engine
        .range_by_series(&parse("sum(pod_cpu)").expect("sum"), &steps)
        .is_some());
    // Two aggregations sharing one budget: 3,000 groups × 5,000 steps of sum (660 MB) fit alone,
    // not twice, so one of them is left to the step evaluator.
    let half: Vec<Series> = data[..3_000].to_vec();
    let mut engine = Engine::new(&half);
    let e = parse("sum by (pod) (pod_cpu) / sum by (pod) (pod_cpu)").expect("ratio");
    assert!(engine
        .range_by_series(&parse("sum by (pod) (pod_cpu)").expect("one"), &steps)
        .is_some());
    engine.materialize(&e, &steps);
    assert_eq!(engine.by_series.len(), 1);
}
