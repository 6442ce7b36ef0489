use super::*;

const STEP: u64 = 864_000_000_000; // 100 points a day

/// Deterministic standard normal noise (LCG + Box–Muller).
struct Noise(u64);

impl Noise {
    fn uniform(&mut self) -> f64 {
        self.0 = self
            .0
            .wrapping_mul(6_364_136_223_846_793_005)
            .wrapping_add(1_442_695_040_888_963_407);
        ((self.0 >> 11) as f64 + 0.5) / (1u64 << 53) as f64
    }
    fn normal(&mut self) -> f64 {
        let (u, v) = (self.uniform(), self.uniform());
        (-2.0 * u.ln()).sqrt() * (2.0 * std::f64::consts::PI * v).cos()
    }
}

/// 1,000 points of a daily sine (amplitude 10 around 50) with unit noise; `anomaly` changes the
/// points from 700 on.
fn series(anomaly: impl Fn(usize, f64, f64) -> f64) -> Vec<(u64, f64)> {
    let mut n = Noise(42);
    (0..1000)
        .map(|i| {
            let season = 10.0 * (2.0 * std::f64::consts::PI * i as f64 / 100.0).sin();
            let noise = n.normal();
            let v = if i >= 700 {
                anomaly(i, season, noise)
            } else {
                50.0 + season + noise
            };
            (1_700_000_000_000_000_000 / STEP * STEP + i as u64 * STEP, v)
        })
        .collect()
}

/// The default detectors (with their isolation forest) over `points`.
fn run(points: &[(u64, f64)]) -> (Vec<PointScore>, Vec<Episode>) {
    run_with(&AnomalyConfig::default(), points)
}

fn run_with(config: &AnomalyConfig, points: &[(u64, f64)]) -> (Vec<PointScore>, Vec<Episode>) {
    let c = config.clone();
    let mut d = SeriesDetector::new(&c);
    let mut forest = forest::ForestState::default();
    let mut scores = Vec::new();
    let mut episodes = Vec::new();
    for (t, v) in points {
        let (s, e) = d.update_with_forest(&c, *t, *v, Some(&mut forest));
        scores.push(s);
        episodes.extend(e);
    }
    episodes.extend(d.open_episode().cloned());
    (scores, episodes)
}

fn first_alarm(scores: &[PointScore]) -> Option<usize> {
    let th = AnomalyConfig::default().threshold;
    scores.iter().position(|s| s.score >= th)
}

#[test]
fn clean_seasonal_noise_raises_nothing() {
    let (scores, episodes) = run(&series(|_, s, n| 50.0 + s + n));
    assert!(episodes.is_empty(), "{episodes:?}");
    assert!(scores[..100].iter().all(|s| s.learning && s.score == 0.0));
    let max = scores.iter().map(|s| s.score).fold(0.0, f64::max);
    assert!(max < AnomalyConfig::default().threshold, "max score {max}");
}

#[test]
fn a_spike_is_found_at_once_by_several_detectors() {
    // +60: 8.5 window deviations, far beyond its hour of the day too.
    let (scores, episodes) = run(&series(|i, s, n| 50.0 + s + n + if i == 700 { 60.0 } else { 0.0 }));
    assert_eq!(first_alarm(&scores), Some(700));
    assert_eq!(episodes.len(), 1, "{episodes:?}");
    let e = &episodes[0];
    assert!(e.detectors.contains(&"three_sigma".to_string()), "{:?}", e.detectors);
    assert!(e.detectors.contains(&"seasonal".to_string()));
    assert!((e.value - e.expected).abs() > e.band);
    assert_eq!(e.baseline.count, 700);
}

#[test]
fn a_level_shift_is_found() {
    let (scores, _) = run(&series(|_, s, n| 75.0 + s + n));
    assert_eq!(first_alarm(&scores), Some(700));
}

