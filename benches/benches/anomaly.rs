//! Anomaly scoring throughput and state: every detector enabled (three-sigma, moving average,
//! EWMA, seasonal, Holt-Winters), 10,000 series × 200 points after learning, one core; bytes of
//! state per series. Then with the group's isolation forest, and one forest training alone.
//!
//! cargo bench -p dwcp-benches --bench anomaly

use std::time::Instant;

use dwcp_operators::anomaly::forest::{Forest, ForestState, FEATURES};
use dwcp_operators::anomaly::{AnomalyConfig, SeriesDetector};

fn main() {
    if std::env::args().any(|a| a == "--list" || a == "--test") {
        return;
    }
    let config = AnomalyConfig {
        enabled: dwcp_operators::anomaly::Enabled::all(),
        ..AnomalyConfig::default()
    };
    let series = 10_000usize;
    let mut d: Vec<SeriesDetector> = (0..series).map(|_| SeriesDetector::new(&config)).collect();
    let t0 = 1_793_491_200_000_000_000u64;
    let step = 60_000_000_000u64;
    // Learning and the window filled: 300 points each.
    for k in 0..300u64 {
        for (i, s) in d.iter_mut().enumerate() {
            let v = 100.0 + (k as f64 * 0.1 + i as f64).sin() * 10.0;
            s.update(&config, t0 + k * step, v);
        }
    }
    let points = 200u64;
    let start = Instant::now();
    let mut anomalous = 0usize;
    for k in 300..300 + points {
        for (i, s) in d.iter_mut().enumerate() {
            let v = 100.0
                + (k as f64 * 0.1 + i as f64).sin() * 10.0
                + if (k + i as u64).is_multiple_of(5000) { 80.0 } else { 0.0 };
            let (score, _) = s.update(&config, t0 + k * step, v);
            anomalous += usize::from(score.score >= config.threshold);
        }
    }
    let el = start.elapsed().as_secs_f64();
    let n = series as f64 * points as f64;
    println!(
        "anomaly scoring, all five detectors but the forest: {:.0} points/s on one core ({:.2} µs per point), {anomalous} anomalous points; state {} bytes per series",
        n / el,
        el * 1e6 / n,
        d[0].state_bytes()
    );

    // The same with the group's isolation forest (one for all 10,000 series): scoring, and the
    // trainings it starts (every `forest_retrain_points` points, on their own thread).
    let mut forest = ForestState::default();
    forest.series = series as u64;
    // Until the first forest is in use: 64 points per series after its training started.
    let mut k = 300u64;
    while !forest.trained() {
        for (i, s) in d.iter_mut().enumerate() {
            let v = 100.0 + (k as f64 * 0.1 + i as f64).sin() * 10.0;
            s.update_with_forest(&config, t0 + k * step, v, Some(&mut forest));
        }
        k += 1;
    }
    let from = k;
    let (trainings, waits) = (forest.trainings(), forest.waits);
    let start = Instant::now();
    let mut anomalous = 0usize;
    for k in from..from + points {
        for (i, s) in d.iter_mut().enumerate() {
            let v = 100.0
                + (k as f64 * 0.1 + i as f64).sin() * 10.0
                + if (k + i as u64).is_multiple_of(5000) { 80.0 } else { 0.0 };
            let (score, _) = s.update_with_forest(&config, t0 + k * step, v, Some(&mut forest));
            anomalous += usize::from(score.score >= config.threshold);
        }
    }
    let el = start.elapsed().as_secs_f64();
    println!(
        "anomaly scoring with the isolation forest: {:.0} points/s ({:.2} µs per point, trainings on another thread), {anomalous} anomalous points; {} trainings in the run, {} waited for; forest and buffer {} KiB for the group",
        n / el,
        el * 1e6 / n,
        forest.trainings() - trainings,
        forest.waits - waits,
        forest.state_bytes() / 1024
    );
    // One training alone: 100 trees of 256 from 4,096 vectors.
    let rows: Vec<f32> = (0..4096 * FEATURES)
        .map(|i| ((i * 7919) % 1000) as f32 / 100.0)
        .collect();
    let data = ndarray::Array2::from_shape_vec((4096, FEATURES), rows).expect("matrix");
    let mut times = Vec::new();
    for seed in 0..5 {
        let start = Instant::now();
        let f = Forest::train(&data, config.forest_trees, config.forest_sample, seed);
        times.push(start.elapsed().as_secs_f64() * 1000.0);
        assert!(f.nodes() > 0);
    }
    times.sort_by(f64::total_cmp);
    println!(
        "one forest training ({} trees of {}): median {:.1} ms",
        config.forest_trees, config.forest_sample, times[2]
    );
}
