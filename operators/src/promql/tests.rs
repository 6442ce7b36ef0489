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