#[test]
fn a_variance_change_is_found_within_ten_points() {
    let (scores, _) = run(&series(|_, s, n| 50.0 + s + 8.0 * n));
    let at = first_alarm(&scores).expect("found");
    assert!((700..710).contains(&at), "{at}");
}

#[test]
fn broken_seasonality_is_found_by_the_seasonal_detector() {
    // From 700 the daily cycle runs backwards: the values stay in their usual range. Only the
    // seasonal profile sees it, so this takes the maximum of the detectors (`mean_ensemble:
    // false`): the default mean of three scores a finding by one detector alone at most 1/3.
    let c = AnomalyConfig {
        mean_ensemble: false,
        ..AnomalyConfig::default()
    };
    let (scores, _) = run_with(&c, &series(|_, s, n| 50.0 - s + n));
    let at = scores.iter().position(|s| s.score >= c.threshold).expect("found");
    assert!((700..716).contains(&at), "{at}");
    let th = c.threshold;
    assert!(scores[at].detectors[3] >= th, "{:?}", scores[at].detectors);
    assert!(
        scores[at].detectors[0] < th,
        "the values alone look normal: {:?}",
        scores[at].detectors
    );
}

#[test]
fn a_snapshot_restored_mid_series_gives_the_same_scores() {
    let points = series(|i, s, n| 50.0 + s + n + if i == 800 { 30.0 } else { 0.0 });
    let c = AnomalyConfig::default();
    let mut d = SeriesDetector::new(&c);
    let whole: Vec<PointScore> = points.iter().map(|(t, v)| d.update(&c, *t, *v).0).collect();
    let mut d = SeriesDetector::new(&c);
    let mut scores = Vec::new();
    for (t, v) in &points[..500] {
        scores.push(d.update(&c, *t, *v).0);
    }
    let json = serde_json::to_string(&d).expect("snapshot");
    let mut d: SeriesDetector = serde_json::from_str(&json).expect("restore");
    for (t, v) in &points[500..] {
        scores.push(d.update(&c, *t, *v).0);
    }
    assert_eq!(scores, whole);
    assert!(d.state_bytes() <= 4096, "{} bytes", d.state_bytes());
}

/// A snapshot's series are keyed anew from their labels when restored, so one taken by a
/// build whose series hash differed goes on scoring the same series.
#[test]
fn restored_series_are_keyed_by_their_labels() {
    use crate::prom::{labels_of, Sample};
    use operator::{AnomalyOperator, AnomalyOperatorConfig};
    let config = || AnomalyOperatorConfig {
        series: vec!["rtt_ms".into()],
        ..AnomalyOperatorConfig::default()
    };
    let mut op = AnomalyOperator::new(config()).expect("config");
    let eu = labels_of([("__name__", "rtt_ms"), ("region", "eu")]);
    let (mut scores, mut records) = (Vec::new(), Vec::new());
    op.process(&[Sample::new(eu.clone(), 50.0, 1000)], &mut scores, &mut records);
    let mut snap = serde_json::to_value(op.snapshot()).expect("serialize");
    // Another build's hash for the same series.
    snap["series"][0][0] = serde_json::json!(12345);
    let mut restored = AnomalyOperator::new(config()).expect("config");
    restored.restore(serde_json::from_value(snap).expect("deserialize"));
    let mut fresh = AnomalyOperator::new(config()).expect("config");
    fresh.restore(serde_json::from_value(serde_json::to_value(op.snapshot()).expect("json")).expect("state"));
    assert_eq!(
        serde_json::to_value(restored.snapshot()).expect("json"),
        serde_json::to_value(fresh.snapshot()).expect("json")
    );
    assert_eq!(
        serde_json::to_value(restored.snapshot()).expect("json")["series"][0][0],
        serde_json::json!(Sample::new(eu, 0.0, 0).series_hash())
    );
}

#[test]
fn the_operator_scores_matching_series_and_emits_one_record_per_episode() {
    use crate::prom::{labels_of, Sample};
    use operator::{AnomalyOperator, AnomalyOperatorConfig};
    let mut op = AnomalyOperator::new(AnomalyOperatorConfig {
        series: vec![r#"rtt_ms{region="eu"}"#.into()],
        ..AnomalyOperatorConfig::default()
    })
    .expect("config");
    let points = series(|i, s, n| 50.0 + s + n + if (700..705).contains(&i) { 80.0 } else { 0.0 });
    let eu = labels_of([("__name__", "rtt_ms"), ("region", "eu")]);
    let us = labels_of([("__name__", "rtt_ms"), ("region", "us")]);
    let (mut scores, mut records) = (Vec::new(), Vec::new());
    for (t, v) in &points {
        let ms = i64::try_from(t / 1_000_000).expect("ms");
        op.process(
            &[Sample::new(eu.clone(), *v, ms), Sample::new(us.clone(), *v, ms)],
            &mut scores,
            &mut records,
        );
    }
    // Only eu is selected; scores after learning, one per point.
    assert_eq!(op.tracked(), 1);
    assert_eq!(scores.len(), 900);
    assert!(scores
        .iter()
        .all(|s| s.name() == "dwcp_anomaly_score" && s.label("metric") == Some("rtt_ms")));
    // One episode: published when it opens, at its first point (with that point as the peak so
    // far), and when it closes 150 points after the burst.
    assert_eq!(records.len(), 2, "{records:?}");
    let (opened, r) = (&records[0], &records[1]);
    assert!(!opened.closed);
    assert_eq!(opened.episode.start, points[700].0);
    assert_eq!(
        (opened.episode.end, opened.episode.peak_time),
        (points[700].0, points[700].0)
    );
    assert_eq!(r.series(), r#"rtt_ms{region="eu"}"#);
    assert_eq!(r.episode.start, points[700].0);
    assert!(r.episode.end >= points[704].0);
    assert!(r.episode.peak_score >= opened.episode.peak_score);
    assert!(r.episode.peak_score >= 0.375);
    assert!(r.closed);
    // Snapshot and restore carry the state.
    let state = op.snapshot();
    assert_eq!(state.len(), 1);
}

/// Each detector alone: finds a spike and a level shift, and raises nothing on clean seasonal
/// noise (the seasonal detector alone is tested on broken seasonality above).
#[test]
fn each_detector_alone_finds_spikes_and_shifts_and_stays_quiet_on_clean_data() {
    for (k, name) in DETECTORS.iter().enumerate() {
        let c = AnomalyConfig {
            enabled: Enabled::only(k),
            // The forest trains on points 100 to 356 and takes over at 420.
            forest_install_points: 64,
            ..AnomalyConfig::default()
        };
        let score = |points: &[(u64, f64)]| -> Vec<f64> {
            let mut d = SeriesDetector::new(&c);
            let mut forest = forest::ForestState::default();
            points
                .iter()
                .map(|(t, v)| d.update_with_forest(&c, *t, *v, Some(&mut forest)).0.score)
                .collect()
        };
        let clean = score(&series(|_, s, n| 50.0 + s + n));
        let max = clean.iter().copied().fold(0.0, f64::max);
        assert!(max < c.threshold, "{name} on clean data: {max}");
        let spike = score(&series(|i, s, n| 50.0 + s + n + if i == 700 { 90.0 } else { 0.0 }));
        assert!(spike[700] >= c.threshold, "{name} misses the spike: {}", spike[700]);
        let shift = score(&series(|_, s, n| 140.0 + s + n));
        let at = shift.iter().position(|x| *x >= c.threshold);
        assert_eq!(at, Some(700), "{name} on the level shift");
    }
}

/// Hourly points over five weeks: a daily cycle, busy weekdays and quiet weekends, unit noise;
/// `weekend_busy`: the fifth week's Saturday is as busy as a weekday.
fn weekly(weekend_busy: bool) -> Vec<(u64, f64)> {
    let mut n = Noise(7);
    let hour = 3_600_000_000_000u64;
    // A Monday 00:00 UTC.
    let monday = 1_700_438_400_000_000_000u64;
    (0..24 * 35)
        .map(|i: u64| {
            let (day, h) = (i / 24 % 7, i % 24);
            let daily = 10.0 * (2.0 * std::f64::consts::PI * h as f64 / 24.0).sin();
            let busy = day < 5 || (weekend_busy && i / 24 == 33);
            let level = if busy { 100.0 } else { 40.0 };
            (monday + i * hour, level + daily + n.normal())
        })
        .collect()
}

#[test]
fn holt_winters_learns_the_week_and_finds_a_busy_weekend() {
    let c = AnomalyConfig {
        enabled: Enabled::only(4),
        threshold: 0.375,
        ..AnomalyConfig::default()
    };
    let score = |points: &[(u64, f64)]| -> Vec<f64> {
        let mut d = SeriesDetector::new(&c);
        points.iter().map(|(t, v)| d.update(&c, *t, *v).0.score).collect()
    };
    // Once the week has two weeks of history (from day 14 on), the weekly cycle is expected.
    let clean = score(&weekly(false));
    let late = clean[24 * 15..].iter().copied().fold(0.0, f64::max);
    assert!(late < c.threshold, "clean weeks after learning: {late}");
    // The fifth week's Saturday (day 33) at weekday level is found within its first hours.
    let busy = score(&weekly(true));
    let first = busy[24 * 15..]
        .iter()
        .position(|s| *s >= c.threshold)
        .map(|i| i + 24 * 15);
    assert!(
        first.is_some_and(|i| (24 * 33..24 * 33 + 3).contains(&i)),
        "busy Saturday: first alarm at {first:?}"
    );
    // The daily profile alone mixes Saturdays with weekdays: the busy Saturday looks normal.
    let c3 = AnomalyConfig {
        enabled: Enabled::only(3),
        ..AnomalyConfig::default()
    };
    let mut d = SeriesDetector::new(&c3);
    let seasonal: Vec<f64> = weekly(true)
        .iter()
        .map(|(t, v)| d.update(&c3, *t, *v).0.score)
        .collect();
    let saturday = seasonal[24 * 33..24 * 34].iter().copied().fold(0.0, f64::max);
    assert!(
        saturday < c3.threshold,
        "the daily profile on the busy Saturday: {saturday}"
    );
}

#[test]
fn groups_of_selectors_have_their_own_settings() {
    use crate::prom::{labels_of, Sample};
    use operator::{AnomalyOperator, AnomalyOperatorConfig};
    let config: AnomalyOperatorConfig = serde_yaml::from_str(
        r#"
series: ['rtt_ms']
detectors: {learning_points: 100}
groups:
  - series: ['rtt_ms{region="eu"}']
    detectors: {learning_points: 10, enabled: {holt_winters: true}}
"#,
    )
    .expect("yaml");
    let configs = config.resolve().expect("resolve").configs;
    // The group's overrides over the shared settings, `enabled` field by field.
    assert_eq!(configs[0].learning_points, 10);
    assert_eq!(configs[0].window, AnomalyConfig::default().window);
    assert!(configs[0].enabled.holt_winters && configs[0].enabled.three_sigma);
    assert_eq!(configs[1].learning_points, 100);
    assert!(!configs[1].enabled.holt_winters);
    let mut op = AnomalyOperator::new(config).expect("config");
    let eu = labels_of([("__name__", "rtt_ms"), ("region", "eu")]);
    let us = labels_of([("__name__", "rtt_ms"), ("region", "us")]);
    let (mut scores, mut records) = (Vec::new(), Vec::new());
    for (t, v) in series(|_, s, n| 50.0 + s + n).iter().take(200) {
        let ms = i64::try_from(t / 1_000_000).expect("ms");
        op.process(
            &[Sample::new(eu.clone(), *v, ms), Sample::new(us.clone(), *v, ms)],
            &mut scores,
            &mut records,
        );
    }
    // eu (the group) scores after 10 points, us (the shared settings) after 100.
    let count = |region: &str| scores.iter().filter(|s| s.label("region") == Some(region)).count();
    assert_eq!((count("eu"), count("us")), (190, 100));

    let bad: AnomalyOperatorConfig =
        serde_yaml::from_str("groups:\n  - series: ['x']\n    detectors: {window: 10, bogus: 1}\n").expect("yaml");
    let e = AnomalyOperator::new(bad).expect_err("unknown field");
    assert!(e.starts_with("groups[0].detectors: unknown field `bogus`"), "{e}");
    let bad: AnomalyOperatorConfig = serde_yaml::from_str("groups:\n  - series: ['x{']\n").expect("yaml");
    let e = AnomalyOperator::new(bad).expect_err("selector");
    assert!(e.starts_with("groups[0].series[0]: "), "{e}");
}

#[test]
fn the_forest_isolates_outliers_in_few_splits() {
    // 2,000 points of a standard normal cluster in five dimensions, and three far from it (a
    // spike moves several features of a point at once).
    let mut n = Noise(3);
    let mut rows: Vec<forest::Features> = (0..2000).map(|_| std::array::from_fn(|_| n.normal() as f32)).collect();
    rows.extend([
        [6.0, 6.0, 6.0, 0.0, 0.0],
        [-7.0, -7.0, 0.0, 0.0, 0.0],
        [30.0, 0.0, 0.0, 0.0, 0.0],
    ]);
    let flat: Vec<f32> = rows.iter().flatten().copied().collect();
    let data = ndarray::Array2::from_shape_vec((rows.len(), forest::FEATURES), flat).expect("matrix");
    let f = forest::Forest::train(&data, 100, 256, 1);
    let mut inliers: Vec<f64> = rows[..2000].iter().map(|r| f.score(r)).collect();
    inliers.sort_by(f64::total_cmp);
    let mean = inliers.iter().sum::<f64>() / 2000.0;
    assert!(mean < 0.46, "inliers average {mean}");
    assert!(inliers[1980] < 0.6, "inliers' 99th percentile {}", inliers[1980]);
    // Outliers in several features stand out; one far out in a single feature less so (splits
    // on the other four dilute it: the known weakness of axis-aligned isolation).
    let outliers: Vec<f64> = rows[2000..].iter().map(|r| f.score(r)).collect();
    assert!(outliers[0] > 0.75 && outliers[1] > 0.7, "{outliers:?}");
    assert!(outliers[2] > 0.65, "{outliers:?}");
    // The same seed, the same forest.
    assert_eq!(forest::Forest::train(&data, 100, 256, 1), f);
}

#[test]
fn a_snapshot_taken_while_the_forest_trains_restores_to_the_same_scores() {
    let points = series(|i, s, n| 50.0 + s + n + if i == 800 { 30.0 } else { 0.0 });
    let c = AnomalyConfig {
        enabled: Enabled::all(),
        forest_retrain_points: 200,
        forest_install_points: 100,
        ..AnomalyConfig::default()
    };
    let run = |from: usize, d: &mut SeriesDetector, f: &mut forest::ForestState| -> Vec<PointScore> {
        points[from..]
            .iter()
            .map(|(t, v)| d.update_with_forest(&c, *t, *v, Some(f)).0)
            .collect()
    };
    let (mut d, mut f) = (SeriesDetector::new(&c), forest::ForestState::default());
    let whole = run(0, &mut d, &mut f);
    assert!(f.trainings() >= 3, "{} trainings", f.trainings());
    // Trainings start at points 357, 557, 757 ...: at 600 one is under way.
    let (mut d, mut f) = (SeriesDetector::new(&c), forest::ForestState::default());
    let mut scores: Vec<PointScore> = points[..600]
        .iter()
        .map(|(t, v)| d.update_with_forest(&c, *t, *v, Some(&mut f)).0)
        .collect();
    let snapshot = (
        serde_json::to_string(&d).expect("d"),
        serde_json::to_string(&f).expect("f"),
    );
    assert!(snapshot.1.contains("\"pending\":{"), "a training is pending");
    drop((d, f));
    let mut d: SeriesDetector = serde_json::from_str(&snapshot.0).expect("restore d");
    let mut f: forest::ForestState = serde_json::from_str(&snapshot.1).expect("restore f");
    scores.extend(
        points[600..]
            .iter()
            .map(|(t, v)| d.update_with_forest(&c, *t, *v, Some(&mut f)).0),
    );
    let differ = scores.iter().zip(&whole).position(|(a, b)| a != b);
    assert_eq!(differ, None, "{:?}", differ.map(|i| (&scores[i], &whole[i])));
    assert!(
        whole[800].detectors[5] > 0.0,
        "the forest scores the spike: {:?}",
        whole[800].detectors
    );
}

#[test]
fn a_later_hour_than_the_forest_trained_on_is_not_an_outlier() {
    // A busy group's buffer spans minutes: every vector at hour 10.0 to 10.1. A point like them
    // hours later is ordinary; one far out in the other features is not.
    let mut n = Noise(11);
    let rows: Vec<f32> = (0..2000)
        .flat_map(|i| {
            let f: [f32; 4] = std::array::from_fn(|_| n.normal() as f32);
            [f[0], f[1], f[2], f[3].abs(), 10.0 + i as f32 / 20_000.0]
        })
        .collect();
    let data = ndarray::Array2::from_shape_vec((2000, forest::FEATURES), rows).expect("matrix");
    let f = forest::Forest::train(&data, 100, 256, 5);
    let later = f.score(&[0.1, -0.2, 0.0, 1.0, 15.0]);
    assert!(later < 0.55, "an ordinary point at a later hour: {later}");
    let spike = f.score(&[12.0, 12.0, 12.0, 1.0, 15.0]);
    assert!(spike > 0.7, "a spike at a later hour: {spike}");
}

#[test]
fn a_spike_every_day_at_the_same_hour_is_found_once_and_one_at_another_hour_is_found() {
    // A nightly job: the value at 90 (give or take 0.5) at about the same time every day from
    // day 2 (drifting by a point, 14 minutes, either way; the series peaks at 60 there), and
    // one such spike at another hour on day 8.
    let spikes: Vec<usize> = (2..10).map(|day| day * 100 + 30 + day % 3 - 1).collect();
    let odd = 875;
    let mut n = Noise(7);
    let points: Vec<(u64, f64)> = (0..1000)
        .map(|i| {
            let season = 10.0 * (2.0 * std::f64::consts::PI * i as f64 / 100.0).sin();
            let noise = n.normal();
            let v = if spikes.contains(&i) || i == odd {
                90.0 + 0.5 * noise
            } else {
                50.0 + season + noise
            };
            (1_700_000_000_000_000_000 / STEP * STEP + i as u64 * STEP, v)
        })
        .collect();
    let c = AnomalyConfig::default();
    let (scores, _) = run_with(&c, &points);
    let at = |i: usize| scores[i].score;
    assert!(
        at(spikes[0]) >= c.threshold,
        "the first night's spike: {:?}",
        scores[spikes[0]]
    );
    for &i in &spikes[1..] {
        assert!(
            at(i) < c.threshold && at(i) <= c.recurrence_factor,
            "the same spike the next night, point {i}: {:?}",
            scores[i]
        );
    }
    assert!(at(odd) >= c.threshold, "the spike at another hour: {:?}", scores[odd]);
    // Without the comparison with the day before, the second night's spike is an anomaly
    // too (the daily profile has seen one spike in its bin, not enough to expect it).
    let off = AnomalyConfig {
        recurrence_hours: 0.0,
        ..c.clone()
    };
    let (scores, _) = run_with(&off, &points);
    assert!(scores[spikes[1]].score >= c.threshold, "{:?}", scores[spikes[1]]);
}
